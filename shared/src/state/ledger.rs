//! `ebb_ledger`: per sync and record key, the version the destination has
//! acknowledged (content hash, the snapshot it came from) and the
//! destination's own id for it. What the next run diffs against; it only
//! moves forward, and only after the destination answered.

use sqlx::PgConnection;

use crate::error::StateError;

/// Records the delivered upserts of a batch, with each one's field digest
/// where the worker made one (`digests`, by key), and keeps the version
/// each replaces in its `previous_hashes` (newest first, up to 10: what
/// flapping is found against). An older snapshot never overwrites a newer
/// one.
pub async fn advance(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
    sync: &str,
    digests: &[(&str, &[u8])],
) -> Result<(), StateError> {
    let (keys, digests): (Vec<&str>, Vec<&[u8]>) = digests.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO ebb_ledger (sync_name, record_key, content_hash, snapshot_run_id, delivered_run_id, field_digest) \
         SELECT $3, rr.record_key, rr.content_hash, rr.snapshot_run_id, $1, d.digest FROM ebb_run_records rr \
         LEFT JOIN UNNEST($4::text[], $5::bytea[]) AS d(record_key, digest) ON d.record_key = rr.record_key \
         WHERE rr.run_id = $1 AND rr.batch_no = $2 AND rr.outcome = 'delivered' AND rr.op = 'upsert' \
         ON CONFLICT (sync_name, record_key) DO UPDATE SET content_hash = EXCLUDED.content_hash, \
             snapshot_run_id = EXCLUDED.snapshot_run_id, delivered_run_id = EXCLUDED.delivered_run_id, delivered_at = now(), \
             field_digest = EXCLUDED.field_digest, \
             previous_hashes = CASE \
                 WHEN ebb_ledger.content_hash = EXCLUDED.content_hash OR octet_length(ebb_ledger.content_hash) = 0 \
                 THEN ebb_ledger.previous_hashes \
                 ELSE (ARRAY[ebb_ledger.content_hash] || COALESCE(ebb_ledger.previous_hashes, '{}'::bytea[]))[1:10] END \
         WHERE ebb_ledger.snapshot_run_id <= EXCLUDED.snapshot_run_id",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(sync)
    .bind(&keys)
    .bind(&digests)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("advancing the ledger"))?;
    Ok(())
}

/// Records the destination's ids of delivered records.
pub async fn set_destination_ids(
    tx: &mut PgConnection,
    sync: &str,
    ids: &[(&str, &str)],
) -> Result<(), StateError> {
    if ids.is_empty() {
        return Ok(());
    }
    let (keys, ids): (Vec<&str>, Vec<&str>) = ids.iter().copied().unzip();
    sqlx::query(
        "UPDATE ebb_ledger l SET destination_id = x.id \
         FROM UNNEST($2::text[], $3::text[]) AS x(record_key, id) \
         WHERE l.sync_name = $1 AND l.record_key = x.record_key",
    )
    .bind(sync)
    .bind(&keys)
    .bind(&ids)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("recording destination ids"))?;
    Ok(())
}

/// Removes the records a batch deleted from the destination, unless a newer
/// version was delivered meanwhile.
pub async fn remove_deleted(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
    sync: &str,
) -> Result<(), StateError> {
    sqlx::query(
        "DELETE FROM ebb_ledger l USING ebb_run_records rr \
         WHERE rr.run_id = $1 AND rr.batch_no = $2 AND rr.outcome = 'delivered' AND rr.op = 'delete' \
           AND l.sync_name = $3 AND l.record_key = rr.record_key AND l.snapshot_run_id <= rr.snapshot_run_id",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(sync)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("removing deleted records from the ledger"))?;
    Ok(())
}
