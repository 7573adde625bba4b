//! Rebuilding lost queue work from Postgres. Redis is transport only; when
//! it loses tasks, the unsettled batches of running runs are pushed again.
//! Two signals:
//! - the queue's epoch changed (Redis lost its data: FLUSHALL, a restart
//!   without persistence): re-enqueue at once;
//! - a run's destination queue stayed empty for `requeue_after_secs` while
//!   the run is unsettled (a task lost some other way, e.g. dead-lettered by
//!   apalis): re-enqueue.
//!
//! Re-enqueued duplicates are harmless: a worker skips settled batches and
//! batches another worker holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use ebb_shared::state::runs::{self, Run};
use sqlx::PgPool;

use crate::enqueue::{Queue, requeue_unsettled};
use crate::error::PlannerError;

pub struct Watchdog {
    pub queue: Queue,
    requeue_after: Duration,
    /// Since when each running run's destination queue has looked idle.
    idle_since: HashMap<i64, Instant>,
}

/// What one check did.
#[derive(Debug, Default)]
pub struct Check {
    /// Workers alive on the checked runs' queues (the most on any one).
    pub live_workers: u64,
}

impl Watchdog {
    pub fn new(queue: Queue) -> Watchdog {
        let requeue_after = Duration::from_secs(queue.worker.requeue_after_secs);
        Watchdog {
            queue,
            requeue_after,
            idle_since: HashMap::new(),
        }
    }

    /// Checks the given runs once (runs that are not `running` are ignored).
    pub async fn check(&mut self, pool: &PgPool, runs: &[Run]) -> Result<Check, PlannerError> {
        let running: Vec<&Run> = runs.iter().filter(|r| r.state == "running").collect();
        self.idle_since
            .retain(|id, _| running.iter().any(|r| r.id == *id));
        let mut check = Check::default();
        let epoch = self.queue.epoch().await?;
        for run in running {
            let lost = match &run.queue_epoch {
                Some(recorded) => *recorded != epoch,
                // Planned but never pushed: the planner died in between, or
                // is pushing right now; give it `requeue_after` to finish.
                None => run.planned_at.is_none_or(|at| {
                    (Utc::now() - at).to_std().unwrap_or_default() >= self.requeue_after
                }),
            };
            if lost {
                let why = "the queue lost this run's tasks (Redis data lost, or never pushed)";
                self.requeue(pool, run, why).await?;
                continue;
            }
            let depth = self.queue.depth(&run.destination).await?;
            check.live_workers = check.live_workers.max(depth.live_workers);
            if depth.pending + depth.scheduled + depth.in_flight > 0 {
                self.idle_since.remove(&run.id);
                continue;
            }
            let since = *self.idle_since.entry(run.id).or_insert_with(Instant::now);
            if since.elapsed() >= self.requeue_after {
                let why = "the destination's queue held no task for the run's unsettled batches";
                self.requeue(pool, run, why).await?;
            }
        }
        Ok(check)
    }

    async fn requeue(&mut self, pool: &PgPool, run: &Run, why: &str) -> Result<(), PlannerError> {
        let batches = requeue_unsettled(pool, &mut self.queue, run.into()).await?;
        tracing::warn!(
            run_id = run.id,
            batches,
            "{why}; re-enqueued them from Postgres"
        );
        self.idle_since.remove(&run.id);
        Ok(())
    }

    /// Checks every running run of the state database.
    pub async fn check_all(&mut self, pool: &PgPool) -> Result<Check, PlannerError> {
        let running = runs::running(pool).await?;
        self.check(pool, &running).await
    }
}
