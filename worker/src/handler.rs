//! One batch task, from lock to commit.
//!
//! The whole batch runs inside one state-database transaction that first
//! takes a transaction-scoped advisory lock on `(run, batch)`: a duplicate
//! delivery of the task (normal with apalis-redis) finds the lock taken or the
//! batch settled and does nothing. Outcomes are committed in that same
//! transaction only after the destination answered, so a crash before the
//! commit leaves the batch pending and a redelivery resends it: nothing is
//! marked delivered that was not.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::RwLock;

use apalis::prelude::{BoxDynError, Data};
use ebb_shared::StateError;
use ebb_shared::queue::WriteBatchTask;
use serde_json::value::RawValue;
use sqlx::PgPool;

use crate::batch::{BatchContext, Op, OutboundRecord};
use crate::destinations::Registry;
use crate::destinations::util::delivery::deliver;
use crate::destinations::util::outcome::RecordOutcome;
use crate::error::WorkerError;
use crate::faults::{Faults, Point};
use crate::settle::{self, Settled};

pub struct WorkerState {
    pub pool: PgPool,
    pub registry: Registry,
    /// Deliveries of one batch's task after which it is quarantined.
    pub max_deliveries: u32,
    pub faults: Faults,
    /// Held shared by first deliveries, exclusively by redeliveries.
    pub solo: RwLock<()>,
}

/// The apalis handler.
pub async fn write_batch(
    task: WriteBatchTask,
    state: Data<Arc<WorkerState>>,
) -> Result<(), BoxDynError> {
    match process(&state, &task).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(run_id = task.run_id, batch = task.batch_no, sync = %task.sync, error = %e, "batch not settled; it will be retried");
            Err(Box::new(e))
        }
    }
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    batch_state: String,
    run_state: String,
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    record_key: String,
    op: String,
    payload: Option<String>,
    content_hash: Option<Vec<u8>>,
    snapshot_run_id: i64,
    stale: bool,
    destination_id: Option<String>,
}

