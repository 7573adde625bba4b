-- The control plane (`ebb serve`'s API and the matching CLI commands).

-- A run an operator cancelled: its unsent batches are not sent, what was
-- sent stays in the ledger. Like a finished run, it frees its sync.
ALTER TABLE ebb_runs DROP CONSTRAINT ebb_runs_state_check;
ALTER TABLE ebb_runs ADD CONSTRAINT ebb_runs_state_check
    CHECK (state IN ('planning', 'running', 'succeeded', 'failed', 'cancelled'));

-- A sync's schedule paused by an operator; survives restarts.
CREATE TABLE ebb_sync_settings (
    sync_name   TEXT        PRIMARY KEY,
    paused      BOOLEAN     NOT NULL DEFAULT false,
    changed_by  TEXT        NOT NULL,
    changed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    note        TEXT
);

-- A trigger retried with the same `Idempotency-Key` returns the run the
-- first one started. Keys are kept a day.
CREATE TABLE ebb_api_idempotency (
    caller      TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    run_id      BIGINT      NOT NULL REFERENCES ebb_runs (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);

-- A run's records outlive it (without their payloads) so its per-record
-- outcomes can be read and searched by key; `ebb serve` deletes them after
-- `[state].run_records_retention_days`.
CREATE INDEX ebb_run_records_by_key ON ebb_run_records (run_id, record_key);
ALTER TABLE ebb_runs ADD COLUMN records_purged BOOLEAN NOT NULL DEFAULT false;
