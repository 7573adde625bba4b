//! Putting a committed plan on the queue, and putting it back when the queue
//! lost it.

use std::time::Duration;

use apalis_redis::{ConnectionManager, RedisStorage};
use ebb_shared::config::{StateConfig, WorkerSettings};
use ebb_shared::error::QueueError;
use ebb_shared::queue::{self, WriteBatchTask};
use ebb_shared::state::runs;
use sqlx::PgPool;

use crate::error::PlannerError;

const PUSH_ATTEMPTS: u32 = 4;

/// The planner's handle on the task queue.
pub struct Queue {
    pub conn: ConnectionManager,
    pub storage: RedisStorage<WriteBatchTask>,
    pub state: StateConfig,
    pub worker: WorkerSettings,
}

impl Queue {
    pub async fn connect(
        state: &StateConfig,
        worker: &WorkerSettings,
    ) -> Result<Queue, QueueError> {
        let conn = queue::connect(state).await?;
        let storage = queue::storage(conn.clone(), state, worker, 1);
        Ok(Queue {
            conn,
            storage,
            state: state.clone(),
            worker: worker.clone(),
        })
    }

    /// See [`queue::epoch`].
    pub async fn epoch(&mut self) -> Result<String, QueueError> {
        queue::epoch(&mut self.conn, &self.state).await
    }

    pub async fn depth(&mut self) -> Result<queue::QueueDepth, QueueError> {
        queue::depth(&mut self.conn, &self.storage, &self.worker).await
    }

    /// Records the current epoch on the run, then pushes its batches.
    async fn push(
        &mut self,
        pool: &PgPool,
        run_id: i64,
        sync: &str,
        batches: &[i32],
    ) -> Result<(), PlannerError> {
        let epoch = self.epoch().await?;
        runs::set_queue_epoch(pool, run_id, &epoch).await?;
        queue::enqueue(&mut self.storage, tasks(run_id, sync, batches)).await?;
        Ok(())
    }
}

fn tasks(run_id: i64, sync: &str, batches: &[i32]) -> Vec<WriteBatchTask> {
    batches
        .iter()
        .map(|&batch_no| WriteBatchTask {
            run_id,
            batch_no,
            sync: sync.to_owned(),
        })
        .collect()
}

/// Enqueues every batch of a freshly planned run. If Redis stays unreachable
/// the run is failed: nothing unsent is marked delivered, and the next run
/// plans the same records again.
pub async fn enqueue_run(
    pool: &PgPool,
    queue: &mut Queue,
    run_id: i64,
    sync: &str,
    batches: &[i32],
) -> Result<(), PlannerError> {
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match queue.push(pool, run_id, sync, batches).await {
            Ok(()) => return Ok(()),
            Err(e @ PlannerError::Queue(_)) if attempt < PUSH_ATTEMPTS => {
                tracing::warn!(run_id, attempt, error = %e, "enqueue failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                runs::fail(
                    pool,
                    run_id,
                    &format!("could not enqueue the run's batches: {e}"),
                )
                .await?;
                return Err(e);
            }
        }
    }
}

/// Re-enqueues the unsettled batches of a run (after Redis lost them).
/// Duplicates are harmless: a worker skips settled batches and batches
/// another worker holds.
pub async fn requeue_unsettled(
    pool: &PgPool,
    queue: &mut Queue,
    run_id: i64,
    sync: &str,
) -> Result<usize, PlannerError> {
    let batches = runs::unsettled_batches(pool, run_id).await?;
    if !batches.is_empty() {
        queue.push(pool, run_id, sync, &batches).await?;
    }
    Ok(batches.len())
}
