//! `ebb_runs`: sync and replay runs, created under the one-active-run-per-
//! sync lock, planned, counted as their batches settle, and finished when
//! the last one does; and the queries behind `ebb runs` and `/metrics`.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::error::StateError;
use crate::state::events::RunEvent;

/// A run's state (`ebb_runs.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Streaming and diffing the model; nothing is on the queue yet.
    Planning,
    /// Planned, but its plan crossed the sync's guardrails: nothing is on
    /// the queue until an operator approves it (or cancels it).
    Held,
    /// Its batches are on the queue (or should be).
    Running,
    /// Every record was delivered, rejected or superseded.
    Succeeded,
    /// Planning failed, or some records could not be delivered.
    Failed,
    /// An operator cancelled it: its unsent batches are not sent; what was
    /// sent stays in the ledger.
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Planning => "planning",
            RunState::Held => "held",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

impl TryFrom<String> for RunState {
    type Error = String;

    fn try_from(state: String) -> Result<Self, Self::Error> {
        match state.as_str() {
            "planning" => Ok(RunState::Planning),
            "held" => Ok(RunState::Held),
            "running" => Ok(RunState::Running),
            "succeeded" => Ok(RunState::Succeeded),
            "failed" => Ok(RunState::Failed),
            "cancelled" => Ok(RunState::Cancelled),
            other => Err(format!("`{other}` is not a run state")),
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub sync_name: String,
    pub destination: String,
    pub kind: String,
    pub trigger: String,
    pub mode: String,
    pub full_resync: bool,
    #[sqlx(try_from = "String")]
    pub state: RunState,
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
    /// Rows its plan read from the model (`None`: planned before Ebb kept it).
    pub rows_read: Option<i64>,
    /// Destination requests its plan expected, every answer a success.
    pub requests_planned: Option<i64>,
    /// Changed records its plan found flapping: back to a version one of
    /// the sync's recent runs delivered.
    pub flapping: i64,
    /// Task deliveries beyond the first, over all batches (worker crashes,
    /// lost acks, tasks re-enqueued after Redis lost them).
    pub redeliveries: i64,
    /// Batches quarantined as poison (see `[worker].max_deliveries`).
    pub quarantined_batches: i64,
    /// Its per-record outcomes were deleted after
    /// `[state].run_records_retention_days`; its totals remain.
    pub records_purged: bool,
    pub error: Option<String>,
    /// The Redis dataset its tasks were pushed into (see `queue::epoch`).
    pub queue_epoch: Option<String>,
    /// The W3C `traceparent` of its root span, when traces are on.
    pub traceparent: Option<String>,
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
        self.state.is_finished()
    }

    /// Records whose outcome is known (delivered, rejected, failed or superseded).
    pub fn settled_records(&self) -> i64 {
        self.delivered + self.rejected + self.failed + self.superseded
    }
}

const RUN_COLUMNS: &str = "id, sync_name, destination, kind, trigger, mode, full_resync, state, \
    planned_added, planned_changed, planned_removed, unchanged, skipped_by_mode, rejected_at_plan, \
    to_send, batches_total, batches_settled, delivered, rejected, failed, superseded, retries, \
    throttled, limiter_wait_ms, lookups_before_create, rows_read, requests_planned, flapping, \
    (SELECT COALESCE(sum(b.deliveries - 1), 0)::bigint FROM ebb_batches b \
     WHERE b.run_id = ebb_runs.id AND b.deliveries > 1) AS redeliveries, \
    (SELECT count(*) FROM ebb_batches b WHERE b.run_id = ebb_runs.id AND b.quarantined) AS quarantined_batches, \
    records_purged, error, queue_epoch, traceparent, created_at, planned_at, enqueued_at, progress_at, finished_at";

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

/// The channel a run's end is announced on (`NOTIFY`, the run's id as the
/// payload), sent when the transaction that ended it commits: `ebb run`
/// returns when the last batch settles instead of at its next look.
pub const ENDED_CHANNEL: &str = "ebb_run_ended";

/// `update`, an `UPDATE ebb_runs` that ends runs, made to announce each run
/// it changed on [`ENDED_CHANNEL`] in the same statement, whose rows are the
/// ended runs' new states. The announcement leaves when the transaction
/// commits, so a listener never hears of an end it cannot yet read, and
/// never of an UPDATE that matched nothing.
fn announcing(update: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "WITH ended AS ({update} RETURNING id, state) SELECT ended.state FROM ended \
         CROSS JOIN LATERAL pg_notify('{ENDED_CHANNEL}', ended.id::text)"
    ))
}

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
                "SELECT id, state FROM ebb_runs WHERE sync_name = $1 AND state IN ('planning', 'held', 'running')",
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
    sqlx::query(announcing(
        "UPDATE ebb_runs SET state = 'failed', error = $2, finished_at = now() \
         WHERE id = $1 AND state IN ('planning', 'running')",
    ))
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
    query(
        pool,
        &RunFilter {
            sync,
            limit,
            ..RunFilter::default()
        },
    )
    .await
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter<'a> {
    pub sync: Option<&'a str>,
    pub state: Option<RunState>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Only runs with a smaller id (the page after a cursor).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// The runs `filter` selects, newest first, with their events.
