//! `ebb_verifications` and `ebb_verification_drift`: each `ebb verify`,
//! what it found, and each record that drifted at the destination.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::destinations::util::verify::FieldDrift;
use crate::error::StateError;

/// One verification and its totals.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Verification {
    pub id: i64,
    pub sync_name: String,
    pub destination: String,
    /// The sync's newest run when it started: the delivery it checks.
    pub run_id: Option<i64>,
    pub trigger: String,
    /// `sample` or `all`.
    pub scope: String,
    /// `running`, `succeeded` (whatever drift it found) or `failed`.
    pub state: String,
    /// Delivered records read back.
    pub checked: i64,
    pub matching: i64,
    /// Delivered, and gone from the destination.
    pub missing: i64,
    /// Delivered, and holding other values there.
    pub different: i64,
    /// At the destination and not delivered by the sync (mirror mode);
    /// `None` when not looked for.
    pub extra: Option<i64>,
    /// Delivered records changed or removed in the model since: the next
    /// run sends them, so they are not checked.
    pub pending: i64,
    /// Drifted records marked to be sent again.
    pub resent: i64,
    /// The run that sends them.
    pub resend_run_id: Option<i64>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Verification {
    pub fn drifted(&self) -> i64 {
        self.missing + self.different + self.extra.unwrap_or(0)
    }
}

/// How a record drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    Missing,
    Different,
    Extra,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::Different => "different",
            DriftKind::Extra => "extra",
        }
    }
}

/// One record that drifted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Drift {
    pub record_key: String,
    pub kind: DriftKind,
    /// For `different`: each field, delivered and found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldDrift>,
}

const COLUMNS: &str = "id, sync_name, destination, run_id, trigger, scope, state, checked, matching, \
    missing, different, extra, pending, resent, resend_run_id, error, started_at, finished_at";

fn q(context: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
    StateError::query(context)
}

/// Starts a verification of `sync`; returns its id.
pub async fn start(
    pool: &PgPool,
    sync: &str,
    destination: &str,
    trigger: &str,
    all: bool,
) -> Result<i64, StateError> {
    sqlx::query_scalar(
        "INSERT INTO ebb_verifications (sync_name, destination, run_id, trigger, scope, state) \
         VALUES ($1, $2, (SELECT max(id) FROM ebb_runs WHERE sync_name = $1), $3, $4, 'running') RETURNING id",
    )
    .bind(sync)
    .bind(destination)
    .bind(trigger)
    .bind(if all { "all" } else { "sample" })
    .fetch_one(pool)
    .await
    .map_err(q("starting a verification"))
}

/// What a verification found, so far or in all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub checked: i64,
    pub matching: i64,
    pub missing: i64,
    pub different: i64,
    pub extra: Option<i64>,
    pub pending: i64,
}

/// Records drifted records of verification `id`.
pub async fn add_drift(pool: &PgPool, id: i64, drift: &[Drift]) -> Result<(), StateError> {
    if drift.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = drift.iter().map(|d| d.record_key.as_str()).collect();
    let kinds: Vec<&str> = drift.iter().map(|d| d.kind.as_str()).collect();
    let fields: Vec<Option<serde_json::Value>> = drift
        .iter()
        .map(|d| {
            (!d.fields.is_empty())
                .then(|| serde_json::to_value(&d.fields).unwrap_or(serde_json::Value::Null))
        })
        .collect();
    sqlx::query(
        "INSERT INTO ebb_verification_drift (verification_id, record_key, kind, fields) \
         SELECT $1, k, d, f FROM UNNEST($2::text[], $3::text[], $4::jsonb[]) AS x(k, d, f) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(&keys)
    .bind(&kinds)
    .bind(&fields)
    .execute(pool)
    .await
    .map_err(q("recording drifted records"))?;
    Ok(())
}

/// Ends a verification with its totals, or its error.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    totals: &Totals,
    error: Option<&str>,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE ebb_verifications SET checked = $2, matching = $3, missing = $4, different = $5, \
             extra = $6, pending = $7, error = $8, finished_at = now(), \
             state = CASE WHEN $8::text IS NULL THEN 'succeeded' ELSE 'failed' END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(totals.checked)
    .bind(totals.matching)
    .bind(totals.missing)
    .bind(totals.different)
    .bind(totals.extra)
    .bind(totals.pending)
    .bind(error)
    .execute(pool)
    .await
    .map_err(q("ending a verification"))?;
    Ok(())
}

