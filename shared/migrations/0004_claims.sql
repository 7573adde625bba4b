-- Claims: a worker delivering a batch holds a leased claim on it in
-- Postgres, renewed while it works, instead of one transaction and an
-- advisory lock held for the whole delivery (up to 30 minutes for a
-- Salesforce bulk job, which held back vacuum on the hottest tables).
-- Claim, deliver outside any transaction, settle in a short one that checks
-- the claim is still its own. A claim whose lease ran out (its worker
-- crashed or was cut off) can be taken over; a claim released on an error
-- has no token.
ALTER TABLE ebb_batches ADD COLUMN claim_token UUID;
ALTER TABLE ebb_batches ADD COLUMN claimed_by TEXT;
ALTER TABLE ebb_batches ADD COLUMN claimed_at TIMESTAMPTZ;
ALTER TABLE ebb_batches ADD COLUMN lease_expires_at TIMESTAMPTZ;

-- When the planner finished pushing a run's tasks (a run with an epoch but
-- no `enqueued_at` is still being pushed, or its planner died mid-push), and
-- when one of its batches last settled.
ALTER TABLE ebb_runs ADD COLUMN enqueued_at TIMESTAMPTZ;
ALTER TABLE ebb_runs ADD COLUMN progress_at TIMESTAMPTZ;

-- What happened to a run beside its records: lost tasks re-enqueued, batches
-- taken over from a worker that went silent, poison batches quarantined.
-- `ebb run` and `ebb runs --json` show them, so a slow run says why.
CREATE TABLE ebb_run_events (
    id       BIGSERIAL   PRIMARY KEY,
    run_id   BIGINT      NOT NULL REFERENCES ebb_runs (id) ON DELETE CASCADE,
    at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    kind     TEXT        NOT NULL CHECK (kind IN ('requeued', 'taken_over', 'claim_lost', 'quarantined')),
    message  TEXT        NOT NULL
);
CREATE INDEX ebb_run_events_by_run ON ebb_run_events (run_id, id);
