//! A run's events: what happened to it beside its records (lost tasks
//! re-enqueued, batches taken over from a worker that went silent, poison
//! batches quarantined), so that a slow or odd run explains itself in
//! `ebb run` and `ebb runs --json`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::error::StateError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The planner re-enqueued batches whose tasks the queue had lost.
    Requeued,
    /// A worker took over a batch whose claim had run out: the worker that
    /// held it crashed, or was cut off from the state database.
    TakenOver,
    /// A worker lost its claim on a batch mid-delivery and stopped.
    ClaimLost,
    /// A batch that never settled was quarantined to the DLQ.
    Quarantined,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Requeued => "requeued",
            EventKind::TakenOver => "taken_over",
            EventKind::ClaimLost => "claim_lost",
            EventKind::Quarantined => "quarantined",
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunEvent {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

pub async fn record(
    db: impl PgExecutor<'_>,
    run_id: i64,
    kind: EventKind,
    message: &str,
) -> Result<(), StateError> {
    sqlx::query("INSERT INTO ebb_run_events (run_id, kind, message) VALUES ($1, $2, $3)")
        .bind(run_id)
        .bind(kind.as_str())
        .bind(message)
        .execute(db)
        .await
        .map_err(StateError::query("recording a run event"))?;
    Ok(())
}

/// A run's events, oldest first.
pub async fn of_run(pool: &PgPool, run_id: i64) -> Result<Vec<RunEvent>, StateError> {
    sqlx::query_as::<_, RunEvent>(
        "SELECT at, kind, message FROM ebb_run_events WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading a run's events"))
}
