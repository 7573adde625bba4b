-- Create intents: for destinations whose create is not idempotent (no upsert
-- by a unique key), a worker commits an intent *before* sending a create.
-- A record that comes back with an intent and no destination id in the
-- ledger had a create whose outcome is unknown (a lost response, a crash
-- before commit): the worker looks it up by its match key before creating it
-- again. An intent is removed when its record settles delivered or rejected.
CREATE TABLE ebb_intents (
    sync_name    TEXT        NOT NULL,
    record_key   TEXT        NOT NULL,
    run_id       BIGINT      NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sync_name, record_key)
);

-- Records searched for by match key before a create, because an earlier
-- create of theirs had an unknown outcome.
ALTER TABLE ebb_runs ADD COLUMN lookups_before_create BIGINT NOT NULL DEFAULT 0;
