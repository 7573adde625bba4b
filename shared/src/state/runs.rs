//! Sync runs: creation under the one-active-run-per-sync lock, and queries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::StateError;
use crate::state::events::RunEvent;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Run {
    pub id: i64,
    pub sync_name: String,
    pub destination: String,
    pub kind: String,
    pub trigger: String,
    pub mode: String,
    pub full_resync: bool,
    pub state: String,
    pub planned_added: i64,
    pub planned_changed: i64,
    pub planned_removed: i64,
    pub unchanged: i64,
    pub skipped_by_mode: i64,
    pub rejected_at_plan: i64,
    pub to_send: i64,
    pub batches_total: i32,
    pub batches_settled: i32,
    pub delivered: i64,
    pub rejected: i64,
    pub failed: i64,
    pub superseded: i64,
    /// Destination retries (429, 5xx, timeouts) of the attempts that settled.
    pub retries: i64,
    /// Requests the destination answered 429 (waited out, not retries).
    pub throttled: i64,
    /// Time spent waiting for the destination's limits, summed over requests.
    pub limiter_wait_ms: i64,
    /// Records searched for by match key before a create, because an earlier
    /// create of theirs had an unknown outcome (see `ebb_intents`).
    pub lookups_before_create: i64,
    /// Task deliveries beyond the first, over all batches (worker crashes,
    /// lost acks, tasks re-enqueued after Redis lost them).
    pub redeliveries: i64,
    /// Batches quarantined as poison (see `[worker].max_deliveries`).
    pub quarantined_batches: i64,
    pub error: Option<String>,
    /// The Redis dataset its tasks were pushed into (see `queue::epoch`).
    pub queue_epoch: Option<String>,
    pub created_at: DateTime<Utc>,
    pub planned_at: Option<DateTime<Utc>>,
    /// When the planner finished pushing the run's tasks.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When a batch of the run last settled.
    pub progress_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What happened to the run beside its records (see
    /// [`crate::state::events`]); filled by [`with_events`].
    #[sqlx(skip)]
    pub events: Vec<RunEvent>,
}

impl Run {
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed")
    }

    /// Records whose outcome is known (delivered, rejected, failed or superseded).
    pub fn settled_records(&self) -> i64 {
        self.delivered + self.rejected + self.failed + self.superseded
    }
}

const RUN_COLUMNS: &str = "id, sync_name, destination, kind, trigger, mode, full_resync, state, \
    planned_added, planned_changed, planned_removed, unchanged, skipped_by_mode, rejected_at_plan, \
    to_send, batches_total, batches_settled, delivered, rejected, failed, superseded, retries, \
    throttled, limiter_wait_ms, lookups_before_create, \
    (SELECT COALESCE(sum(b.deliveries - 1), 0)::bigint FROM ebb_batches b \
     WHERE b.run_id = ebb_runs.id AND b.deliveries > 1) AS redeliveries, \
    (SELECT count(*) FROM ebb_batches b WHERE b.run_id = ebb_runs.id AND b.quarantined) AS quarantined_batches, \
    error, queue_epoch, created_at, planned_at, enqueued_at, progress_at, finished_at";

/// What starts a run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub sync: &'a str,
    pub destination: &'a str,
    pub kind: &'a str,
    pub trigger: &'a str,
    pub mode: &'a str,
    pub full_resync: bool,
}

/// A planner that has not touched its `planning` run for this long is taken
/// to be dead; its run is failed so the sync can run again.
const STALE_PLANNING_SECS: i64 = 300;

/// Creates a run in state `planning`. Fails with [`StateError::RunActive`]
/// when the sync already has a planning or running run.
pub async fn start(pool: &PgPool, new: NewRun<'_>) -> Result<i64, StateError> {
    sqlx::query(
        "UPDATE ebb_runs SET state = 'failed', finished_at = now(), \
         error = 'planner stopped while planning (no heartbeat for 5 minutes); nothing was sent' \
         WHERE sync_name = $1 AND state = 'planning' AND heartbeat_at < now() - make_interval(secs => $2)",
    )
    .bind(new.sync)
    .bind(STALE_PLANNING_SECS as f64)
    .execute(pool)
    .await
    .map_err(StateError::query("failing a stale planning run"))?;

    let inserted = sqlx::query_scalar::<_, i64>(
        "INSERT INTO ebb_runs (sync_name, destination, kind, trigger, mode, full_resync, state) \
         VALUES ($1, $2, $3, $4, $5, $6, 'planning') RETURNING id",
    )
    .bind(new.sync)
    .bind(new.destination)
    .bind(new.kind)
    .bind(new.trigger)
    .bind(new.mode)
    .bind(new.full_resync)
    .fetch_one(pool)
    .await;
    match inserted {
        Ok(id) => Ok(id),
        Err(sqlx::Error::Database(db))
            if db.constraint() == Some("ebb_runs_one_active_per_sync") =>
        {
            let active = sqlx::query_as::<_, (i64, String)>(
                "SELECT id, state FROM ebb_runs WHERE sync_name = $1 AND state IN ('planning', 'running')",
            )
            .bind(new.sync)
            .fetch_optional(pool)
            .await
            .map_err(StateError::query("finding the active run"))?;
            let (run_id, state) = active.unwrap_or((0, "finishing".to_owned()));
            Err(StateError::RunActive {
                sync: new.sync.to_owned(),
                run_id,
                state,
            })
        }
        Err(e) => Err(StateError::query("creating a run")(e)),
    }
}

