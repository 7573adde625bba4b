//! The diff: the snapshot against the ledger (what the destination has
//! acknowledged), in SQL so the planner's memory does not grow with the model.
//! The one place that reads Ebb's tables through the planner's temporary
//! snapshot; every other statement over them is in `ebb_shared::state`.

use futures::stream::BoxStream;
use serde::Serialize;
use sqlx::PgConnection;

use ebb_shared::StateError;
use ebb_shared::config::SyncMode;
use ebb_shared::destinations::budget::BatchWrites;
use ebb_shared::state::runs::PlannedTotals;
use ebb_shared::state::{batches, dlq};

/// Snapshot rows whose key is neither NULL nor duplicated and that have no
/// problem (see `snapshot`), with how they differ from the ledger. `$1` is
/// the sync name.
const CLASSIFIED: &str = "SELECT s.record_key, s.content_hash, s.payload, l.destination_id, l.previous_hashes, \
       CASE WHEN l.record_key IS NULL THEN 'added' \
            WHEN l.content_hash = s.content_hash THEN 'unchanged' \
            ELSE 'changed' END AS change \
     FROM ebb_snapshot s \
     LEFT JOIN ebb_ledger l ON l.sync_name = $1 AND l.record_key = s.record_key \
     WHERE s.record_key IS NOT NULL AND s.problem IS NULL \
       AND NOT EXISTS (SELECT 1 FROM ebb_dup_keys d WHERE d.record_key = s.record_key)";

/// Ledger keys the model no longer has. `$1` is the sync name.
const REMOVED: &str = "SELECT l.record_key, l.destination_id FROM ebb_ledger l \
     WHERE l.sync_name = $1 \
       AND NOT EXISTS (SELECT 1 FROM ebb_snapshot s WHERE s.record_key = l.record_key)";

/// What a plan found.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PlanCounts {
    pub rows_read: u64,
    pub added: i64,
    pub changed: i64,
    pub unchanged: i64,
    pub removed: i64,
    /// Added or changed records the mode does not send (update/insert).
    pub skipped_by_mode: i64,
    /// Rows with a NULL or duplicated primary key, or a value that cannot
    /// be kept (not UTF-8, over `max_record_bytes`).
    pub rejected: i64,
    /// Records the run will send (upserts and, in mirror mode, deletes).
    pub to_send: i64,
    pub deletes: i64,
    /// Changed records whose new version is one of the versions delivered
    /// before the current one: flapping (see [`count`]).
    pub flapping: i64,
}

impl PlanCounts {
    /// What the run records of the plan.
    pub fn totals(&self, batches: usize) -> PlannedTotals {
        PlannedTotals {
            added: self.added,
            changed: self.changed,
            removed: self.removed,
            unchanged: self.unchanged,
            skipped_by_mode: self.skipped_by_mode,
            rejected: self.rejected,
            to_send: self.to_send,
            batches,
            rows_read: Some(self.rows_read as i64),
            requests_planned: None,
            flapping: self.flapping,
        }
    }
}

/// What a diff found, and for a run, what it wrote.
#[derive(Debug)]
pub struct Diffed {
    pub counts: PlanCounts,
    /// The first planning rejections, in key order (NULL keys first).
    pub rejections: Vec<PlanRejection>,
    /// The first flapping records' keys, in key order.
    pub flapping_keys: Vec<String>,
    /// Each batch's writes by kind.
    pub writes: Vec<BatchWrites>,
    /// The batches written (none for a dry run).
    pub batches: Vec<i32>,
}

/// A record the planner refused, with the reason.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanRejection {
    pub record_key: Option<String>,
    pub reason: String,
}

/// Which change classes a run sends.
#[derive(Debug, Clone, Copy)]
pub struct SendRule {
    pub mode: SyncMode,
    pub full_resync: bool,
}

impl SendRule {
    /// `--full-resync` sends every record of the model the mode may touch:
    /// all of them, except in update mode where only delivered ones.
    fn classes(self) -> Vec<&'static str> {
        let mut classes = Vec::new();
        if self.mode.sends_added() {
            classes.push("added");
        }
        if self.mode.sends_changed() || self.full_resync {
            classes.push("changed");
        }
        if self.full_resync {
            classes.push("unchanged");
        }
        classes
    }
}

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
    StateError::query(context)
}

