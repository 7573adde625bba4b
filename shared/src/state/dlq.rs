//! `ebb_dlq`, the dead-letter queue: records refused at planning (stage
//! `plan`) or by the destination (stage `destination`), with the reason;
//! listing, showing and discarding entries; the entries a settle opens and
//! closes; and the entries a replay takes. Replays are planned as runs by
//! the planner.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::error::StateError;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DlqEntry {
    pub id: i64,
    pub sync_name: String,
    pub destination: String,
    pub stage: String,
    pub kind: String,
    pub record_key: Option<String>,
    pub op: String,
    pub snapshot_run_id: i64,
    pub first_run_id: i64,
    pub last_run_id: i64,
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    pub reason: String,
    pub attempts: i32,
    pub status: String,
    pub resolution: Option<String>,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

const DLQ_COLUMNS: &str = "id, sync_name, destination, stage, kind, record_key, op, snapshot_run_id, \
    first_run_id, last_run_id, payload, reason, attempts, status, resolution, first_failed_at, \
    last_failed_at, resolved_at";

/// Filters for `ebb dlq list` and the API's DLQ listing.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter<'a> {
    pub sync: Option<&'a str>,
    /// Only entries in this status (`open`, `resolved`, `discarded`,
    /// `superseded`); open ones unless `include_closed`.
    pub status: Option<&'a str>,
    /// Also show resolved, discarded and superseded entries.
    pub include_closed: bool,
    /// Only entries whose reason contains this (case-insensitive).
    pub reason: Option<&'a str>,
    /// Only the entries of the record with this primary key.
    pub record_key: Option<&'a str>,
    /// Only the entries of this reason group (see [`reasons`]).
    pub reason_group: Option<&'a str>,
    /// Only entries with a larger id (the page after a cursor).
    pub after_id: Option<i64>,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, filter: &DlqFilter<'_>) -> Result<Vec<DlqEntry>, StateError> {
    sqlx::query_as::<_, DlqEntry>(sqlx::AssertSqlSafe(format!(
        "SELECT {DLQ_COLUMNS} FROM ebb_dlq \
         WHERE ($1::text IS NULL OR sync_name = $1) \
           AND (CASE WHEN $2::text IS NOT NULL THEN status = $2 ELSE ($3 OR status = 'open') END) \
           AND ($4::text IS NULL OR strpos(lower(reason), lower($4)) > 0) \
           AND ($5::bigint IS NULL OR id > $5) \
           AND ($7::text IS NULL OR record_key = $7) \
           AND ($8::text IS NULL OR reason_group = $8) \
         ORDER BY id LIMIT $6"
    )))
    .bind(filter.sync)
    .bind(filter.status)
    .bind(filter.include_closed)
    .bind(filter.reason)
    .bind(filter.after_id)
    .bind(filter.limit)
    .bind(filter.record_key)
    .bind(filter.reason_group)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing the DLQ"))
}

/// How an operator closes open entries without sending them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Not to be delivered (`discarded`).
    Dismiss,
    /// Dealt with another way, e.g. fixed in the destination by hand
    /// (`resolved`).
    Resolve,
}

/// Closes the open entries among `ids` (or, with `sync`, every open entry
/// of that sync) with who did it and why. Returns the ids closed.
pub async fn close(
    pool: &PgPool,
    ids: &[i64],
    sync: Option<&str>,
    closing: Closing,
    by: &str,
    note: Option<&str>,
) -> Result<Vec<i64>, StateError> {
    let (status, verb) = match closing {
        Closing::Dismiss => ("discarded", "dismissed"),
        Closing::Resolve => ("resolved", "resolved"),
    };
    let resolution = match note {
        Some(note) if !note.trim().is_empty() => format!("{verb} by {by}: {}", note.trim()),
        _ => format!("{verb} by {by}"),
    };
    sqlx::query_scalar::<_, i64>(
        "UPDATE ebb_dlq SET status = $3, resolved_at = now(), resolution = $4 \
         WHERE status = 'open' AND (id = ANY($1) OR ($2::text IS NOT NULL AND sync_name = $2)) RETURNING id",
    )
    .bind(ids)
    .bind(sync)
    .bind(status)
    .bind(resolution)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("closing DLQ entries"))
}

