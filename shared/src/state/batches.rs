//! `ebb_batches`: a run's batches, each claimed by one worker at a time
//! (token, holder, lease), counted per delivery, and settled once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::StateError;

/// A batch's state (`ebb_batches.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Not settled yet: waiting, claimed or lost.
    Pending,
    /// Its outcomes are committed.
    Settled,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Pending => "pending",
            BatchState::Settled => "settled",
        }
    }

    fn from_stored(state: &str) -> BatchState {
        if state == "settled" {
            BatchState::Settled
        } else {
            BatchState::Pending
        }
    }
}

/// One `ebb_batches` row per batch number of the run's records. Returns the
/// batch numbers.
pub async fn create_for_run(tx: &mut PgConnection, run_id: i64) -> Result<Vec<i32>, StateError> {
    sqlx::query_scalar::<_, i32>(
        "INSERT INTO ebb_batches (run_id, batch_no, record_count) \
         SELECT $1, batch_no, count(*) FROM ebb_run_records WHERE run_id = $1 GROUP BY batch_no \
         RETURNING batch_no",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(StateError::query("writing the run's batches"))
}

/// One `ebb_batches` row per batch of a run whose records the planner
/// numbered itself: batch `i` holds `record_counts[i]` records. Returns
/// the batch numbers.
pub async fn create_counted(
    tx: &mut PgConnection,
    run_id: i64,
    record_counts: &[i32],
) -> Result<Vec<i32>, StateError> {
    sqlx::query_scalar::<_, i32>(
        "INSERT INTO ebb_batches (run_id, batch_no, record_count) \
         SELECT $1, (n - 1)::int, c FROM unnest($2::int[]) WITH ORDINALITY AS t(c, n) \
         RETURNING batch_no",
    )
    .bind(run_id)
    .bind(record_counts)
    .fetch_all(&mut *tx)
    .await
    .map_err(StateError::query("writing the run's batches"))
}

/// A claim just taken: what held the batch before.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    /// The previous claim ran out instead of being released or settled.
    pub took_over: bool,
    pub previous_holder: Option<String>,
    /// How long ago the previous claim ran out.
    pub expired_for_secs: Option<f64>,
}

/// Claims a pending batch of a running run for `lease`, when no live claim
/// holds it. `None`: see [`standing`].
pub async fn claim(
    pool: &PgPool,
    run_id: i64,
    batch_no: i32,
    token: Uuid,
    holder: &str,
    lease: Duration,
) -> Result<Option<Claimed>, StateError> {
    sqlx::query_as(
        "WITH previous AS ( \
             SELECT b.run_id, b.batch_no, b.claim_token IS NOT NULL AS took_over, b.claimed_by, \
                    EXTRACT(EPOCH FROM now() - b.lease_expires_at)::float8 AS expired_for_secs \
             FROM ebb_batches b JOIN ebb_runs r ON r.id = b.run_id \
             WHERE b.run_id = $1 AND b.batch_no = $2 AND b.state = 'pending' AND r.state = 'running' \
               AND (b.lease_expires_at IS NULL OR b.lease_expires_at < now()) \
             FOR UPDATE OF b) \
         UPDATE ebb_batches b SET claim_token = $3, claimed_by = $4, claimed_at = now(), \
             lease_expires_at = now() + make_interval(secs => $5) \
         FROM previous WHERE b.run_id = previous.run_id AND b.batch_no = previous.batch_no \
         RETURNING previous.took_over, previous.claimed_by AS previous_holder, \
                   previous.expired_for_secs",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(token)
    .bind(holder)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("claiming a batch"))
}

/// Where a batch that could not be claimed stands.
#[derive(Debug)]
pub struct Standing {
    pub batch: BatchState,
    pub run_running: bool,
    pub claimed_by: Option<String>,
    /// How long the live claim still lasts.
    pub live_for: Duration,
}