/// Finds duplicated keys; must run after the snapshot and before the rest.
pub async fn find_duplicates(conn: &mut PgConnection) -> Result<(), StateError> {
    sqlx::query(
        "CREATE TEMP TABLE ebb_dup_keys ON COMMIT DROP AS \
         SELECT record_key, count(*) AS copies FROM ebb_snapshot WHERE record_key IS NOT NULL \
         GROUP BY record_key HAVING count(*) > 1",
    )
    .execute(&mut *conn)
    .await
    .map_err(q("finding duplicate primary keys"))?;
    Ok(())
}

const REJECTIONS: &str = "SELECT s.record_key, \
       CASE WHEN s.record_key IS NULL THEN 'primary key column `' || $1 || '` is NULL; fix the model so every row has a key' \
            WHEN d.record_key IS NOT NULL THEN 'duplicate primary key: ' || d.copies || ' rows of the model have `' || $1 || '` = ' || s.record_key || '; none of them is sent until the key is unique' \
            ELSE s.problem END AS reason, \
       s.content_hash, s.payload \
     FROM ebb_snapshot s LEFT JOIN ebb_dup_keys d ON d.record_key = s.record_key \
     WHERE s.record_key IS NULL OR d.record_key IS NOT NULL OR s.problem IS NOT NULL";

/// Counts the diff in one pass: the snapshot fully joined with the sync's
/// ledger rows classifies each snapshot row (added, changed, unchanged, or
/// rejected: a NULL or duplicated key, or a problem) and finds the ledger
/// keys the model no longer has at all (removed). A changed record whose
/// new version is one of the last `flapping_versions` versions delivered
/// before the current one is counted flapping too (A, then B, now A
/// again).
pub async fn count(
    conn: &mut PgConnection,
    sync: &str,
    rule: SendRule,
    flapping_versions: u32,
) -> Result<PlanCounts, StateError> {
    let by_change: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT change, count(*), count(*) FILTER (WHERE change = 'changed' \
                AND content_hash = ANY(previous_hashes[1:{flapping_versions}])) \
         FROM ( \
             SELECT s.content_hash, l.previous_hashes, \
                    CASE WHEN s.content_hash IS NULL THEN 'removed' \
                         WHEN s.record_key IS NULL OR s.problem IS NOT NULL \
                           OR EXISTS (SELECT 1 FROM ebb_dup_keys d WHERE d.record_key = s.record_key) THEN 'rejected' \
                         WHEN l.record_key IS NULL THEN 'added' \
                         WHEN l.content_hash = s.content_hash THEN 'unchanged' \
                         ELSE 'changed' END AS change \
             FROM ebb_snapshot s \
             FULL JOIN (SELECT record_key, content_hash, previous_hashes FROM ebb_ledger WHERE sync_name = $1) l \
               ON l.record_key = s.record_key \
         ) c GROUP BY change"
    )))
    .bind(sync)
    .fetch_all(&mut *conn)
    .await
    .map_err(q("diffing the snapshot against the ledger"))?;

    let mut counts = PlanCounts::default();
    let classes = rule.classes();
    for (change, n, flapping) in by_change {
        counts.flapping += flapping;
        match change.as_str() {
            "added" => counts.added = n,
            "changed" => counts.changed = n,
            "removed" => counts.removed = n,
            "rejected" => counts.rejected = n,
            _ => counts.unchanged = n,
        }
        if classes.contains(&change.as_str()) {
            counts.to_send += n;
        } else if matches!(change.as_str(), "added" | "changed") {
            counts.skipped_by_mode += n;
        }
    }
    if rule.mode.sends_removed() {
        counts.deletes = counts.removed;
        counts.to_send += counts.removed;
    }
    Ok(counts)
}

/// Up to `sample` keys of the records [`count`] found flapping, in key
/// order.
pub async fn flapping_keys(
    conn: &mut PgConnection,
    sync: &str,
    flapping_versions: u32,
    sample: i64,
) -> Result<Vec<String>, StateError> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT s.record_key FROM ebb_snapshot s \
         JOIN ebb_ledger l ON l.sync_name = $1 AND l.record_key = s.record_key \
         WHERE l.content_hash <> s.content_hash AND s.problem IS NULL \
           AND s.content_hash = ANY(l.previous_hashes[1:{flapping_versions}]) \
         ORDER BY s.record_key LIMIT $2"
    )))
    .bind(sync)
    .bind(sample)
    .fetch_all(&mut *conn)
    .await
    .map_err(q("finding flapping records"))
}