pub async fn count_open(pool: &PgPool, sync: Option<&str>) -> Result<i64, StateError> {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM ebb_dlq WHERE status = 'open' AND ($1::text IS NULL OR sync_name = $1)",
    )
    .bind(sync)
    .fetch_one(pool)
    .await
    .map_err(StateError::query("counting the DLQ"))
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<DlqEntry>, StateError> {
    sqlx::query_as::<_, DlqEntry>(sqlx::AssertSqlSafe(format!(
        "SELECT {DLQ_COLUMNS} FROM ebb_dlq WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("reading a DLQ entry"))
}

/// A record a batch could not deliver, for [`dead_letter`].
pub struct DeadRecord<'a> {
    pub key: &'a str,
    /// `rejected` (refused by the destination) or `failed`.
    pub kind: &'static str,
    pub reason: &'a str,
}

/// Opens (or adds an attempt to) a destination-stage entry for each record
/// of the batch that was rejected or failed, with its payload from the
/// run's records.
pub async fn dead_letter(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
    sync: &str,
    destination: &str,
    records: &[DeadRecord<'_>],
) -> Result<(), StateError> {
    if records.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = records.iter().map(|r| r.key).collect();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind).collect();
    let reasons: Vec<&str> = records.iter().map(|r| r.reason).collect();
    sqlx::query(
        "INSERT INTO ebb_dlq (sync_name, destination, stage, kind, record_key, op, content_hash, \
                              snapshot_run_id, first_run_id, last_run_id, payload, reason) \
         SELECT $3, $4, 'destination', x.kind, rr.record_key, rr.op, rr.content_hash, rr.snapshot_run_id, $1, $1, ebb_payload_jsonb(rr.payload), x.reason \
         FROM UNNEST($5::text[], $6::text[], $7::text[]) AS x(record_key, kind, reason) \
         JOIN ebb_run_records rr ON rr.run_id = $1 AND rr.batch_no = $2 AND rr.record_key = x.record_key \
         ON CONFLICT (sync_name, record_key) WHERE status = 'open' AND stage = 'destination' DO UPDATE SET \
             kind = EXCLUDED.kind, reason = EXCLUDED.reason, attempts = ebb_dlq.attempts + 1, \
             last_run_id = EXCLUDED.last_run_id, last_failed_at = now(), op = EXCLUDED.op, \
             payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, snapshot_run_id = EXCLUDED.snapshot_run_id",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(sync)
    .bind(destination)
    .bind(&keys)
    .bind(&kinds)
    .bind(&reasons)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("dead-lettering records"))?;
    Ok(())
}

/// Closes the open destination-stage entries of records the batch
/// delivered (`resolved`) or found superseded, when not newer than them.
pub async fn resolve_settled(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
    sync: &str,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE ebb_dlq d SET \
             status = CASE rr.outcome WHEN 'delivered' THEN 'resolved' ELSE 'superseded' END, \
             resolved_at = now(), \
             resolution = CASE rr.outcome WHEN 'delivered' THEN 'delivered by run ' || $1 \
                          ELSE 'not sent by run ' || $1 || ': a newer version was already delivered' END \
         FROM ebb_run_records rr \
         WHERE rr.run_id = $1 AND rr.batch_no = $2 AND rr.outcome IN ('delivered', 'superseded') \
           AND d.sync_name = $3 AND d.record_key = rr.record_key AND d.status = 'open' \
           AND d.stage = 'destination' AND d.snapshot_run_id <= rr.snapshot_run_id",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(sync)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("resolving DLQ entries"))?;
    Ok(())
}

/// Closes a sync's open planning rejections: every run evaluates them anew.
pub async fn supersede_plan_rejections(
    tx: &mut PgConnection,
    sync: &str,
    run_id: i64,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE ebb_dlq SET status = 'superseded', resolved_at = now(), \
         resolution = 're-evaluated by run ' || $2 \
         WHERE sync_name = $1 AND stage = 'plan' AND status = 'open'",
    )
    .bind(sync)
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("closing earlier planning rejections"))?;
    Ok(())
}

/// Before a replay: closes the open entries (only `ids`, when given) whose
/// record the ledger holds in a newer version, instead of re-sending old
/// data. Returns how many.
pub async fn supersede_outdated(
    tx: &mut PgConnection,
    sync: &str,
    ids: Option<&[i64]>,
) -> Result<i64, StateError> {
    let closed = sqlx::query(
        "UPDATE ebb_dlq d SET status = 'superseded', resolved_at = now(), \
             resolution = 'not replayed: run ' || l.delivered_run_id || ' delivered a newer version' \
         FROM ebb_ledger l \
         WHERE d.status = 'open' AND d.stage = 'destination' AND d.sync_name = $1 \
           AND ($2::bigint[] IS NULL OR d.id = ANY($2)) \
           AND l.sync_name = d.sync_name AND l.record_key = d.record_key \
           AND l.snapshot_run_id > d.snapshot_run_id",
    )
    .bind(sync)
    .bind(ids)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("closing superseded DLQ entries"))?;
    Ok(closed.rows_affected() as i64)
}

/// Entries of one sync and stage refused for the same reason: their
/// reasons with each record's own key and values replaced by `…`
/// (`ebb_reason_group`, migration 0014).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReasonGroup {
    pub sync_name: String,
    pub stage: String,
    pub reason_group: String,
    pub entries: i64,
}

/// The entries `filter` selects (all pages), grouped by sync, stage and
/// reason group, largest group first.
pub async fn reasons(
    pool: &PgPool,
    filter: &DlqFilter<'_>,
) -> Result<Vec<ReasonGroup>, StateError> {
    sqlx::query_as(
        "SELECT sync_name, stage, reason_group, count(*) AS entries FROM ebb_dlq \
         WHERE ($1::text IS NULL OR sync_name = $1) \
           AND (CASE WHEN $2::text IS NOT NULL THEN status = $2 ELSE ($3 OR status = 'open') END) \
           AND ($4::text IS NULL OR strpos(lower(reason), lower($4)) > 0) \
           AND ($6::text IS NULL OR record_key = $6) \
           AND ($7::text IS NULL OR reason_group = $7) \
         GROUP BY sync_name, stage, reason_group ORDER BY count(*) DESC, sync_name, reason_group LIMIT $5",
    )
    .bind(filter.sync)
    .bind(filter.status)
    .bind(filter.include_closed)
    .bind(filter.reason)
    .bind(filter.limit)
    .bind(filter.record_key)
    .bind(filter.reason_group)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("grouping the DLQ by reason"))
}

/// The open entries of `sync` refused at `stage` in the reason group
/// `group`.
pub async fn open_in_group(
    pool: &PgPool,
    sync: &str,
    stage: &str,
    group: &str,
) -> Result<Vec<i64>, StateError> {
    sqlx::query_scalar(
        "SELECT id FROM ebb_dlq WHERE sync_name = $1 AND stage = $2 AND reason_group = $3 AND status = 'open' ORDER BY id",
    )
    .bind(sync)
    .bind(stage)
    .bind(group)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("finding the DLQ entries of a reason group"))
}
