-- Record keys compare by their bytes (collation "C") in every state table.
-- Under the database's own collation (en_US.UTF-8, or libc's C.UTF-8) each
-- comparison in a key index went through strcoll: about 5% of the state
-- database's CPU while a 1,000,000-record first sync settled. Byte order is
-- also the order the planner's merge diff reads the ledger in, which the
-- ledger's primary key now serves without a sort.
-- Keys are compared only for equality and for paging, where any fixed
-- order will do.
ALTER TABLE ebb_run_records ALTER COLUMN record_key TYPE TEXT COLLATE "C";
ALTER TABLE ebb_ledger ALTER COLUMN record_key TYPE TEXT COLLATE "C";
ALTER TABLE ebb_intents ALTER COLUMN record_key TYPE TEXT COLLATE "C";
ALTER TABLE ebb_verification_drift ALTER COLUMN record_key TYPE TEXT COLLATE "C";

-- A column a generated column reads cannot change type in place: the DLQ's
-- reason group is dropped and generated again from the same function.
ALTER TABLE ebb_dlq DROP COLUMN reason_group;
ALTER TABLE ebb_dlq ALTER COLUMN record_key TYPE TEXT COLLATE "C";
ALTER TABLE ebb_dlq ADD COLUMN reason_group TEXT
    GENERATED ALWAYS AS (ebb_reason_group(reason, record_key, payload)) STORED;
CREATE INDEX ebb_dlq_open_reason_group ON ebb_dlq (sync_name, reason_group) WHERE status = 'open';