/// Up to `limit` planning rejections, for `ebb plan` and run summaries.
pub async fn sample_rejections(
    conn: &mut PgConnection,
    primary_key: &str,
    limit: i64,
) -> Result<Vec<PlanRejection>, StateError> {
    let rows: Vec<(Option<String>, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT record_key, reason FROM ({REJECTIONS}) r ORDER BY record_key NULLS FIRST LIMIT $2"
    )))
    .bind(primary_key)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(q("listing rejected rows"))?;
    Ok(rows
        .into_iter()
        .map(|(record_key, reason)| PlanRejection { record_key, reason })
        .collect())
}

/// Writes the `rejected` planning rejections [`count`] found for run
/// `run_id` to the DLQ, closing the previous run's planning rejections
/// (they are re-evaluated every run).
pub async fn record_rejections(
    conn: &mut PgConnection,
    run_id: i64,
    sync: &str,
    destination: &str,
    primary_key: &str,
    rejected: i64,
) -> Result<(), StateError> {
    dlq::supersede_plan_rejections(conn, sync, run_id).await?;
    if rejected == 0 {
        // Finding none would take another pass over the snapshot.
        return Ok(());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ebb_dlq (sync_name, destination, stage, kind, record_key, op, content_hash, \
                              snapshot_run_id, first_run_id, last_run_id, payload, reason) \
         SELECT $2, $3, 'plan', 'rejected', r.record_key, 'upsert', r.content_hash, $4, $4, $4, r.payload::jsonb, r.reason \
         FROM ({REJECTIONS}) r"
    )))
    .bind(primary_key)
    .bind(sync)
    .bind(destination)
    .bind(run_id)
    .execute(&mut *conn)
    .await
    .map_err(q("recording planning rejections in the DLQ"))?;
    Ok(())
}

/// The records a run sends, numbered into batches: `batch_no`,
/// `record_key`, `op`, `content_hash`, `payload` and the ledger's
/// `destination_id`. `$1` sync, `$3` batch size, `$4` the change classes
/// sent, `$5` whether removals are sent (`$2` is left to the caller).
const NUMBERED: &str = "SELECT ((row_number() OVER ()) - 1) / $3 AS batch_no, x.record_key, x.op, \
       x.content_hash, x.payload, x.destination_id \
     FROM ( \
         SELECT c.record_key, 'upsert' AS op, c.content_hash, c.payload, c.destination_id FROM (CLASSIFIED) c WHERE c.change = ANY($4) \
         UNION ALL \
         SELECT r.record_key, 'delete', NULL::bytea, NULL::text, r.destination_id FROM (REMOVED) r WHERE $5 \
     ) x";

fn numbered() -> String {
    NUMBERED
        .replace("(CLASSIFIED)", &format!("({CLASSIFIED})"))
        .replace("(REMOVED)", &format!("({REMOVED})"))
}

/// Each batch's writes by kind, from rows with `batch_no`, `op` and
/// `destination_id`.
const WRITES_BY_BATCH: &str = "SELECT count(*) FILTER (WHERE op = 'delete'), \
       count(*) FILTER (WHERE op = 'upsert' AND destination_id IS NOT NULL), \
       count(*) FILTER (WHERE op = 'upsert' AND destination_id IS NULL) \
     FROM rows GROUP BY batch_no ORDER BY batch_no";

/// Writes the records to send into `ebb_run_records`, numbered into batches,
/// and one `ebb_batches` row per batch. Returns the batch numbers.
pub async fn write_batches(
    conn: &mut PgConnection,
    run_id: i64,
    sync: &str,
    rule: SendRule,
    batch_size: usize,
) -> Result<Vec<i32>, StateError> {
    let classes: Vec<String> = rule.classes().into_iter().map(str::to_owned).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO ebb_run_records (run_id, batch_no, record_key, op, content_hash, snapshot_run_id, payload) \
         SELECT $2, n.batch_no, n.record_key, n.op, n.content_hash, $2, n.payload FROM ({}) n",
        numbered()
    )))
    .bind(sync)
    .bind(run_id)
    .bind(batch_size as i64)
    .bind(&classes)
    .bind(rule.mode.sends_removed())
    .execute(&mut *conn)
    .await
    .map_err(q("writing the run's records"))?;
    batches::create_for_run(conn, run_id).await
}

