//! Putting a committed plan on the queue, and putting it back when the queue
//! lost it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use apalis_redis::{ConnectionManager, RedisStorage};
use ebb_shared::config::{StateConfig, WorkerSettings};
use ebb_shared::error::QueueError;
use ebb_shared::queue::{self, WriteBatchTask};
use ebb_shared::state::batches;
use ebb_shared::state::runs::{self, Run};
use sqlx::PgPool;

use crate::error::PlannerError;

const PUSH_ATTEMPTS: u32 = 4;

/// The planner's handle on the task queues (one per destination).
pub struct Queue {
    pub conn: ConnectionManager,
    storages: HashMap<String, RedisStorage<WriteBatchTask>>,
    pub state: StateConfig,
    pub worker: WorkerSettings,
}

/// Which run, of which sync, writing to which destination (whose queue
/// carries its tasks).
#[derive(Debug, Clone, Copy)]
pub struct RunRef<'a> {
    pub id: i64,
    pub sync: &'a str,
    pub destination: &'a str,
    /// Its root span's W3C `traceparent`, carried by each task.
    pub traceparent: Option<&'a str>,
}

impl<'a> From<&'a Run> for RunRef<'a> {
    fn from(run: &'a Run) -> Self {
        RunRef {
            id: run.id,
            sync: &run.sync_name,
            destination: &run.destination,
            traceparent: run.traceparent.as_deref(),
        }
    }
}

impl Queue {
    pub async fn connect(
        state: &StateConfig,
        worker: &WorkerSettings,
    ) -> Result<Queue, QueueError> {
        let conn = queue::connect(state).await?;
        Ok(Queue {
            conn,
            storages: HashMap::new(),
            state: state.clone(),
            worker: worker.clone(),
        })
    }

    fn storage(&mut self, destination: &str) -> &mut RedisStorage<WriteBatchTask> {
        self.storages
            .entry(destination.to_owned())
            .or_insert_with(|| {
                queue::storage(self.conn.clone(), &self.state, &self.worker, destination)
            })
    }

    /// See [`queue::epoch`].
    pub async fn epoch(&mut self) -> Result<String, QueueError> {
        queue::epoch(&mut self.conn, &self.state).await
    }

    /// Depth of one destination's queue.
    pub async fn depth(&mut self, destination: &str) -> Result<queue::QueueDepth, QueueError> {
        let mut conn = self.conn.clone();
        let worker = self.worker.clone();
        queue::depth(&mut conn, self.storage(destination), &worker).await
    }

    /// The `(run, batch)` of every task a destination's queue holds
    /// (waiting, scheduled, or fetched by a registered worker).
    pub async fn queued_batches(
        &mut self,
        destination: &str,
    ) -> Result<HashSet<(i64, i32)>, QueueError> {
        let mut conn = self.conn.clone();
        let config = self.storage(destination).get_config().clone();
        queue::queued_batches(&mut conn, &config).await
    }

    /// Records the current epoch on the run, pushes its batches, then
    /// records that they are all on the queue.
    async fn push(
        &mut self,
        pool: &PgPool,
        run: RunRef<'_>,
        batches: &[i32],
    ) -> Result<(), PlannerError> {
        let epoch = self.epoch().await?;
        runs::set_queue_epoch(pool, run.id, &epoch).await?;
        let tasks = tasks(run, batches);
        queue::enqueue(self.storage(run.destination), tasks).await?;
        runs::set_enqueued(pool, run.id).await?;
        Ok(())
    }
}

fn tasks(run: RunRef<'_>, batches: &[i32]) -> Vec<WriteBatchTask> {
    batches
        .iter()
        .map(|&batch_no| WriteBatchTask {
            run_id: run.id,
            batch_no,
            sync: run.sync.to_owned(),
            traceparent: run.traceparent.map(str::to_owned),
        })
        .collect()
}

/// Enqueues every batch of a freshly planned run. If Redis stays unreachable
/// the run is failed: nothing unsent is marked delivered, and the next run
/// plans the same records again.
pub async fn enqueue_run(
    pool: &PgPool,
    queue: &mut Queue,
    run: RunRef<'_>,
    batches: &[i32],
) -> Result<(), PlannerError> {
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match queue.push(pool, run, batches).await {
            Ok(()) => return Ok(()),
            Err(e @ PlannerError::Queue(_)) if attempt < PUSH_ATTEMPTS => {
                tracing::warn!(run_id = run.id, attempt, error = %e, "enqueue failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                runs::fail(
                    pool,
                    run.id,
                    &format!("could not enqueue the run's batches: {e}"),
                )
                .await?;
                return Err(e);
            }
        }
    }
}

/// Re-enqueues the unsettled batches of a run (after Redis lost them).
/// Duplicates are harmless: a worker skips settled batches and waits out
/// batches another worker holds.
pub async fn requeue_unsettled(
    pool: &PgPool,
    queue: &mut Queue,
    run: RunRef<'_>,
) -> Result<usize, PlannerError> {
    let batches = batches::unsettled(pool, run.id).await?;
    requeue(pool, queue, run, &batches).await?;
    Ok(batches.len())
}

/// Re-enqueues some batches of a run (whose tasks the queue lost).
pub async fn requeue(
    pool: &PgPool,
    queue: &mut Queue,
    run: RunRef<'_>,
    batches: &[i32],
) -> Result<(), PlannerError> {
    if !batches.is_empty() {
        queue.push(pool, run, batches).await?;
    }
    Ok(())
}