/// Keeps a `planning` run from being taken for dead during a long plan.
pub async fn heartbeat(pool: &PgPool, run_id: i64) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_runs SET heartbeat_at = now() WHERE id = $1")
        .bind(run_id)
        .execute(pool)
        .await
        .map_err(StateError::query("recording a planner heartbeat"))?;
    Ok(())
}

/// Ends a run as failed. Workers skip batches of failed runs, so nothing is
/// sent for it after this.
pub async fn fail(pool: &PgPool, run_id: i64, error: &str) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE ebb_runs SET state = 'failed', error = $2, finished_at = now() \
         WHERE id = $1 AND state IN ('planning', 'running')",
    )
    .bind(run_id)
    .bind(error)
    .execute(pool)
    .await
    .map_err(StateError::query("failing a run"))?;
    Ok(())
}

pub async fn get(pool: &PgPool, run_id: i64) -> Result<Run, StateError> {
    sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE id = $1"
    )))
    .bind(run_id)
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("reading a run"))?
    .ok_or(StateError::NoSuchRun(run_id))
}

/// The newest runs, with their events.
pub async fn list(pool: &PgPool, sync: Option<&str>, limit: i64) -> Result<Vec<Run>, StateError> {
    let mut runs = sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE ($1::text IS NULL OR sync_name = $1) ORDER BY id DESC LIMIT $2"
    )))
    .bind(sync)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing runs"))?;
    with_events(pool, &mut runs).await?;
    Ok(runs)
}

/// Fills each run's `events`.
pub async fn with_events(pool: &PgPool, runs: &mut [Run]) -> Result<(), StateError> {
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let events: Vec<(i64, DateTime<Utc>, String, String)> = sqlx::query_as(
        "SELECT run_id, at, kind, message FROM ebb_run_events WHERE run_id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading run events"))?;
    for (run_id, at, kind, message) in events {
        if let Some(run) = runs.iter_mut().find(|r| r.id == run_id) {
            run.events.push(RunEvent { at, kind, message });
        }
    }
    Ok(())
}

/// Runs whose batches are on the queue (or should be).
pub async fn running(pool: &PgPool) -> Result<Vec<Run>, StateError> {
    sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE state = 'running' ORDER BY id"
    )))
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing running runs"))
}

/// Records which Redis dataset a run's tasks are being pushed into. Written
/// before the push, so a loss right after it still shows as a changed epoch.
pub async fn set_queue_epoch(pool: &PgPool, run_id: i64, epoch: &str) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_runs SET queue_epoch = $2 WHERE id = $1")
        .bind(run_id)
        .bind(epoch)
        .execute(pool)
        .await
        .map_err(StateError::query("recording the queue epoch"))?;
    Ok(())
}

/// Records that all of a run's tasks are on the queue.
pub async fn set_enqueued(pool: &PgPool, run_id: i64) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_runs SET enqueued_at = now() WHERE id = $1")
        .bind(run_id)
        .execute(pool)
        .await
        .map_err(StateError::query("recording that a run was enqueued"))?;
    Ok(())
}

/// A pending batch that no worker holds a live claim on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnclaimedBatch {
    pub batch_no: i32,
    /// Since when no worker has held it: its last claim's expiry, or when
    /// the run was enqueued.
    pub unclaimed_since: Option<DateTime<Utc>>,
}

/// A run's pending batches that no worker holds a live claim on: waiting
/// in the queue, or lost from it.
pub async fn unclaimed_batches(
    pool: &PgPool,
    run_id: i64,
) -> Result<Vec<UnclaimedBatch>, StateError> {
    sqlx::query_as::<_, UnclaimedBatch>(
        "SELECT b.batch_no, COALESCE(b.lease_expires_at, r.enqueued_at, r.planned_at) AS unclaimed_since \
         FROM ebb_batches b JOIN ebb_runs r ON r.id = b.run_id \
         WHERE b.run_id = $1 AND b.state = 'pending' \
           AND (b.lease_expires_at IS NULL OR b.lease_expires_at < now()) \
         ORDER BY b.batch_no",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing unclaimed batches"))
}

/// Batches of a run that no worker has settled yet.
pub async fn unsettled_batches(pool: &PgPool, run_id: i64) -> Result<Vec<i32>, StateError> {
    sqlx::query_scalar::<_, i32>(
        "SELECT batch_no FROM ebb_batches WHERE run_id = $1 AND state = 'pending' ORDER BY batch_no",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing unsettled batches"))
}

/// Frees the per-run record copies once a run has ended; the ledger and the
/// DLQ keep what outlives the run.
pub async fn purge_records(pool: &PgPool, run_id: i64) -> Result<u64, StateError> {
    let done = sqlx::query(
        "DELETE FROM ebb_run_records rr USING ebb_runs r \
         WHERE rr.run_id = $1 AND r.id = rr.run_id AND r.state IN ('succeeded', 'failed')",
    )
    .bind(run_id)
    .execute(pool)
    .await
    .map_err(StateError::query("purging run records"))?;
    Ok(done.rows_affected())
}