pub async fn query(pool: &PgPool, filter: &RunFilter<'_>) -> Result<Vec<Run>, StateError> {
    let mut runs = sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ebb_runs \
         WHERE ($1::text IS NULL OR sync_name = $1) AND ($2::text IS NULL OR state = $2) \
           AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at < $4) \
           AND ($5::bigint IS NULL OR id < $5) \
         ORDER BY id DESC LIMIT $6"
    )))
    .bind(filter.sync)
    .bind(filter.state.map(RunState::as_str))
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.before_id)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing runs"))?;
    with_events(pool, &mut runs).await?;
    Ok(runs)
}

/// Each sync's newest run that succeeded or failed, by sync name.
pub async fn latest_finished_by_sync(pool: &PgPool) -> Result<HashMap<String, Run>, StateError> {
    let runs = sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE id IN \
             (SELECT max(id) FROM ebb_runs WHERE state IN ('succeeded', 'failed') GROUP BY sync_name)"
    )))
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading each sync's last finished run"))?;
    Ok(runs.into_iter().map(|r| (r.sync_name.clone(), r)).collect())
}

/// Each sync's newest run and newest succeeded run, by sync name.
pub async fn latest_by_sync(
    pool: &PgPool,
) -> Result<HashMap<String, (Option<Run>, Option<Run>)>, StateError> {
    let newest = sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE id IN (SELECT max(id) FROM ebb_runs GROUP BY sync_name)"
    )))
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading each sync's last run"))?;
    let succeeded = sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM ebb_runs WHERE id IN \
             (SELECT max(id) FROM ebb_runs WHERE state = 'succeeded' GROUP BY sync_name)"
    )))
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading each sync's last successful run"))?;
    let mut by_sync: HashMap<String, (Option<Run>, Option<Run>)> = HashMap::new();
    for run in newest {
        let sync = run.sync_name.clone();
        by_sync.entry(sync).or_default().0 = Some(run);
    }
    for run in succeeded {
        let sync = run.sync_name.clone();
        by_sync.entry(sync).or_default().1 = Some(run);
    }
    Ok(by_sync)
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

/// Records the `traceparent` of a run's root span.
pub async fn set_traceparent(
    pool: &PgPool,
    run_id: i64,
    traceparent: &str,
) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_runs SET traceparent = $2 WHERE id = $1")
        .bind(run_id)
        .bind(traceparent)
        .execute(pool)
        .await
        .map_err(StateError::query("recording a run's trace"))?;
    Ok(())
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

/// What a plan found, as the run records it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlannedTotals {
    pub added: i64,
    pub changed: i64,
    pub removed: i64,
    pub unchanged: i64,
    pub skipped_by_mode: i64,
    pub rejected: i64,
    pub to_send: i64,
    pub batches: usize,
    /// `None` for a replay, which reads no model.
    pub rows_read: Option<i64>,
    /// The destination requests its batches take when every answer is a
    /// success (the plan's API-budget estimate).
    pub requests_planned: Option<i64>,
    /// Changed records whose version is one a recent run delivered.
    pub flapping: i64,
}

