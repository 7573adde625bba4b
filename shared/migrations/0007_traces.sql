-- The W3C traceparent of a run's root span: tasks re-enqueued from
-- Postgres carry it too, so their batches join the run's trace.
ALTER TABLE ebb_runs ADD COLUMN traceparent TEXT;
