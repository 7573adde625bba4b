//! One batch task, from claim to settle.
//!
//! A task's work runs on a task of its own (see [`write_batch`]), so that
//! nothing apalis does to its worker (a restart after a Redis error, a
//! shutdown) cancels a delivery half way. The work:
//! 1. claim the batch in Postgres (`claim`): a duplicate of the task waits
//!    while another worker holds it, and does nothing once it is settled;
//! 2. load its unsettled records and deliver them, outside any transaction,
//!    stopping if the claim is lost;
//! 3. settle in one short transaction that checks the claim (`settle`).
//!
//! Outcomes are committed only after the destination answered, so a crash
//! before the settle leaves the batch pending and a redelivery resends it:
//! nothing is marked delivered that was not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{RwLock, Semaphore};

use apalis::prelude::{BoxDynError, Data};
use ebb_shared::StateError;
use ebb_shared::queue::WriteBatchTask;
use ebb_shared::state::events::{self, EventKind};
use serde_json::value::RawValue;
use sqlx::PgPool;

use crate::claim::{self, Claim, ClaimAttempt};
use crate::error::WorkerError;
use crate::faults::{Faults, Point};
use crate::settle::{self, Settled};
use crate::targets::Targets;
use ebb_shared::destinations::record::{BatchContext, Op, OutboundRecord};
use ebb_shared::destinations::util::delivery::deliver;
use ebb_shared::destinations::util::outcome::RecordOutcome;

pub struct WorkerState {
    pub pool: PgPool,
    pub targets: Targets,
    /// This process's name in claims (pod name and a unique suffix).
    pub name: String,
    /// How long a claim on a batch lasts without renewal.
    pub claim_lease: Duration,
    /// Deliveries of one batch's task after which it is quarantined.
    pub max_deliveries: u32,
    pub faults: Faults,
    /// Held shared by batches delivered normally, exclusively by a batch
    /// taken over from a worker whose claim ran out (it may be what crashed
    /// that worker).
    pub solo: Arc<RwLock<()>>,
    /// Batches being worked on at once, per destination, in this process.
    /// apalis limits its own tasks; these also count work that outlived an
    /// apalis worker restart (see [`write_batch`]).
    pub slots: HashMap<String, Arc<Semaphore>>,
}

/// The apalis handler. The work runs on a task of its own: when apalis
/// drops this future (its worker is restarted after a Redis error, or shuts
/// down), the delivery goes on to its settle instead of being cut off, and
/// the redelivered task later finds the batch settled.
pub async fn write_batch(
    task: WriteBatchTask,
    state: Data<Arc<WorkerState>>,
) -> Result<(), BoxDynError> {
    let state: Arc<WorkerState> = Arc::clone(&state);
    let (run_id, batch_no) = (task.run_id, task.batch_no);
    let work = tokio::spawn(async move {
        let result = process(&state, &task).await;
        if let Err(e) = &result {
            tracing::error!(run_id = task.run_id, batch = task.batch_no, sync = %task.sync, error = %e, "batch not settled; it will be retried");
        }
        result
    });
    match work.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Box::new(e)),
        Err(crashed) => {
            let e = WorkerError::Crashed {
                run_id,
                batch_no,
                message: crashed.to_string(),
            };
            tracing::error!(run_id, batch = batch_no, error = %e, "batch not settled; it will be retried");
            Err(Box::new(e))
        }
    }
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
    let target = state
        .targets
        .for_sync(&task.sync)
        .ok_or_else(|| WorkerError::UnknownSync {
            run_id: task.run_id,
            batch_no: task.batch_no,
            sync: task.sync.clone(),
        })?;
    let _slot = match state.slots.get(&target.destination_name) {
        Some(slots) => slots.clone().acquire_owned().await.ok(),
        None => None,
    };
    let claim = loop {
        match claim::claim(&state.pool, task, &state.name, state.claim_lease).await? {
            ClaimAttempt::Held(claim) => break claim,
            ClaimAttempt::Nothing(why) => {
                tracing::debug!(
                    run_id = task.run_id,
                    batch = task.batch_no,
                    why,
                    "nothing to deliver"
                );
                return Ok(());
            }
            ClaimAttempt::HeldElsewhere { holder, retry_in } => {
                // Not acknowledged yet: should the holder die, this copy of
                // the task is what delivers the batch.
                tracing::debug!(run_id = task.run_id, batch = task.batch_no, %holder, "another worker holds this batch; waiting for it to settle or give it up");
                tokio::time::sleep(retry_in).await;
            }
        }
    };
    match deliver_claimed(state, target, task, &claim).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if !matches!(e, WorkerError::ClaimLost { .. }) {
                claim.release(&state.pool).await;
            }
            Err(e)
        }
    }
}