/// Records the plan's totals and moves the run to `running`, straight to
/// `succeeded` when there is nothing to send, or to `held` with `held`'s
/// reason in its `error`. `false` when the run is no longer planning (an
/// operator cancelled it meanwhile).
pub async fn mark_planned(
    tx: &mut PgConnection,
    run_id: i64,
    totals: &PlannedTotals,
    held: Option<&str>,
) -> Result<bool, StateError> {
    let marked = sqlx::query(
        "UPDATE ebb_runs SET planned_added = $2, planned_changed = $3, planned_removed = $4, unchanged = $5, \
             skipped_by_mode = $6, rejected_at_plan = $7, to_send = $8, batches_total = $9, planned_at = clock_timestamp(), \
             rows_read = $11, requests_planned = $12, flapping = $13, \
             state = CASE WHEN $10::text IS NOT NULL THEN 'held' WHEN $9 = 0 THEN 'succeeded' ELSE 'running' END, \
             error = $10, \
             finished_at = CASE WHEN $10::text IS NULL AND $9 = 0 THEN clock_timestamp() END \
         WHERE id = $1 AND state = 'planning'",
    )
    .bind(run_id)
    .bind(totals.added)
    .bind(totals.changed)
    .bind(totals.removed)
    .bind(totals.unchanged)
    .bind(totals.skipped_by_mode)
    .bind(totals.rejected)
    .bind(totals.to_send)
    .bind(totals.batches as i32)
    .bind(held)
    .bind(totals.rows_read)
    .bind(totals.requests_planned)
    .bind(totals.flapping)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("recording the plan"))?;
    Ok(marked.rows_affected() == 1)
}

/// Rows read by the plan of `sync`'s last successful run.
pub async fn last_succeeded_rows_read(
    pool: &PgPool,
    sync: &str,
) -> Result<Option<u64>, StateError> {
    let rows: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT rows_read FROM ebb_runs WHERE sync_name = $1 AND kind = 'sync' AND state = 'succeeded' \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(sync)
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("reading the rows of the last successful run"))?;
    Ok(rows.flatten().map(|n| n.max(0) as u64))
}

/// Releases a held run to be sent: `false` when it was not held.
pub async fn approve(pool: &PgPool, run_id: i64, by: &str) -> Result<bool, StateError> {
    let approved = sqlx::query(
        "UPDATE ebb_runs SET state = 'running', error = NULL, heartbeat_at = now() \
         WHERE id = $1 AND state = 'held'",
    )
    .bind(run_id)
    .execute(pool)
    .await
    .map_err(StateError::query("approving a held run"))?;
    if approved.rows_affected() == 1 {
        tracing::info!(run_id, by, "held run approved");
    }
    Ok(approved.rows_affected() == 1)
}

/// Records how many older DLQ entries a replay closed instead of sending.
pub async fn set_superseded(
    tx: &mut PgConnection,
    run_id: i64,
    superseded: i64,
) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_runs SET superseded = $2 WHERE id = $1")
        .bind(run_id)
        .bind(superseded)
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("recording superseded entries"))?;
    Ok(())
}

/// What one settled batch adds to its run.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchTotals {
    pub delivered: i64,
    pub rejected: i64,
    pub failed: i64,
    pub superseded: i64,
    pub retries: i64,
    pub throttled: i64,
    pub limiter_wait_ms: i64,
    pub lookups_before_create: i64,
}