pub async fn process(state: &WorkerState, task: &WriteBatchTask) -> Result<(), WorkerError> {
    let q = StateError::query;
    let target = state
        .registry
        .for_sync(&task.sync)
        .ok_or_else(|| WorkerError::UnknownSync {
            run_id: task.run_id,
            batch_no: task.batch_no,
            sync: task.sync.clone(),
        })?;
    // A batch that did not settle on an earlier delivery may be what crashed
    // its worker: run it alone in this process, so that if it crashes again
    // the delivery is charged to it and not to innocent neighbours.
    let earlier: Option<i32> = sqlx::query_scalar(
        "SELECT deliveries FROM ebb_batches WHERE run_id = $1 AND batch_no = $2 AND state = 'pending'",
    )
    .bind(task.run_id)
    .bind(task.batch_no)
    .fetch_optional(&state.pool)
    .await
    .map_err(q("reading a batch's deliveries"))?;
    // Held until the batch is settled.
    let (_alone, _shared) = match earlier {
        Some(n) if n > 0 => {
            tracing::info!(
                run_id = task.run_id,
                batch = task.batch_no,
                earlier_deliveries = n,
                "redelivered batch; running it alone in this worker"
            );
            (Some(state.solo.write().await), None)
        }
        _ => (None, Some(state.solo.read().await)),
    };
    let started = Instant::now();
    let mut tx = state.pool.begin().await.map_err(q("starting a batch"))?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1::int4, $2)")
        .bind((task.run_id % i32::MAX as i64) as i32)
        .bind(task.batch_no)
        .fetch_one(&mut *tx)
        .await
        .map_err(q("locking a batch"))?;
    if !locked {
        tracing::debug!(
            run_id = task.run_id,
            batch = task.batch_no,
            "another worker holds this batch; skipping duplicate task"
        );
        return Ok(());
    }
    let batch: Option<BatchRow> = sqlx::query_as(
        "SELECT b.state AS batch_state, r.state AS run_state FROM ebb_batches b JOIN ebb_runs r ON r.id = b.run_id \
         WHERE b.run_id = $1 AND b.batch_no = $2",
    )
    .bind(task.run_id)
    .bind(task.batch_no)
    .fetch_optional(&mut *tx)
    .await
    .map_err(q("reading a batch"))?;
    let Some(batch) = batch else {
        tracing::warn!(
            run_id = task.run_id,
            batch = task.batch_no,
            "task for an unknown batch; dropping it"
        );
        return Ok(());
    };
    if batch.batch_state == "settled" {
        return Ok(());
    }
    if batch.run_state != "running" {
        tracing::info!(run_id = task.run_id, batch = task.batch_no, run_state = %batch.run_state, "run is not running; batch skipped");
        return Ok(());
    }
    // Counted on the pool, not in `tx`: a crash before commit must still
    // count, or a task that kills its worker would loop forever.
    let deliveries: i32 = sqlx::query_scalar(
        "UPDATE ebb_batches SET deliveries = deliveries + 1 WHERE run_id = $1 AND batch_no = $2 \
         RETURNING deliveries",
    )
    .bind(task.run_id)
    .bind(task.batch_no)
    .fetch_one(&state.pool)
    .await
    .map_err(q("counting a batch delivery"))?;
    let quarantine = deliveries > state.max_deliveries as i32;

    // `stale`: the ledger holds a newer version than this one (a replay of an
    // old DLQ entry); sending it would overwrite newer data. A scalar
    // subquery, so it stays one index lookup per record: a join here
    // sometimes got a generic plan that hashed the whole ledger.
    let rows: Vec<RecordRow> = sqlx::query_as(
        "SELECT rr.record_key, rr.op, rr.payload::text AS payload, rr.content_hash, rr.snapshot_run_id, \
                COALESCE((SELECT l.snapshot_run_id > rr.snapshot_run_id FROM ebb_ledger l \
                          WHERE l.sync_name = $3 AND l.record_key = rr.record_key), false) AS stale, \
                (SELECT l.destination_id FROM ebb_ledger l \
                 WHERE l.sync_name = $3 AND l.record_key = rr.record_key) AS destination_id \
         FROM ebb_run_records rr \
         WHERE rr.run_id = $1 AND rr.batch_no = $2 AND rr.outcome IS NULL \
         ORDER BY rr.record_key",
    )
    .bind(task.run_id)
    .bind(task.batch_no)
    .bind(&task.sync)
    .fetch_all(&mut *tx)
    .await
    .map_err(q("loading a batch's records"))?;

    let mut settled = Vec::with_capacity(rows.len());
    let mut sendable = Vec::with_capacity(rows.len());
    if quarantine {
        tracing::error!(
            run_id = task.run_id, batch = task.batch_no, sync = %task.sync, deliveries,
            "poison batch: delivered too often without settling; quarantining its records to the DLQ"
        );
        let reason = format!(
            "quarantined: the batch's task was delivered {deliveries} times without settling \
             (a worker crashed on it or settling kept failing; see the worker logs); \
             replay with `ebb dlq replay` once the cause is fixed"
        );
        settled.extend(rows.iter().map(|row| {
            (
                row.record_key.clone(),
                RecordOutcome::Failed(reason.clone()),
            )
        }));
    }
    let rows = if quarantine { Vec::new() } else { rows };
    for row in rows {
        if row.stale {
            settled.push((row.record_key, RecordOutcome::Superseded));
            continue;
        }
        let op = if row.op == "delete" {
            Op::Delete
        } else {
            Op::Upsert
        };
        let fields = match row.payload.map(RawValue::from_string).transpose() {
            Ok(fields) => fields,
            Err(e) => {
                settled.push((
                    row.record_key,
                    RecordOutcome::Rejected(format!("stored payload is not JSON: {e}")),
                ));
                continue;
            }
        };
        sendable.push(OutboundRecord {
            key: row.record_key,
            op,
            fields,
            version: row.content_hash.as_deref().map(ebb_shared::hex::encode),
            snapshot_run_id: row.snapshot_run_id,
            destination_id: row.destination_id,
        });
    }
    let ctx = BatchContext {
        sync: task.sync.clone(),
        destination: target.destination_name.clone(),
        run_id: task.run_id,
        batch_no: task.batch_no,
    };
    let keys = || sendable.iter().map(|r| r.key.as_str()).collect();
    state.faults.check(Point::BeforeSend, keys);
    let loaded_ms = started.elapsed().as_millis() as u64;
    let (outcomes, stats) = deliver(target.target(), &ctx, &sendable, target.retry).await;
    let delivered_ms = started.elapsed().as_millis() as u64;
    state.faults.check(Point::AfterSend, keys);
    settled.extend(sendable.into_iter().map(|r| r.key).zip(outcomes));

    let result = settle::settle(&mut tx, &ctx, &settled, &stats).await?;
    if quarantine {
        sqlx::query(
            "UPDATE ebb_batches SET quarantined = true WHERE run_id = $1 AND batch_no = $2",
        )
        .bind(task.run_id)
        .bind(task.batch_no)
        .execute(&mut *tx)
        .await
        .map_err(q("quarantining a batch"))?;
    }
    state.faults.check(Point::BeforeCommit, || {
        settled.iter().map(|(k, _)| k.as_str()).collect()
    });
    tx.commit().await.map_err(q("committing a batch"))?;
    tracing::info!(
        run_id = task.run_id, batch = task.batch_no, sync = %task.sync,
        delivered = result.delivered, rejected = result.rejected, failed = result.failed,
        requests = stats.requests, retries = stats.retries, splits = stats.splits,
        throttled = stats.throttled, limiter_wait_ms = stats.limiter_wait.as_millis() as u64,
        load_ms = loaded_ms, send_ms = delivered_ms - loaded_ms,
        settle_ms = started.elapsed().as_millis() as u64 - delivered_ms,
        "batch settled"
    );
    if let Settled {
        run_finished: Some(run_state),
        ..
    } = &result
    {
        tracing::info!(run_id = task.run_id, sync = %task.sync, state = %run_state, "run finished");
        if let Err(e) = ebb_shared::state::runs::purge_records(&state.pool, task.run_id).await {
            tracing::warn!(run_id = task.run_id, error = %e, "could not purge the finished run's records");
        }
    }
    Ok(())
}
