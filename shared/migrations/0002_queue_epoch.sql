-- The Redis dataset a run's tasks were pushed into. Redis keeps a random
-- "epoch" id next to the queue; when it comes back without it (FLUSHALL, a
-- restart without persistence), the epoch changes and the planner re-enqueues
-- the unsettled batches of every running run from Postgres.
ALTER TABLE ebb_runs ADD COLUMN queue_epoch TEXT;
CREATE INDEX ebb_runs_running ON ebb_runs (id) WHERE state = 'running';