pub async fn standing(
    pool: &PgPool,
    run_id: i64,
    batch_no: i32,
) -> Result<Option<Standing>, StateError> {
    let row: Option<(String, String, Option<String>, Option<f64>)> = sqlx::query_as(
        "SELECT b.state, r.state, b.claimed_by, \
                EXTRACT(EPOCH FROM b.lease_expires_at - now())::float8 \
         FROM ebb_batches b JOIN ebb_runs r ON r.id = b.run_id \
         WHERE b.run_id = $1 AND b.batch_no = $2",
    )
    .bind(run_id)
    .bind(batch_no)
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("reading a batch's claim"))?;
    Ok(row.map(|(batch, run, claimed_by, live_for_secs)| Standing {
        batch: BatchState::from_stored(&batch),
        run_running: run == "running",
        claimed_by,
        live_for: Duration::from_secs_f64(live_for_secs.unwrap_or(0.0).max(0.0)),
    }))
}

/// Extends a claim by `lease` from now; `false` when the claim is no
/// longer `token`'s.
pub async fn renew(
    pool: &PgPool,
    run_id: i64,
    batch_no: i32,
    token: Uuid,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE ebb_batches SET lease_expires_at = now() + make_interval(secs => $4) \
         WHERE run_id = $1 AND batch_no = $2 AND claim_token = $3 AND state = 'pending'",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(token)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a batch back unsettled, so its next task can claim it at once.
pub async fn release(
    pool: &PgPool,
    run_id: i64,
    batch_no: i32,
    token: Uuid,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE ebb_batches SET claim_token = NULL, lease_expires_at = NULL \
         WHERE run_id = $1 AND batch_no = $2 AND claim_token = $3 AND state = 'pending'",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(token)
    .execute(pool)
    .await
    .map_err(StateError::query("releasing the claim on a batch"))?;
    Ok(())
}

/// Counts a delivery of a claimed batch; returns the deliveries so far,
/// this one included (`None`: the claim is no longer `token`'s).
pub async fn count_delivery(
    pool: &PgPool,
    run_id: i64,
    batch_no: i32,
    token: Uuid,
) -> Result<Option<i32>, StateError> {
    sqlx::query_scalar(
        "UPDATE ebb_batches SET deliveries = deliveries + 1 \
         WHERE run_id = $1 AND batch_no = $2 AND claim_token = $3 AND state = 'pending' \
         RETURNING deliveries",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(token)
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("counting a batch's delivery"))
}

/// Locks the batch's row for the settle; `true` when it is still pending
/// and claimed by `token`. A second settle of the batch waits on the lock,
/// then finds the batch settled and the claim gone.
pub async fn lock_claimed(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
    token: Uuid,
) -> Result<bool, StateError> {
    let ours: Option<bool> = sqlx::query_scalar(
        "SELECT claim_token IS NOT DISTINCT FROM $3 AND state = 'pending' FROM ebb_batches \
         WHERE run_id = $1 AND batch_no = $2 FOR UPDATE",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(token)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StateError::query("checking the claim on a batch"))?;
    Ok(ours == Some(true))
}

/// Marks a batch settled and its claim released.
pub async fn mark_settled(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE ebb_batches SET state = 'settled', settled_at = clock_timestamp(), \
             claim_token = NULL, lease_expires_at = NULL WHERE run_id = $1 AND batch_no = $2",
    )
    .bind(run_id)
    .bind(batch_no)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("settling a batch"))?;
    Ok(())
}

/// Marks a batch quarantined: delivered too often without settling.
pub async fn mark_quarantined(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_batches SET quarantined = true WHERE run_id = $1 AND batch_no = $2")
        .bind(run_id)
        .bind(batch_no)
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("quarantining a batch"))?;
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
pub async fn unclaimed(pool: &PgPool, run_id: i64) -> Result<Vec<UnclaimedBatch>, StateError> {
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
pub async fn unsettled(pool: &PgPool, run_id: i64) -> Result<Vec<i32>, StateError> {
    sqlx::query_scalar::<_, i32>(
        "SELECT batch_no FROM ebb_batches WHERE run_id = $1 AND state = 'pending' ORDER BY batch_no",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("listing unsettled batches"))
}
