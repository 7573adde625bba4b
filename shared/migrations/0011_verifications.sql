-- `ebb verify`: records read back from the destination and compared with
-- what Ebb delivered. One row per verification, one per record that
-- drifted (missing, different, or extra in mirror mode).
CREATE TABLE ebb_verifications (
    id               BIGSERIAL   PRIMARY KEY,
    sync_name        TEXT        NOT NULL,
    destination      TEXT        NOT NULL,
    -- the sync's newest run when the verification started: what it checks
    run_id           BIGINT,
    trigger          TEXT        NOT NULL,
    scope            TEXT        NOT NULL CHECK (scope IN ('sample', 'all')),
    state            TEXT        NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    -- delivered records whose model row is unchanged since, read back
    checked          BIGINT      NOT NULL DEFAULT 0,
    matching         BIGINT      NOT NULL DEFAULT 0,
    missing          BIGINT      NOT NULL DEFAULT 0,
    different        BIGINT      NOT NULL DEFAULT 0,
    -- NULL when not looked for (not mirror mode, or the destination cannot list)
    extra            BIGINT,
    -- delivered records changed or gone in the model since: the next run sends them
    pending          BIGINT      NOT NULL DEFAULT 0,
    -- drifted records marked to be sent again, and the run that sends them
    resent           BIGINT      NOT NULL DEFAULT 0,
    resend_run_id    BIGINT,
    error            TEXT,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at      TIMESTAMPTZ
);
CREATE INDEX ebb_verifications_by_sync ON ebb_verifications (sync_name, id DESC);

CREATE TABLE ebb_verification_drift (
    verification_id  BIGINT      NOT NULL REFERENCES ebb_verifications (id) ON DELETE CASCADE,
    record_key       TEXT        NOT NULL,
    kind             TEXT        NOT NULL CHECK (kind IN ('missing', 'different', 'extra')),
    -- for `different`: [{field, delivered, found}]
    fields           JSONB,
    PRIMARY KEY (verification_id, record_key)
);
