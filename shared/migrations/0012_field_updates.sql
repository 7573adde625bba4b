-- Minimal updates: a digest of the fields of the version delivered (an
-- 8-byte fingerprint of the field names, then 8 bytes per field in name
-- order), written by the worker that delivered it, so the next update by
-- id sends only the fields whose values changed since.
ALTER TABLE ebb_ledger ADD COLUMN field_digest BYTEA;
-- The versions delivered before the current one, newest first (up to 10):
-- a record changed back to one of them is flapping.
ALTER TABLE ebb_ledger ADD COLUMN previous_hashes BYTEA[];
