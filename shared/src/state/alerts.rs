//! `ebb_alert_incidents` and `ebb_alert_deliveries`: what is wrong with a
//! sync, per alert, and the messages that say so (an outbox: queued in the
//! transaction that opens or resolves the incident, delivered with retries).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::StateError;

/// What an incident is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// The sync's newest run failed.
    RunFailed,
    /// The sync's newest run rejected more records than the alert allows.
    Rejections,
    /// The sync has not succeeded for longer than the alert allows.
    NotSucceeded,
    /// The sync's newest run is held by a guardrail, waiting for an
    /// operator to approve or cancel it.
    RunHeld,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::RunFailed => "run_failed",
            IncidentKind::Rejections => "rejections",
            IncidentKind::NotSucceeded => "not_succeeded",
            IncidentKind::RunHeld => "run_held",
        }
    }

    fn from_stored(kind: &str) -> IncidentKind {
        match kind {
            "run_failed" => IncidentKind::RunFailed,
            "rejections" => IncidentKind::Rejections,
            "run_held" => IncidentKind::RunHeld,
            _ => IncidentKind::NotSucceeded,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: i64,
    pub alert: String,
    pub sync_name: String,
    pub kind: IncidentKind,
    pub detail: String,
    pub run_id: Option<i64>,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

type IncidentRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<i64>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
);

fn incident(row: IncidentRow) -> Incident {
    let (id, alert, sync_name, kind, detail, run_id, opened_at, resolved_at, resolution) = row;
    Incident {
        id,
        alert,
        sync_name,
        kind: IncidentKind::from_stored(&kind),
        detail,
        run_id,
        opened_at,
        resolved_at,
        resolution,
    }
}

const INCIDENT_COLUMNS: &str =
    "id, alert, sync_name, kind, detail, run_id, opened_at, resolved_at, resolution";

/// Opens an incident and queues its message, unless one is open already
/// (`false`).
pub async fn open(
    pool: &PgPool,
    alert: &str,
    sync: &str,
    kind: IncidentKind,
    detail: &str,
    run_id: Option<i64>,
) -> Result<bool, StateError> {
    let q = StateError::query;
    let mut tx = pool.begin().await.map_err(q("opening an incident"))?;
    let opened: Option<i64> = sqlx::query_scalar(
        "INSERT INTO ebb_alert_incidents (alert, sync_name, kind, detail, run_id) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (alert, sync_name, kind) WHERE resolved_at IS NULL DO NOTHING RETURNING id",
    )
    .bind(alert)
    .bind(sync)
    .bind(kind.as_str())
    .bind(detail)
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(q("opening an incident"))?;
    let Some(id) = opened else {
        return Ok(false);
    };
    queue(&mut tx, alert, id, "firing").await?;
    tx.commit().await.map_err(q("opening an incident"))?;
    Ok(true)
}

/// Resolves the open incident, if any, and queues its message; `false`
/// when none was open.
pub async fn resolve(
    pool: &PgPool,
    alert: &str,
    sync: &str,
    kind: IncidentKind,
    resolution: &str,
) -> Result<bool, StateError> {
    let q = StateError::query;
    let mut tx = pool.begin().await.map_err(q("resolving an incident"))?;
    let resolved: Option<i64> = sqlx::query_scalar(
        "UPDATE ebb_alert_incidents SET resolved_at = now(), resolution = $4 \
         WHERE alert = $1 AND sync_name = $2 AND kind = $3 AND resolved_at IS NULL RETURNING id",
    )
    .bind(alert)
    .bind(sync)
    .bind(kind.as_str())
    .bind(resolution)
    .fetch_optional(&mut *tx)
    .await
    .map_err(q("resolving an incident"))?;
    let Some(id) = resolved else {
        return Ok(false);
    };
    queue(&mut tx, alert, id, "resolved").await?;
    tx.commit().await.map_err(q("resolving an incident"))?;
    Ok(true)
}

async fn queue(
    tx: &mut sqlx::PgConnection,
    alert: &str,
    incident: i64,
    status: &str,
) -> Result<(), StateError> {
    sqlx::query(
        "INSERT INTO ebb_alert_deliveries (alert, incident_id, status) VALUES ($1, $2, $3)",
    )
    .bind(alert)
    .bind(incident)
    .bind(status)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("queueing an alert message"))?;
    Ok(())
}

/// A message to send: the incident it is about, opening or resolved.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub alert: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub attempts: i32,
    pub incident: Incident,
}

/// Messages due to be sent, oldest first.
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<Delivery>, StateError> {
    let rows: Vec<(i64, String, String, i32, i64)> = sqlx::query_as(
        "SELECT id, alert, status, attempts, incident_id FROM ebb_alert_deliveries \
         WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= now() \
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading due alert messages"))?;
    let mut due = Vec::with_capacity(rows.len());
    for (id, alert, status, attempts, incident_id) in rows {
        let row: IncidentRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {INCIDENT_COLUMNS} FROM ebb_alert_incidents WHERE id = $1"
        )))
        .bind(incident_id)
        .fetch_one(pool)
        .await
        .map_err(StateError::query("reading an incident"))?;
        due.push(Delivery {
            id,
            alert,
            status,
            attempts,
            incident: incident(row),
        });
    }
    Ok(due)
}

pub async fn delivered(pool: &PgPool, id: i64) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_alert_deliveries SET delivered_at = now(), attempts = attempts + 1 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(StateError::query("recording an alert message sent"))?;
    Ok(())
}

/// Records a failed attempt: tried again after `retry_in`, or given up.
pub async fn failed(
    pool: &PgPool,
    id: i64,
    error: &str,
    retry_in: Option<std::time::Duration>,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE ebb_alert_deliveries SET attempts = attempts + 1, last_error = $2, \
             next_attempt_at = now() + make_interval(secs => COALESCE($3, 0)), \
             given_up_at = CASE WHEN $3 IS NULL THEN now() END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(retry_in.map(|d| d.as_secs_f64()))
    .execute(pool)
    .await
    .map_err(StateError::query("recording an alert message that failed"))?;
    Ok(())
}

/// Incidents, newest first; open ones only unless `include_resolved`.
pub async fn incidents(
    pool: &PgPool,
    include_resolved: bool,
    limit: i64,
) -> Result<Vec<Incident>, StateError> {
    let rows: Vec<IncidentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM ebb_alert_incidents \
         WHERE $1 OR resolved_at IS NULL ORDER BY id DESC LIMIT $2"
    )))
    .bind(include_resolved)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing incidents"))?;
    Ok(rows.into_iter().map(incident).collect())
}
