-- One row per schedule tick a planner fired. With two `ebb serve` replicas,
-- only the leader schedules; a tick is still claimed here before its run
-- starts, so that a leader which lost its lock without noticing yet (a
-- network partition) and the new leader cannot both start a run for it.
CREATE TABLE ebb_schedule_ticks (
    sync_name  TEXT        NOT NULL,
    fire_at    TIMESTAMPTZ NOT NULL,
    claimed_by TEXT        NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- NULL when the tick started nothing (paused, a run still active, or
    -- planning failed before a run was recorded).
    run_id     BIGINT,
    PRIMARY KEY (sync_name, fire_at)
);