async fn deliver_claimed(
    state: &WorkerState,
    target: &crate::targets::SyncTarget,
    task: &WriteBatchTask,
    claim: &Claim,
) -> Result<(), WorkerError> {
    let q = StateError::query;
    // A batch whose last claim ran out may be what crashed its worker: run
    // it alone in this process, so that if it crashes again the delivery is
    // charged to it and not to innocent neighbours.
    let (_alone, _shared) = if claim.took_over.is_some() {
        (Some(state.solo.clone().write_owned().await), None)
    } else {
        (None, Some(state.solo.clone().read_owned().await))
    };
    // Counted once it runs: a batch waiting above for a suspect neighbour
    // is not charged for that neighbour's crash.
    let deliveries = claim
        .count_delivery(&state.pool)
        .await?
        .ok_or(WorkerError::ClaimLost {
            run_id: task.run_id,
            batch_no: task.batch_no,
        })?;
    if let Some(took_over) = &claim.took_over {
        let message = format!(
            "batch {}: worker `{}` stopped renewing its claim (it crashed, or lost the state database); \
             taken over {:.0} s after the claim ran out, delivery {deliveries}",
            task.batch_no,
            took_over.from,
            took_over.expired_for.as_secs_f64(),
        );
        tracing::warn!(run_id = task.run_id, batch = task.batch_no, "{message}");
        if let Err(e) =
            events::record(&state.pool, task.run_id, EventKind::TakenOver, &message).await
        {
            tracing::warn!(run_id = task.run_id, error = %e, "cannot record a run event");
        }
    }
    let started = Instant::now();
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
    .fetch_all(&state.pool)
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
    let delivery = deliver(target.target(), &ctx, &sendable, target.retry);
    let (outcomes, stats) = tokio::select! {
        delivered = delivery => delivered,
        () = claim.lost() => {
            let message = format!(
                "batch {}: worker `{}` lost its claim mid-delivery (it could not renew it in time); \
                 it stopped, and the batch is delivered again",
                task.batch_no, state.name
            );
            if let Err(e) = events::record(&state.pool, task.run_id, EventKind::ClaimLost, &message).await {
                tracing::warn!(run_id = task.run_id, error = %e, "cannot record a run event");
            }
            return Err(WorkerError::ClaimLost { run_id: task.run_id, batch_no: task.batch_no });
        }
    };
    let delivered_ms = started.elapsed().as_millis() as u64;
    state.faults.check(Point::AfterSend, keys);
    settled.extend(sendable.into_iter().map(|r| r.key).zip(outcomes));

    let mut tx = state.pool.begin().await.map_err(q("starting a settle"))?;
    let result = settle::settle(&mut tx, &ctx, claim.token, &settled, &stats).await?;
    if quarantine {
        sqlx::query(
            "UPDATE ebb_batches SET quarantined = true WHERE run_id = $1 AND batch_no = $2",
        )
        .bind(task.run_id)
        .bind(task.batch_no)
        .execute(&mut *tx)
        .await
        .map_err(q("quarantining a batch"))?;
        let message = format!(
            "batch {}: delivered {} times without settling; its {} records were quarantined to the DLQ",
            task.batch_no,
            deliveries,
            settled.len()
        );
        events::record(&mut *tx, task.run_id, EventKind::Quarantined, &message).await?;
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
