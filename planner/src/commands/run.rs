//! `ebb run SYNC`: plan, enqueue, wait, summarize. Also used for DLQ replays.

use serde::Serialize;
use tracing::Instrument;

use ebb_shared::state::dlq::{self, DlqEntry, DlqFilter};
use ebb_shared::state::records;
use ebb_shared::state::runs::{self, Run};

use crate::context::Context;
use crate::enqueue::{Queue, RunRef, enqueue_run};
use crate::error::PlannerError;
use crate::plan::{PlanRejection, PlannedRun};
use crate::progress::Waiter;
use crate::watchdog::Watchdog;

use super::one_line;

/// How many DLQ entries a summary shows.
const DLQ_SAMPLE: usize = 5;

#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub run: Run,
    pub plan_rejections: Vec<PlanRejection>,
    pub dlq_sample: Vec<DlqEntry>,
    pub open_dlq_entries: i64,
}

/// Puts a planned run's batches on the queue; a run whose queue cannot be
/// reached is failed (nothing was sent). Returns the queue connection.
pub async fn enqueue(ctx: &Context, planned: &PlannedRun) -> Result<Queue, PlannerError> {
    let mut queue = match ctx.queue().await {
        Ok(q) => q,
        Err(e) => {
            runs::fail(
                &ctx.pool,
                planned.run_id,
                &format!("queue unreachable: {e}"),
            )
            .await?;
            return Err(e);
        }
    };
    if !planned.batches.is_empty() {
        let run = RunRef {
            id: planned.run_id,
            sync: &planned.report.sync,
            destination: &planned.report.destination,
            traceparent: planned.traceparent.as_deref(),
        };
        enqueue_run(&ctx.pool, &mut queue, run, &planned.batches)
            .instrument(tracing::info_span!(parent: &planned.span, "ebb.enqueue", batches = planned.batches.len()))
            .await?;
    }
    Ok(queue)
}

/// Enqueues a planned run and waits for the workers to settle it.
pub async fn enqueue_and_wait(
    ctx: &Context,
    planned: PlannedRun,
    quiet: bool,
) -> Result<RunSummary, PlannerError> {
    let queue = enqueue(ctx, &planned).await?;
    let mut waiter = Waiter {
        pool: &ctx.pool,
        watchdog: Watchdog::new(queue),
        quiet,
    };
    let run = waiter.wait(planned.run_id).await?;
    records::release_payloads(&ctx.pool, run.id).await?;
    summarize(ctx, run, planned.report.rejections).await
}

async fn summarize(
    ctx: &Context,
    mut run: Run,
    plan_rejections: Vec<PlanRejection>,
) -> Result<RunSummary, PlannerError> {
    runs::with_events(&ctx.pool, std::slice::from_mut(&mut run)).await?;
    let entries = dlq::list(
        &ctx.pool,
        &DlqFilter {
            sync: Some(&run.sync_name),
            limit: 1000,
            ..DlqFilter::default()
        },
    )
    .await?;
    let dlq_sample = entries
        .into_iter()
        .filter(|e| e.last_run_id == run.id && e.stage == "destination")
        .take(DLQ_SAMPLE)
        .collect();
    let open_dlq_entries = dlq::count_open(&ctx.pool, Some(&run.sync_name)).await?;
    Ok(RunSummary {
        run,
        plan_rejections,
        dlq_sample,
        open_dlq_entries,
    })
}

pub fn print_summary(summary: &RunSummary) {
    let r = &summary.run;
    let secs = r
        .finished_at
        .map(|f| (f - r.created_at).num_milliseconds() as f64 / 1000.0)
        .unwrap_or_default();
    println!();
    println!(
        "run #{} {} `{}` → `{}` ({} mode{}): {} in {secs:.1}s",
        r.id,
        if r.kind == "replay" {
            "replaying DLQ of"
        } else {
            "of sync"
        },
        r.sync_name,
        r.destination,
        r.mode,
        if r.full_resync { ", full resync" } else { "" },
        r.state.as_str().to_uppercase()
    );
    if r.kind == "sync" {
        println!(
            "  planned    {} added, {} changed, {} removed, {} unchanged, {} skipped by mode{}{}",
            r.planned_added,
            r.planned_changed,
            r.planned_removed,
            r.unchanged,
            r.skipped_by_mode,
            r.rows_read
                .map(|n| format!(", of {n} rows read"))
                .unwrap_or_default(),
            r.requests_planned
                .filter(|&n| n > 0)
                .map(|n| format!("; about {n} requests"))
                .unwrap_or_default()
        );
        if r.flapping > 0 {
            println!(
                "  flapping   {} changed records went back to a version a recent run delivered; is the model stable? (the planner logs their keys)",
                r.flapping
            );
        }
    }
    println!(
        "  sent       {} delivered, {} rejected to the DLQ, {} failed{}",
        r.delivered,
        r.rejected,
        r.failed,
        if r.superseded > 0 {
            format!(", {} superseded by newer versions", r.superseded)
        } else {
            String::new()
        }
    );
    if r.retries + r.throttled + r.redeliveries + r.quarantined_batches + r.lookups_before_create
        > 0
        || r.limiter_wait_ms >= 1000
    {
        println!(
            "  cost       {} retries, {} throttled (429), {} task redeliveries, {} quarantined batches, \
             {} lookups before create; {:.1}s waiting for destination limits",
            r.retries,
            r.throttled,
            r.redeliveries,
            r.quarantined_batches,
            r.lookups_before_create,
            r.limiter_wait_ms as f64 / 1000.0
        );
    }
    for event in &r.events {
        let since_start = (event.at - r.created_at).num_milliseconds() as f64 / 1000.0;
        println!(
            "  recovery   at {since_start:.0}s: {}",
            one_line(&event.message, 160)
        );
    }
    if r.rejected_at_plan > 0 {
        println!(
            "  rejected   {} rows at planning (NULL or duplicate keys, text that is not UTF-8, records over max_record_bytes), in the DLQ",
            r.rejected_at_plan
        );
        for rej in summary.plan_rejections.iter().take(DLQ_SAMPLE) {
            println!(
                "             {:<16} {}",
                rej.record_key.as_deref().unwrap_or("(NULL)"),
                one_line(&rej.reason, 90)
            );
        }
    }
    if let Some(error) = &r.error {
        println!("  error      {error}");
    }
    if !summary.dlq_sample.is_empty() {
        println!(
            "  dead letters from this run (first {}):",
            summary.dlq_sample.len()
        );
        for e in &summary.dlq_sample {
            println!(
                "    #{:<6} key {:<16} {}",
                e.id,
                e.record_key.as_deref().unwrap_or("(NULL)"),
                one_line(&e.reason, 90)
            );
        }
    }
    if summary.open_dlq_entries > 0 {
        println!(
            "  {} open DLQ entries for this sync: `ebb dlq list --sync {}`, then `ebb dlq replay --sync {}`",
            summary.open_dlq_entries, r.sync_name, r.sync_name
        );
    }
}
