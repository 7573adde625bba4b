//! Rebuilding lost queue work from Postgres. Redis is transport only; when
//! it loses tasks, the unsettled batches of running runs are pushed again.
//! Three checks, on every running run:
//! - the queue's epoch changed (Redis lost its data: FLUSHALL, a restart
//!   without persistence): re-enqueue every unsettled batch at once;
//! - the run was planned but its tasks were never all pushed (its planner
//!   died mid-push): re-enqueue after `requeue_after_secs`;
//! - every `requeue_after_secs`, per destination queue: a pending batch
//!   that no worker holds a live claim on and that the queue no longer has
//!   (not waiting, not scheduled, not fetched by any registered worker) has
//!   lost its task some other way (dead-lettered by apalis, dropped with a
//!   crashed worker's state): re-enqueue just those batches. This works
//!   while other runs keep the queue busy, and costs one read of the
//!   queue's task ids per destination per interval.
//!
//! Each re-enqueue is recorded as a run event, so the run's summary says
//! why it was slow. Re-enqueued duplicates are harmless: a worker skips
//! settled batches and waits out batches another worker holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use ebb_shared::state::batches;
use ebb_shared::state::events::{self, EventKind};
use ebb_shared::state::runs::{self, Run, RunState};
use sqlx::PgPool;

use crate::enqueue::{Queue, requeue, requeue_unsettled};
use crate::error::PlannerError;

pub struct Watchdog {
    pub queue: Queue,
    requeue_after: Duration,
    /// When each destination's queue was last searched for lost tasks.
    scanned: HashMap<String, Instant>,
}

/// What one check did.
#[derive(Debug, Default)]
pub struct Check {
    /// Workers alive on the checked runs' queues (the most on any one).
    pub live_workers: u64,
    /// Batches re-enqueued by this check.
    pub requeued: usize,
}

impl Watchdog {
    pub fn new(queue: Queue) -> Watchdog {
        let requeue_after = Duration::from_secs(queue.worker.requeue_after_secs.max(1));
        Watchdog {
            queue,
            requeue_after,
            scanned: HashMap::new(),
        }
    }

    /// Checks the given runs once (runs that are not `running` are ignored).
    pub async fn check(&mut self, pool: &PgPool, runs: &[Run]) -> Result<Check, PlannerError> {
        let mut check = Check::default();
        let epoch = self.queue.epoch().await?;
        let mut to_scan: HashMap<&str, Vec<&Run>> = HashMap::new();
        for run in runs.iter().filter(|r| r.state == RunState::Running) {
            if run.queue_epoch.as_ref().is_some_and(|e| *e != epoch) {
                let batches = requeue_unsettled(pool, &mut self.queue, run.into()).await?;
                let why = format!(
                    "the queue lost this run's tasks (Redis lost its data); re-enqueued its {batches} unsettled batches"
                );
                self.note(pool, run, &why).await;
                check.requeued += batches;
                continue;
            }
            if run.queue_epoch.is_none() || run.enqueued_at.is_none() {
                // Planned but not (all) pushed: the planner died in between,
                // or is pushing right now; give it `requeue_after` to finish.
                let since = run.planned_at.unwrap_or(run.created_at);
                let waited = (Utc::now() - since).to_std().unwrap_or_default();
                if waited >= self.requeue_after {
                    let batches = requeue_unsettled(pool, &mut self.queue, run.into()).await?;
                    let why = format!(
                        "the run's tasks were never all pushed (its planner stopped); re-enqueued its {batches} unsettled batches {:.0} s after planning",
                        waited.as_secs_f64()
                    );
                    self.note(pool, run, &why).await;
                    check.requeued += batches;
                }
                continue;
            }
            let depth = self.queue.depth(&run.destination).await?;
            check.live_workers = check.live_workers.max(depth.live_workers);
            to_scan
                .entry(run.destination.as_str())
                .or_default()
                .push(run);
        }
        for (destination, runs) in to_scan {
            let due = self
                .scanned
                .get(destination)
                .is_none_or(|at| at.elapsed() >= self.requeue_after);
            if !due {
                continue;
            }
            self.scanned.insert(destination.to_owned(), Instant::now());
            check.requeued += self.requeue_lost(pool, destination, &runs).await?;
        }
        Ok(check)
    }

    /// Re-enqueues the batches of `runs` that lost their tasks.
    async fn requeue_lost(
        &mut self,
        pool: &PgPool,
        destination: &str,
        runs: &[&Run],
    ) -> Result<usize, PlannerError> {
        // The queue is read before Postgres: a task that leaves the queue
        // in between was acknowledged, which a worker does only after
        // settling its batch or releasing it to a retry (back on the queue).
        let queued = self.queue.queued_batches(destination).await?;
        let mut requeued = 0;
        for run in runs {
            let unclaimed = batches::unclaimed(pool, run.id).await?;
            let lost: Vec<_> = unclaimed
                .iter()
                .filter(|b| !queued.contains(&(run.id, b.batch_no)))
                .collect();
            if lost.is_empty() {
                continue;
            }
            let batches: Vec<i32> = lost.iter().map(|b| b.batch_no).collect();
            requeue(pool, &mut self.queue, (*run).into(), &batches).await?;
            let waited = lost
                .iter()
                .filter_map(|b| b.unclaimed_since)
                .min()
                .map(|since| (Utc::now() - since).to_std().unwrap_or_default())
                .unwrap_or_default();
            let why = format!(
                "{} batch task(s) were lost from the queue (not waiting, not scheduled, and held by no worker): \
                 batches {}; re-enqueued them, {:.0} s after they were last held or enqueued",
                batches.len(),
                list(&batches),
                waited.as_secs_f64()
            );
            self.note(pool, run, &why).await;
            requeued += batches.len();
        }
        Ok(requeued)
    }

    async fn note(&self, pool: &PgPool, run: &Run, why: &str) {
        tracing::warn!(run_id = run.id, sync = %run.sync_name, "{why}");
        if let Err(e) = events::record(pool, run.id, EventKind::Requeued, why).await {
            tracing::warn!(run_id = run.id, error = %e, "cannot record a run event");
        }
    }

    /// Checks every running run of the state database.
    pub async fn check_all(&mut self, pool: &PgPool) -> Result<Check, PlannerError> {
        let running = runs::running(pool).await?;
        self.check(pool, &running).await
    }
}

/// `1, 2, 5` or `1, 2, 5, … (40 in all)`.
fn list(batches: &[i32]) -> String {
    const SHOWN: usize = 10;
    let shown: Vec<String> = batches.iter().take(SHOWN).map(i32::to_string).collect();
    if batches.len() > SHOWN {
        format!("{}, … ({} in all)", shown.join(", "), batches.len())
    } else {
        shown.join(", ")
    }
}
