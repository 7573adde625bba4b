-- DLQ entries grouped by reason: destinations put the refused values in
-- their messages ("bad-7 is not a valid email address", Postgres's
-- "Failing row contains (7, bad-7, …)"), so records refused for the same
-- reason have different reasons. `reason_group` is the reason with the
-- record's own key and field values replaced by "…", as whole tokens, so
-- that "… is not a valid email address" counts 182 records.
CREATE FUNCTION ebb_reason_group(reason TEXT, record_key TEXT, payload JSONB) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    grouped TEXT := reason;
    value TEXT;
BEGIN
    IF reason IS NULL THEN
        RETURN NULL;
    END IF;
    FOR value IN
        SELECT v FROM (
            SELECT e.value AS v
            FROM jsonb_each_text(CASE WHEN jsonb_typeof(payload) = 'object' THEN payload ELSE '{}'::jsonb END) e
            UNION SELECT record_key
        ) vals
        WHERE v IS NOT NULL AND v <> '' AND length(v) <= 1000
        -- Longest first: `7.5` before the `7` inside it.
        ORDER BY length(v) DESC, v
    LOOP
        grouped := regexp_replace(
            grouped,
            '(^|[^[:alnum:]_@.+-])' || regexp_replace(value, '([.^$*+?()\[\]{}|\\-])', '\\\1', 'g') || '($|[^[:alnum:]_@+-])',
            '\1…\2',
            'g'
        );
    END LOOP;
    RETURN grouped;
END
$$;

ALTER TABLE ebb_dlq ADD COLUMN reason_group TEXT
    GENERATED ALWAYS AS (ebb_reason_group(reason, record_key, payload)) STORED;
CREATE INDEX ebb_dlq_open_reason_group ON ebb_dlq (sync_name, reason_group) WHERE status = 'open';
