-- A run's records are written packed by the planner's COPY, then each is
-- updated once when its batch settles (its outcome set, its payload
-- dropped). On a full page that update cannot stay on the page: Postgres
-- wrote each record's new version elsewhere and a new entry for it in both
-- of the table's indexes, which was the costliest statement of a first
-- sync (12 ms a 1,000-record batch). Pages filled to 60% keep room for the
-- new versions, which are smaller than the old ones (no payload), so the
-- update stays on the page and touches no index (a heap-only update:
-- 1.2 ms a batch), for 45% more space while a run's payloads are held.
ALTER TABLE ebb_run_records SET (fillfactor = 60);