/// Marks verification `id`'s drifted records to be sent again: a missing
/// or different record's delivered version is forgotten, its field digest
/// too (the next run sees it changed and writes every field by its
/// destination id again, not only the ones the model changed); an extra record
/// is put in the ledger with no version, so the next mirror run removes it.
/// Returns how many were marked.
pub async fn mark_for_resend(pool: &PgPool, id: i64, sync: &str) -> Result<i64, StateError> {
    let mut tx = pool.begin().await.map_err(q("marking drift to resend"))?;
    let stale = sqlx::query(
        "UPDATE ebb_ledger l SET content_hash = '\\x'::bytea, field_digest = NULL FROM ebb_verification_drift d \
         WHERE d.verification_id = $1 AND d.kind IN ('missing', 'different') \
           AND l.sync_name = $2 AND l.record_key = d.record_key",
    )
    .bind(id)
    .bind(sync)
    .execute(&mut *tx)
    .await
    .map_err(q("marking drifted records to resend"))?
    .rows_affected();
    let extra = sqlx::query(
        "INSERT INTO ebb_ledger (sync_name, record_key, content_hash, snapshot_run_id, delivered_run_id) \
         SELECT $2, d.record_key, '\\x'::bytea, 0, 0 FROM ebb_verification_drift d \
         WHERE d.verification_id = $1 AND d.kind = 'extra' \
         ON CONFLICT (sync_name, record_key) DO NOTHING",
    )
    .bind(id)
    .bind(sync)
    .execute(&mut *tx)
    .await
    .map_err(q("marking extra records to remove"))?
    .rows_affected();
    let marked = (stale + extra) as i64;
    sqlx::query("UPDATE ebb_verifications SET resent = $2 WHERE id = $1")
        .bind(id)
        .bind(marked)
        .execute(&mut *tx)
        .await
        .map_err(q("recording the resend"))?;
    tx.commit().await.map_err(q("marking drift to resend"))?;
    Ok(marked)
}

/// Records the run that sends verification `id`'s drift again.
pub async fn set_resend_run(pool: &PgPool, id: i64, run_id: i64) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_verifications SET resend_run_id = $2 WHERE id = $1")
        .bind(id)
        .bind(run_id)
        .execute(pool)
        .await
        .map_err(q("recording the resend run"))?;
    Ok(())
}

/// When `sync` was last verified by `trigger` (`schedule`, …).
pub async fn last_started(
    pool: &PgPool,
    sync: &str,
    trigger: &str,
) -> Result<Option<DateTime<Utc>>, StateError> {
    sqlx::query_scalar(
        "SELECT max(started_at) FROM ebb_verifications WHERE sync_name = $1 AND trigger = $2",
    )
    .bind(sync)
    .bind(trigger)
    .fetch_one(pool)
    .await
    .map_err(q("reading the last verification"))
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Verification, StateError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ebb_verifications WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(q("reading a verification"))?
    .ok_or(StateError::NoSuchVerification(id))
}

/// The newest verifications, of one sync or all, newest first.
pub async fn list(
    pool: &PgPool,
    sync: Option<&str>,
    limit: i64,
) -> Result<Vec<Verification>, StateError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ebb_verifications WHERE $1::text IS NULL OR sync_name = $1 \
         ORDER BY id DESC LIMIT $2"
    )))
    .bind(sync)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(q("listing verifications"))
}

/// Up to `limit` drifted records of verification `id`, by key.
pub async fn drift(pool: &PgPool, id: i64, limit: i64) -> Result<Vec<Drift>, StateError> {
    let rows: Vec<(String, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT record_key, kind, fields FROM ebb_verification_drift WHERE verification_id = $1 \
         ORDER BY record_key LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(q("reading drifted records"))?;
    Ok(rows
        .into_iter()
        .map(|(record_key, kind, fields)| Drift {
            record_key,
            kind: match kind.as_str() {
                "missing" => DriftKind::Missing,
                "different" => DriftKind::Different,
                _ => DriftKind::Extra,
            },
            fields: fields
                .and_then(|f| serde_json::from_value(f).ok())
                .unwrap_or_default(),
        })
        .collect())
}