/// Adds a settled batch to its run's totals; returns whether it was the
/// run's last batch.
pub async fn add_settled_batch(
    tx: &mut PgConnection,
    run_id: i64,
    totals: &BatchTotals,
) -> Result<bool, StateError> {
    let (batches_settled, batches_total): (i32, i32) = sqlx::query_as(
        "UPDATE ebb_runs SET batches_settled = batches_settled + 1, delivered = delivered + $2, \
             rejected = rejected + $3, failed = failed + $4, superseded = superseded + $5, retries = retries + $6, \
             throttled = throttled + $7, limiter_wait_ms = limiter_wait_ms + $8, \
             lookups_before_create = lookups_before_create + $9, progress_at = clock_timestamp() \
         WHERE id = $1 RETURNING batches_settled, batches_total",
    )
    .bind(run_id)
    .bind(totals.delivered)
    .bind(totals.rejected)
    .bind(totals.failed)
    .bind(totals.superseded)
    .bind(totals.retries)
    .bind(totals.throttled)
    .bind(totals.limiter_wait_ms)
    .bind(totals.lookups_before_create)
    .fetch_one(&mut *tx)
    .await
    .map_err(StateError::query("adding to the run's totals"))?;
    Ok(batches_settled >= batches_total)
}

/// Ends a run whose batches are all settled: `failed` when any record
/// failed, `succeeded` otherwise. A run that ended otherwise meanwhile (an
/// operator cancelled it) keeps its state; `None` then.
pub async fn finish(tx: &mut PgConnection, run_id: i64) -> Result<Option<RunState>, StateError> {
    let state: Option<String> = sqlx::query_scalar(announcing(
        "UPDATE ebb_runs SET finished_at = clock_timestamp(), \
             state = CASE WHEN failed > 0 THEN 'failed' ELSE 'succeeded' END, \
             error = CASE WHEN failed > 0 THEN failed || ' record(s) could not be delivered (see `ebb dlq list`)' END \
         WHERE id = $1 AND state = 'running'",
    ))
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StateError::query("finishing the run"))?;
    state
        .map(|state| {
            RunState::try_from(state).map_err(|e| StateError::Corrupt {
                context: "finishing the run",
                message: e,
            })
        })
        .transpose()
}

/// Cancels a planning, held or running run; `false` when it had already
/// ended.
pub async fn cancel(pool: &PgPool, run_id: i64, by: &str) -> Result<bool, StateError> {
    let cancelled: Option<String> = sqlx::query_scalar(announcing(
        "UPDATE ebb_runs SET state = 'cancelled', finished_at = now(), \
             error = 'cancelled by ' || $2 || '; its unsent batches were not sent' \
         WHERE id = $1 AND state IN ('planning', 'held', 'running')",
    ))
    .bind(run_id)
    .bind(by)
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("cancelling a run"))?;
    Ok(cancelled.is_some())
}

/// `(sync, active runs, open DLQ entries)` for every sync with either.
pub async fn activity_by_sync(pool: &PgPool) -> Result<Vec<(String, i64, i64)>, StateError> {
    sqlx::query_as(
        "SELECT sync_name, sum(active)::bigint, sum(open)::bigint FROM ( \
             SELECT sync_name, count(*) AS active, 0 AS open FROM ebb_runs \
             WHERE state IN ('planning', 'held', 'running') GROUP BY sync_name \
             UNION ALL \
             SELECT sync_name, 0, count(*) FROM ebb_dlq WHERE status = 'open' GROUP BY sync_name \
         ) t GROUP BY sync_name ORDER BY sync_name",
    )
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading metrics"))
}

/// What a destination's runs met at its limits since a moment.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct DestinationPressure {
    pub destination: String,
    pub runs: i64,
    /// Requests answered 429.
    pub throttled: i64,
    pub retries: i64,
    pub limiter_wait_ms: i64,
}

/// Each destination's 429s, retries and limiter waits over the runs
/// created since `since`, by destination name.
pub async fn pressure_since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<HashMap<String, DestinationPressure>, StateError> {
    let rows: Vec<DestinationPressure> = sqlx::query_as(
        "SELECT destination, count(*) AS runs, COALESCE(sum(throttled), 0)::bigint AS throttled, \
                COALESCE(sum(retries), 0)::bigint AS retries, \
                COALESCE(sum(limiter_wait_ms), 0)::bigint AS limiter_wait_ms \
         FROM ebb_runs WHERE created_at >= $1 GROUP BY destination",
    )
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading destinations' recent 429s"))?;
    Ok(rows
        .into_iter()
        .map(|p| (p.destination.clone(), p))
        .collect())
}
