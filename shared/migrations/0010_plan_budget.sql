-- What a plan read and what it expects to cost, kept with the run: the rows
-- the model had (a guardrail compares the next run's against them) and the
-- requests its batches take at the destination when every answer is a
-- success (the API-budget estimate `ebb plan` also prints).
ALTER TABLE ebb_runs ADD COLUMN rows_read BIGINT;
ALTER TABLE ebb_runs ADD COLUMN requests_planned BIGINT;

-- A run held by a guardrail opens an incident until it is approved or
-- cancelled.
ALTER TABLE ebb_alert_incidents DROP CONSTRAINT ebb_alert_incidents_kind_check;
ALTER TABLE ebb_alert_incidents ADD CONSTRAINT ebb_alert_incidents_kind_check
    CHECK (kind IN ('run_failed', 'rejections', 'not_succeeded', 'run_held'));

-- Records the plan found flapping: changed back to a version delivered by
-- one of the sync's recent runs, after another version was delivered.
ALTER TABLE ebb_runs ADD COLUMN flapping BIGINT NOT NULL DEFAULT 0;