/// The writes of each batch a run of this plan sends, by kind, without
/// writing them (the dry run).
pub async fn planned_writes(
    conn: &mut PgConnection,
    sync: &str,
    rule: SendRule,
    batch_size: usize,
) -> Result<Vec<BatchWrites>, StateError> {
    let classes: Vec<String> = rule.classes().into_iter().map(str::to_owned).collect();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH rows AS ({}) {WRITES_BY_BATCH}",
        numbered()
    )))
    .bind(sync)
    .bind(0_i64)
    .bind(batch_size as i64)
    .bind(&classes)
    .bind(rule.mode.sends_removed())
    .fetch_all(&mut *conn)
    .await
    .map_err(q("counting the plan's writes by batch"))?;
    Ok(rows.into_iter().map(batch_writes).collect())
}

/// The writes of each batch of run `run_id`, as written by [`write_batches`].
pub async fn written_writes(
    conn: &mut PgConnection,
    run_id: i64,
    sync: &str,
) -> Result<Vec<BatchWrites>, StateError> {
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH rows AS ( \
             SELECT r.batch_no, r.op, l.destination_id FROM ebb_run_records r \
             LEFT JOIN ebb_ledger l ON l.sync_name = $2 AND l.record_key = r.record_key \
             WHERE r.run_id = $1) {WRITES_BY_BATCH}"
    )))
    .bind(run_id)
    .bind(sync)
    .fetch_all(&mut *conn)
    .await
    .map_err(q("counting the run's writes by batch"))?;
    Ok(rows.into_iter().map(batch_writes).collect())
}

fn batch_writes((removes, updates_by_id, writes): (i64, i64, i64)) -> BatchWrites {
    BatchWrites {
        removes: removes.max(0) as u64,
        updates_by_id: updates_by_id.max(0) as u64,
        writes: writes.max(0) as u64,
    }
}

/// A delivered record whose model row is unchanged since (`ebb verify`):
/// its key, the delivered payload (JSON text) and the destination's id.
pub type DeliveredRecord = (String, String, Option<String>);

/// The delivered records whose model row still holds the version the ledger
/// has: `sample` of them at random, or all. Streams, so `--all` over a big
/// model holds one chunk at a time.
pub fn delivered_unchanged<'c>(
    conn: &'c mut PgConnection,
    sync: &'c str,
    sample: Option<i64>,
) -> BoxStream<'c, Result<DeliveredRecord, sqlx::Error>> {
    let sql = match sample {
        Some(_) => {
            "SELECT s.record_key, s.payload, l.destination_id FROM ebb_snapshot s \
             JOIN ebb_ledger l ON l.sync_name = $1 AND l.record_key = s.record_key AND l.content_hash = s.content_hash \
             WHERE s.problem IS NULL ORDER BY random() LIMIT $2"
        }
        None => {
            "SELECT s.record_key, s.payload, l.destination_id FROM ebb_snapshot s \
             JOIN ebb_ledger l ON l.sync_name = $1 AND l.record_key = s.record_key AND l.content_hash = s.content_hash \
             WHERE s.problem IS NULL AND $2::bigint IS NULL"
        }
    };
    sqlx::query_as(sql).bind(sync).bind(sample).fetch(conn)
}

/// Delivered records whose model row changed or is gone since: the next run
/// sends them, so `ebb verify` does not check them.
pub async fn delivered_pending(conn: &mut PgConnection, sync: &str) -> Result<i64, StateError> {
    sqlx::query_scalar(
        "SELECT count(*) FROM ebb_ledger l WHERE l.sync_name = $1 AND NOT EXISTS \
             (SELECT 1 FROM ebb_snapshot s WHERE s.record_key = l.record_key AND s.content_hash = l.content_hash)",
    )
    .bind(sync)
    .fetch_one(&mut *conn)
    .await
    .map_err(q("counting records changed since delivered"))
}

/// Of the keys a destination holds, those the sync neither delivered nor
/// has in its model: extra (a mirror sync should not have them).
pub async fn extra_keys(
    conn: &mut PgConnection,
    sync: &str,
    held: &[String],
) -> Result<Vec<String>, StateError> {
    sqlx::query_scalar(
        "SELECT k FROM UNNEST($2::text[]) AS k \
         WHERE NOT EXISTS (SELECT 1 FROM ebb_ledger l WHERE l.sync_name = $1 AND l.record_key = k) \
           AND NOT EXISTS (SELECT 1 FROM ebb_snapshot s WHERE s.record_key = k) \
         ORDER BY k",
    )
    .bind(sync)
    .bind(held)
    .fetch_all(&mut *conn)
    .await
    .map_err(q("finding extra records at the destination"))
}
