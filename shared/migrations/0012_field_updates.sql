-- Minimal updates: a hash per field of the version delivered, so the next
-- update sends only the fields whose values changed since; and, per record
-- a run sends, the fields an update by the destination's id writes (the
-- changed ones, without the sync's `on_create_only` fields). NULL
-- `update_fields`: every field (a record never delivered).
ALTER TABLE ebb_ledger ADD COLUMN field_hashes JSONB;
ALTER TABLE ebb_run_records ADD COLUMN field_hashes JSONB;
ALTER TABLE ebb_run_records ADD COLUMN update_fields TEXT[];
