-- A run whose plan crossed a sync's guardrails is held: planned, nothing on
-- the queue, until an operator approves it (then it runs) or cancels it.
-- It keeps its sync busy, so no newer run plans around it.
ALTER TABLE ebb_runs DROP CONSTRAINT ebb_runs_state_check;
ALTER TABLE ebb_runs ADD CONSTRAINT ebb_runs_state_check
    CHECK (state IN ('planning', 'held', 'running', 'succeeded', 'failed', 'cancelled'));
DROP INDEX ebb_runs_one_active_per_sync;
CREATE UNIQUE INDEX ebb_runs_one_active_per_sync ON ebb_runs (sync_name)
    WHERE state IN ('planning', 'held', 'running');
