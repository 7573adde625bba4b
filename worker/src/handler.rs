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

use apalis::prelude::{BoxDynError, Data};
use ebb_shared::StateError;
use ebb_shared::destinations::record::{BatchContext, Op, OutboundRecord};
use ebb_shared::destinations::util::delivery::{DeliveryStats, deliver};
use ebb_shared::destinations::util::field_digest;
use ebb_shared::destinations::util::outcome::RecordOutcome;
use ebb_shared::queue::WriteBatchTask;
use ebb_shared::state::events::{self, EventKind};
use ebb_shared::state::{batches, records};
use ebb_shared::telemetry::metrics;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::PgPool;
use tokio::sync::{RwLock, Semaphore};
use tracing::Instrument;

use crate::claim::{self, Claim, ClaimAttempt};
use crate::error::WorkerError;
use crate::faults::{Faults, Point};
use crate::settle::{self, Delivery, Settled};
use crate::targets::{SyncTarget, Targets};

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
    // Joins the run's trace, whose root span is the planner's.
    let span = tracing::info_span!(
        "ebb.batch",
        run_id,
        batch = batch_no,
        sync = %task.sync,
        worker = %state.name,
        trace_id = tracing::field::Empty,
    );
    ebb_shared::telemetry::continue_trace(&span, task.traceparent.as_deref());
    let work = tokio::spawn(
        async move {
            let result = process(&state, &task).await;
            if let Err(e) = &result {
                tracing::error!(run_id = task.run_id, batch = task.batch_no, sync = %task.sync, error = %e, "batch not settled; it will be retried");
            }
            result
        }
        .instrument(span),
    );
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
    let Some(claim) = claim_batch(state, task).await? else {
        return Ok(());
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

/// Claims the batch, waiting while another worker holds it; `None` when
/// there is nothing to deliver (settled, or its run ended).
async fn claim_batch(
    state: &WorkerState,
    task: &WriteBatchTask,
) -> Result<Option<Claim>, WorkerError> {
    loop {
        match claim::claim(&state.pool, task, &state.name, state.claim_lease).await? {
            ClaimAttempt::Held(claim) => return Ok(Some(claim)),
            ClaimAttempt::Nothing(why) => {
                tracing::debug!(
                    run_id = task.run_id,
                    batch = task.batch_no,
                    why,
                    "nothing to deliver"
                );
                return Ok(None);
            }
            ClaimAttempt::HeldElsewhere { holder, retry_in } => {
                // Not acknowledged yet: should the holder die, this copy of
                // the task is what delivers the batch.
                tracing::debug!(run_id = task.run_id, batch = task.batch_no, %holder, "another worker holds this batch; waiting for it to settle or give it up");
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

async fn deliver_claimed(
    state: &WorkerState,
    target: &SyncTarget,
    task: &WriteBatchTask,
    claim: &Claim,
) -> Result<(), WorkerError> {
    // A batch whose last claim ran out may be what crashed its worker: run
    // it alone in this process, so that if it crashes again the delivery is
    // charged to it and not to innocent neighbours.
    let (_alone, _shared) = if claim.took_over.is_some() {
        (Some(state.solo.clone().write_owned().await), None)
    } else {
        (None, Some(state.solo.clone().read_owned().await))
    };
    let deliveries = count_delivery(state, task, claim).await?;
    let started = Instant::now();
    let quarantine = deliveries > state.max_deliveries as i32;
    let Loaded {
        mut settled,
        sendable,
        digests,
        new_keys_only,
    } = load(state, target, task, quarantine, deliveries)
        .instrument(tracing::info_span!("ebb.batch.load"))
        .await?;
    let ctx = BatchContext {
        sync: task.sync.clone(),
        destination: target.destination_name.clone(),
        run_id: task.run_id,
        batch_no: task.batch_no,
        new_keys_only,
    };
    let keys = || sendable.iter().map(|r| r.key.as_str()).collect();
    state.faults.check(Point::BeforeSend, keys);
    let deletes_sent = sendable.iter().any(|r| r.op == Op::Delete);
    let loaded_ms = started.elapsed().as_millis() as u64;
    let (outcomes, stats) = send(state, target, task, claim, &ctx, &sendable).await?;
    let delivered_ms = started.elapsed().as_millis() as u64;
    state.faults.check(Point::AfterSend, keys);
    settled.extend(sendable.into_iter().map(|r| r.key).zip(outcomes));

    let digests: Vec<(&str, &[u8])> = digests
        .iter()
        .map(|(key, digest)| (key.as_str(), digest.as_slice()))
        .collect();
    let delivery = Delivery {
        outcomes: &settled,
        digests: &digests,
        stats: &stats,
        deletes_sent,
    };
    let result = commit(state, &ctx, claim, &delivery, quarantine, deliveries)
        .instrument(tracing::info_span!(
            "ebb.batch.settle",
            records = settled.len()
        ))
        .await?;
    tracing::info!(
        run_id = task.run_id, batch = task.batch_no, sync = %task.sync,
        delivered = result.delivered, rejected = result.rejected, failed = result.failed,
        requests = stats.requests, retries = stats.retries, splits = stats.splits,
        throttled = stats.throttled, limiter_wait_ms = stats.limiter_wait.as_millis() as u64,
        load_ms = loaded_ms, send_ms = delivered_ms - loaded_ms,
        settle_ms = started.elapsed().as_millis() as u64 - delivered_ms,
        "batch settled"
    );
    metrics::batch_settled(&metrics::BatchReport {
        sync: &task.sync,
        destination: &target.destination_name,
        records: &[
            ("delivered", result.delivered as u64),
            ("rejected", result.rejected as u64),
            ("failed", result.failed as u64),
            ("superseded", result.superseded as u64),
        ],
        requests: &stats.answers.by_class(),
        retries: stats.retries,
        limiter_wait: stats.limiter_wait,
        duration: started.elapsed(),
    });
    if let Some(run_state) = result.run_finished {
        tracing::info!(run_id = task.run_id, sync = %task.sync, state = %run_state, "run finished");
        let duration = match ebb_shared::state::runs::get(&state.pool, task.run_id).await {
            Ok(run) => run
                .finished_at
                .and_then(|f| (f - run.created_at).to_std().ok()),
            Err(_) => None,
        };
        metrics::run_ended(&task.sync, run_state.as_str(), duration);
        if let Err(e) = records::release_payloads(&state.pool, task.run_id).await {
            tracing::warn!(run_id = task.run_id, error = %e, "could not release the finished run's payloads");
        }
    }
    Ok(())
}

/// Counts the delivery as it starts (a batch that waited for a suspect
/// neighbour is not charged for that neighbour's crash), and records a
/// takeover as a run event.
async fn count_delivery(
    state: &WorkerState,
    task: &WriteBatchTask,
    claim: &Claim,
) -> Result<i32, WorkerError> {
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
    Ok(deliveries)
}

/// A batch's unsettled records, as [`load`] found them.
struct Loaded {
    /// Settled without sending: superseded by a newer delivered version,
    /// an unreadable payload, all of a quarantined batch.
    settled: Vec<(String, RecordOutcome)>,
    sendable: Vec<OutboundRecord>,
    /// The field digest of each upsert, by key, for the ledger once it is
    /// delivered (destinations that take partial updates).
    digests: Vec<(String, Vec<u8>)>,
    /// No key of the batch is in the ledger (see `BatchContext`).
    new_keys_only: bool,
}

/// The batch's unsettled records: those settled without sending, and those
/// to send, each update by id with the fields it writes.
async fn load(
    state: &WorkerState,
    target: &SyncTarget,
    task: &WriteBatchTask,
    quarantine: bool,
    deliveries: i32,
) -> Result<Loaded, WorkerError> {
    let rows =
        records::unsettled_of_batch(&state.pool, task.run_id, task.batch_no, &task.sync).await?;
    let mut settled = Vec::with_capacity(rows.len());
    let mut sendable = Vec::with_capacity(rows.len());
    let mut digests = Vec::new();
    let new_keys_only = !rows.iter().any(|row| row.in_ledger);
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
        settled.extend(
            rows.into_iter()
                .map(|row| (row.record_key, RecordOutcome::Failed(reason.clone()))),
        );
        return Ok(Loaded {
            settled,
            sendable,
            digests,
            new_keys_only,
        });
    }
    for row in rows {
        if row.stale {
            settled.push((row.record_key, RecordOutcome::Superseded));
            continue;
        }
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
        let mut update_fields = None;
        if target.destination.takes_partial_updates()
            && let Some(map) = fields
                .as_ref()
                .and_then(|f| serde_json::from_str::<Map<String, Value>>(f.get()).ok())
        {
            if row.destination_id.is_some() {
                let delivered = row.field_digest.as_deref().filter(|_| !row.full_resync);
                update_fields = Some(fields_to_update(delivered, &map, &target.on_create_only));
            }
            digests.push((row.record_key.clone(), field_digest::digest(&map)));
        }
        sendable.push(OutboundRecord {
            key: row.record_key,
            op: Op::from_stored(&row.op),
            fields,
            version: row.content_hash.as_deref().map(ebb_shared::hex::encode),
            snapshot_run_id: row.snapshot_run_id,
            destination_id: row.destination_id,
            update_fields,
        });
    }
    Ok(Loaded {
        settled,
        sendable,
        digests,
        new_keys_only,
    })
}

/// The fields an update by id of a record writes: those whose values
/// changed since the version delivered (`delivered`: its digest; all of
/// them without one, as on a full resync), without the sync's
/// `on_create_only` fields.
fn fields_to_update(
    delivered: Option<&[u8]>,
    fields: &Map<String, Value>,
    on_create_only: &[String],
) -> Vec<String> {
    let changed = delivered.and_then(|digest| field_digest::changed(digest, fields));
    let mut names = changed.unwrap_or_else(|| fields.keys().cloned().collect());
    names.retain(|name| !on_create_only.contains(name));
    names
}

/// Delivers the records, outside any transaction; stops when the claim is
/// lost, so that two workers never deliver one batch at the same time.
async fn send(
    state: &WorkerState,
    target: &SyncTarget,
    task: &WriteBatchTask,
    claim: &Claim,
    ctx: &BatchContext,
    sendable: &[OutboundRecord],
) -> Result<(Vec<RecordOutcome>, DeliveryStats), WorkerError> {
    tokio::select! {
        delivered = deliver(target.target(), ctx, sendable, target.retry) => Ok(delivered),
        () = claim.lost() => {
            let message = format!(
                "batch {}: worker `{}` lost its claim mid-delivery (it could not renew it in time); \
                 it stopped, and the batch is delivered again",
                task.batch_no, state.name
            );
            if let Err(e) = events::record(&state.pool, task.run_id, EventKind::ClaimLost, &message).await {
                tracing::warn!(run_id = task.run_id, error = %e, "cannot record a run event");
            }
            Err(WorkerError::ClaimLost { run_id: task.run_id, batch_no: task.batch_no })
        }
    }
}

/// Settles the outcomes in one short transaction that checks the claim.
async fn commit(
    state: &WorkerState,
    ctx: &BatchContext,
    claim: &Claim,
    delivery: &Delivery<'_>,
    quarantine: bool,
    deliveries: i32,
) -> Result<Settled, WorkerError> {
    let q = StateError::query;
    let mut tx = state.pool.begin().await.map_err(q("starting a settle"))?;
    let settled = delivery.outcomes;
    let result = settle::settle(&mut tx, ctx, claim.token, delivery).await?;
    if quarantine {
        batches::mark_quarantined(&mut tx, ctx.run_id, ctx.batch_no).await?;
        let message = format!(
            "batch {}: delivered {deliveries} times without settling; its {} records were quarantined to the DLQ",
            ctx.batch_no,
            settled.len()
        );
        events::record(&mut *tx, ctx.run_id, EventKind::Quarantined, &message).await?;
    }
    state.faults.check(Point::BeforeCommit, || {
        settled.iter().map(|(k, _)| k.as_str()).collect()
    });
    tx.commit().await.map_err(q("committing a batch"))?;
    Ok(result)
}
