//! The dead-letter queue: listing, showing and discarding entries. Replays
//! are planned as runs by the planner.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::StateError;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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

/// Filters for `ebb dlq list`.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter<'a> {
    pub sync: Option<&'a str>,
    /// Also show resolved, discarded and superseded entries.
    pub include_closed: bool,
    pub limit: i64,
}

pub async fn list(pool: &PgPool, filter: &DlqFilter<'_>) -> Result<Vec<DlqEntry>, StateError> {
    sqlx::query_as::<_, DlqEntry>(sqlx::AssertSqlSafe(format!(
        "SELECT {DLQ_COLUMNS} FROM ebb_dlq \
         WHERE ($1::text IS NULL OR sync_name = $1) AND ($2 OR status = 'open') \
         ORDER BY id LIMIT $3"
    )))
    .bind(filter.sync)
    .bind(filter.include_closed)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing the DLQ"))
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

/// Marks open entries as discarded: an operator decided not to deliver them.
/// Returns the ids actually discarded.
pub async fn discard(
    pool: &PgPool,
    ids: &[i64],
    sync: Option<&str>,
) -> Result<Vec<i64>, StateError> {
    sqlx::query_scalar::<_, i64>(
        "UPDATE ebb_dlq SET status = 'discarded', resolved_at = now(), resolution = 'discarded by operator' \
         WHERE status = 'open' AND (id = ANY($1) OR ($2::text IS NOT NULL AND sync_name = $2)) RETURNING id",
    )
    .bind(ids)
    .bind(sync)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("discarding DLQ entries"))
}
