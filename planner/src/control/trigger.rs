//! Starting a run from outside the CLI's own `ebb run` (which plans and
//! waits in the foreground): the API starts it and answers at once, a
//! schedule or an upstream sync starts it in `ebb serve`. Either way the run
//! records its trigger, is planned, and its batches go on the queue.

use std::sync::Arc;

use ebb_shared::config::SyncConfig;
use ebb_shared::state::idempotency;
use ebb_shared::state::runs::{self, Run};
use tracing::Instrument;

use crate::context::Context;
use crate::enqueue::{RunRef, enqueue_run};
use crate::error::PlannerError;
use crate::plan;

/// A retried trigger's key, scoped to its caller.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    pub caller: &'a str,
    pub key: &'a str,
}

/// A run a trigger asked for.
#[derive(Debug)]
pub struct Started {
    pub run: Run,
    /// An earlier trigger with the same idempotency key started it; this one
    /// started nothing.
    pub replayed: bool,
}

/// Creates a run of `sync` now (so the caller gets its id) and plans and
/// enqueues it in the background. With `idempotency`, a trigger retried
/// with the same key returns the run the first one started.
pub async fn start_in_background(
    ctx: &Arc<Context>,
    sync: &SyncConfig,
    full_resync: bool,
    trigger: &str,
    idempotency: Option<IdempotencyKey<'_>>,
) -> Result<Started, PlannerError> {
    let (run_id, replayed) = match idempotency {
        None => (
            plan::start_run(&ctx.pool, sync, full_resync, trigger).await?,
            false,
        ),
        Some(key) => {
            let mut tx = ctx
                .pool
                .begin()
                .await
                .map_err(ebb_shared::StateError::query("starting a trigger"))?;
            match idempotency::claim(&mut tx, key.caller, key.key).await? {
                Some(run_id) => (run_id, true),
                None => {
                    let run_id = plan::start_run(&ctx.pool, sync, full_resync, trigger).await?;
                    idempotency::remember(&mut tx, key.caller, key.key, run_id).await?;
                    tx.commit()
                        .await
                        .map_err(ebb_shared::StateError::query("committing a trigger"))?;
                    (run_id, false)
                }
            }
        }
    };
    if !replayed {
        let ctx = ctx.clone();
        let sync = sync.clone();
        tokio::spawn(async move {
            if let Err(e) = plan_and_enqueue(&ctx, &sync, full_resync, run_id).await {
                tracing::error!(run_id, sync = %sync.name, error = %e, "run failed before its batches were queued");
            }
        });
    }
    let run = runs::get(&ctx.pool, run_id).await?;
    Ok(Started { run, replayed })
}

/// Creates, plans and enqueues a run of `sync`, in this task; returns its id.
pub async fn run_now(
    ctx: &Context,
    sync: &SyncConfig,
    full_resync: bool,
    trigger: &str,
) -> Result<i64, PlannerError> {
    let run_id = plan::start_run(&ctx.pool, sync, full_resync, trigger).await?;
    plan_and_enqueue(ctx, sync, full_resync, run_id).await?;
    Ok(run_id)
}

/// Plans a started run and puts its batches on the queue. A run whose
/// batches could not be pushed is still `running`: the watchdog enqueues
/// them once the queue answers.
async fn plan_and_enqueue(
    ctx: &Context,
    sync: &SyncConfig,
    full_resync: bool,
    run_id: i64,
) -> Result<(), PlannerError> {
    let planned = plan::plan_started(&ctx.config, &ctx.pool, sync, full_resync, run_id).await?;
    if planned.batches.is_empty() {
        return Ok(());
    }
    let mut queue = ctx.queue().await?;
    let run = RunRef {
        id: planned.run_id,
        sync: &sync.name,
        destination: &sync.destination,
        traceparent: planned.traceparent.as_deref(),
    };
    enqueue_run(&ctx.pool, &mut queue, run, &planned.batches)
        .instrument(tracing::info_span!(parent: &planned.span, "ebb.enqueue", batches = planned.batches.len()))
        .await?;
    Ok(())
}

/// Releases a run a guardrail held: it becomes `running` and its batches go
/// on the queue. A conflict when the run is not held.
pub async fn approve(ctx: &Context, run_id: i64, by: &str) -> Result<Run, PlannerError> {
    let run = runs::get(&ctx.pool, run_id).await?;
    if !runs::approve(&ctx.pool, run_id, by).await? {
        return Err(PlannerError::Conflict(format!(
            "run #{run_id} is not held ({}); only a held run can be approved",
            run.state
        )));
    }
    let batches = ebb_shared::state::batches::unsettled(&ctx.pool, run_id).await?;
    let mut queue = ctx.queue().await?;
    let reference = RunRef {
        id: run_id,
        sync: &run.sync_name,
        destination: &run.destination,
        traceparent: run.traceparent.as_deref(),
    };
    enqueue_run(&ctx.pool, &mut queue, reference, &batches).await?;
    Ok(runs::get(&ctx.pool, run_id).await?)
}
