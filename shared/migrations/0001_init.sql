-- Ebb's own state. Postgres is the source of truth; Redis only carries task ids
-- that can be rebuilt from `ebb_batches`.

-- One row per sync run (scheduled, manual or DLQ replay).
CREATE TABLE ebb_runs (
    id                BIGSERIAL PRIMARY KEY,
    sync_name         TEXT        NOT NULL,
    destination       TEXT        NOT NULL,
    kind              TEXT        NOT NULL CHECK (kind IN ('sync', 'replay')),
    trigger           TEXT        NOT NULL,
    mode              TEXT        NOT NULL,
    full_resync       BOOLEAN     NOT NULL DEFAULT false,
    state             TEXT        NOT NULL CHECK (state IN ('planning', 'running', 'succeeded', 'failed')),
    -- what the plan found
    planned_added     BIGINT      NOT NULL DEFAULT 0,
    planned_changed   BIGINT      NOT NULL DEFAULT 0,
    planned_removed   BIGINT      NOT NULL DEFAULT 0,
    unchanged         BIGINT      NOT NULL DEFAULT 0,
    skipped_by_mode   BIGINT      NOT NULL DEFAULT 0,
    rejected_at_plan  BIGINT      NOT NULL DEFAULT 0,
    to_send           BIGINT      NOT NULL DEFAULT 0,
    batches_total     INTEGER     NOT NULL DEFAULT 0,
    -- what the workers settled
    batches_settled   INTEGER     NOT NULL DEFAULT 0,
    delivered         BIGINT      NOT NULL DEFAULT 0,
    rejected          BIGINT      NOT NULL DEFAULT 0,
    failed            BIGINT      NOT NULL DEFAULT 0,
    superseded        BIGINT      NOT NULL DEFAULT 0,
    error             TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    planned_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    heartbeat_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- At most one active run per sync: this is the lock that stops two planners
-- (or a re-run) from planning the same sync twice.
CREATE UNIQUE INDEX ebb_runs_one_active_per_sync ON ebb_runs (sync_name) WHERE state IN ('planning', 'running');
CREATE INDEX ebb_runs_by_sync ON ebb_runs (sync_name, id DESC);

-- The unit of work on the queue. A batch is settled exactly once, in the same
-- transaction that records its outcomes.
CREATE TABLE ebb_batches (
    run_id        BIGINT      NOT NULL REFERENCES ebb_runs (id) ON DELETE CASCADE,
    batch_no      INTEGER     NOT NULL,
    record_count  INTEGER     NOT NULL,
    state         TEXT        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'settled')),
    deliveries    INTEGER     NOT NULL DEFAULT 0,
    settled_at    TIMESTAMPTZ,
    PRIMARY KEY (run_id, batch_no)
);

-- The records a run has to send, with their payloads, so a worker needs nothing
-- but (run_id, batch_no) from the queue. Rows are deleted when the run ends.
CREATE TABLE ebb_run_records (
    run_id           BIGINT  NOT NULL REFERENCES ebb_runs (id) ON DELETE CASCADE,
    batch_no         INTEGER NOT NULL,
    record_key       TEXT    NOT NULL,
    op               TEXT    NOT NULL CHECK (op IN ('upsert', 'delete')),
    content_hash     BYTEA,
    -- the run whose snapshot produced this version (differs from run_id for replays)
    snapshot_run_id  BIGINT  NOT NULL,
    payload          JSONB,
    outcome          TEXT CHECK (outcome IN ('delivered', 'rejected', 'failed', 'superseded')),
    PRIMARY KEY (run_id, batch_no, record_key)
);

-- What each destination has acknowledged: the diff baseline.
CREATE TABLE ebb_ledger (
    sync_name         TEXT        NOT NULL,
    record_key        TEXT        NOT NULL,
    content_hash      BYTEA       NOT NULL,
    destination_id    TEXT,
    snapshot_run_id   BIGINT      NOT NULL,
    delivered_run_id  BIGINT      NOT NULL,
    delivered_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sync_name, record_key)
);

-- Dead-letter queue: records the planner or a destination refused, or that
-- failed after retries. Never silently dropped.
CREATE TABLE ebb_dlq (
    id               BIGSERIAL PRIMARY KEY,
    sync_name        TEXT        NOT NULL,
    destination      TEXT        NOT NULL,
    stage            TEXT        NOT NULL CHECK (stage IN ('plan', 'destination')),
    kind             TEXT        NOT NULL CHECK (kind IN ('rejected', 'failed')),
    record_key       TEXT,
    op               TEXT        NOT NULL CHECK (op IN ('upsert', 'delete')),
    content_hash     BYTEA,
    snapshot_run_id  BIGINT      NOT NULL,
    first_run_id     BIGINT      NOT NULL,
    last_run_id      BIGINT      NOT NULL,
    payload          JSONB,
    reason           TEXT        NOT NULL,
    attempts         INTEGER     NOT NULL DEFAULT 1,
    status           TEXT        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'discarded', 'superseded')),
    resolution       TEXT,
    first_failed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_failed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX ebb_dlq_one_open_per_record ON ebb_dlq (sync_name, record_key)
    WHERE status = 'open' AND stage = 'destination';
CREATE INDEX ebb_dlq_open_by_sync ON ebb_dlq (sync_name, id) WHERE status = 'open';
