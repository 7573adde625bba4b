-- Alerts: an incident per alert, sync and kind, opened once and resolved
-- once; each opening and resolution queues one message, delivered with
-- retries by `ebb serve` (the outbox), so a slow or failing receiver never
-- holds up a run and a restart neither loses nor repeats a message.
CREATE TABLE ebb_alert_incidents (
    id           BIGSERIAL   PRIMARY KEY,
    alert        TEXT        NOT NULL,
    sync_name    TEXT        NOT NULL,
    kind         TEXT        NOT NULL CHECK (kind IN ('run_failed', 'rejections', 'not_succeeded')),
    detail       TEXT        NOT NULL,
    run_id       BIGINT,
    opened_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at  TIMESTAMPTZ,
    resolution   TEXT
);
CREATE UNIQUE INDEX ebb_alert_incidents_one_open
    ON ebb_alert_incidents (alert, sync_name, kind) WHERE resolved_at IS NULL;

CREATE TABLE ebb_alert_deliveries (
    id               BIGSERIAL   PRIMARY KEY,
    alert            TEXT        NOT NULL,
    incident_id      BIGINT      NOT NULL REFERENCES ebb_alert_incidents (id) ON DELETE CASCADE,
    status           TEXT        NOT NULL CHECK (status IN ('firing', 'resolved')),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ,
    given_up_at      TIMESTAMPTZ,
    last_error       TEXT
);
CREATE INDEX ebb_alert_deliveries_due ON ebb_alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
