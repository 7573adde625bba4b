-- A run's records lose their second index, by (run_id, record_key). Every
-- record the planner writes went into it as well as into the primary key
-- (run_id, batch_no, record_key): 1.6 s of writing a 1,000,000-record plan
-- (measured in psql: 2.5 s with the primary key alone, 4.1 s with both),
-- paid on every first sync for what only the run's record list reads. That
-- list now reads the primary key batch by batch (each batch's records are
-- in key order there) and merges the batches (`records::of_run`).
DROP INDEX IF EXISTS ebb_run_records_by_key;
