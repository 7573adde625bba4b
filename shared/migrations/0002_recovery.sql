-- The Redis dataset a run's tasks were pushed into. Redis keeps a random
-- "epoch" id next to the queue; when it comes back without it (FLUSHALL, a
-- restart without persistence), the epoch changes and the planner re-enqueues
-- the unsettled batches of every running run from Postgres.
ALTER TABLE ebb_runs ADD COLUMN queue_epoch TEXT;
CREATE INDEX ebb_runs_running ON ebb_runs (id) WHERE state = 'running';

-- Poison tasks: a batch whose task keeps coming back without settling (its
-- worker crashes every time, or settling keeps failing) is quarantined after
-- `[worker].max_deliveries`: its records fail into the DLQ instead of looping.
-- `deliveries` is counted outside the batch transaction, so crashes count.
ALTER TABLE ebb_batches ADD COLUMN quarantined BOOLEAN NOT NULL DEFAULT false;

-- What faults cost a run: destination retries (429/5xx/timeouts) of the
-- attempts that settled.
ALTER TABLE ebb_runs ADD COLUMN retries BIGINT NOT NULL DEFAULT 0;

-- What a destination's limits cost a run: requests answered 429 (throttled,
-- waited out without spending retries) and time spent waiting for the
-- destination's concurrency slots, rate tokens and pauses.
ALTER TABLE ebb_runs ADD COLUMN throttled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ebb_runs ADD COLUMN limiter_wait_ms BIGINT NOT NULL DEFAULT 0;
