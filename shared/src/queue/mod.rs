//! The Redis task queues (apalis-redis), one per destination, so that a slow
//! or throttled destination fills only its own queue and its own worker
//! slots, never the others'. They carry only `(run, batch)` references;
//! everything needed to redo the work lives in Postgres, so a lost queue is
//! rebuilt from `ebb_batches`.
//!
//! `maintenance.rs` holds what Ebb does to the queue beside apalis-redis:
//! promoting due tasks in chunks, finding the batches a queue still holds,
//! and forgetting finished tasks.

mod maintenance;

pub use maintenance::{forget_finished, promote_due, queued_batches};

use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_redis::{ConnectionManager, RedisStorage};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::config::{StateConfig, WorkerSettings};
use crate::error::QueueError;
use crate::secret::redact_url;

/// A task: "deliver batch `batch_no` of run `run_id`".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteBatchTask {
    pub run_id: i64,
    pub batch_no: i32,
    pub sync: String,
    /// The run's W3C `traceparent`, so the batch's spans join its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// apalis-redis pushes many tasks in one Lua call; past a few hundred the
/// call blocks Redis for too long.
const PUSH_CHUNK: usize = 500;

/// The queue of a destination's write tasks; the hash tag keeps every key of
/// the queue in one Redis Cluster slot.
pub fn queue_name(prefix: &str, destination: &str) -> String {
    format!("{{{prefix}:writes:{destination}}}")
}

/// Connects with a response timeout far above redis-rs's 500 ms default,
/// which turns one slow reply into a fatal worker error (apalis-redis#76).
pub async fn connect(state: &StateConfig) -> Result<ConnectionManager, QueueError> {
    let url = state.redis_url.expose();
    let connect_error = |source| QueueError::Connect {
        url: redact_url(url),
        source,
    };
    let client = redis::Client::open(url).map_err(connect_error)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2);
    let mut conn = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(connect_error)?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(connect_error)?;
    Ok(conn)
}

/// The apalis storage for a destination's write tasks, configured for Ebb's
/// liveness settings.
pub fn storage(
    conn: ConnectionManager,
    state: &StateConfig,
    worker: &WorkerSettings,
    destination: &str,
) -> RedisStorage<WriteBatchTask> {
    let config = apalis_redis::Config::default()
        .queue(queue_name(&state.queue_prefix, destination))
        // One task per fetch. apalis runs heartbeats and acks only while no
        // fetched task waits in its local buffer; with a larger fetch, a
        // worker whose slots are busy (batches waiting on a rate limit, a
        // 429 pause, a bulk job) goes silent until the buffer drains, is
        // declared orphaned by the others, and loses its in-flight batches.
        .batch_size(1)
        // An idle worker fetches only when its heartbeat fires: beat at the
        // poll interval, and count the orphan timeout in those beats.
        // (Config::default() sets 10 missed beats, a 5-minute timeout.)
        .heartbeat_interval(worker.poll_interval())
        .missed_heartbeats(worker.missed_polls())
        // apalis's task locks cost an LREM scan of the whole active list per
        // task (O(queue length)); a batch's claim in Postgres is Ebb's lock.
        .lock_tasks(false)
        .emit_events(false);
    RedisStorage::new(conn).with_config(config)
}

/// Pushes tasks in chunks, moving each chunk from the scheduled set (where
/// apalis-redis puts every push) to the active list at once, so the queue
/// never holds more due scheduled tasks than one chunk (see
/// [`promote_due`]).
pub async fn enqueue(
    storage: &mut RedisStorage<WriteBatchTask>,
    tasks: Vec<WriteBatchTask>,
) -> Result<(), QueueError> {
    let queue = storage.get_config().active_jobs_list();
    let mut tasks = tasks;
    while !tasks.is_empty() {
        let rest = tasks.split_off(tasks.len().min(PUSH_CHUNK));
        storage
            .push_bulk(tasks)
            .await
            .map_err(|e| QueueError::Push {
                queue: queue.clone(),
                message: e.to_string(),
            })?;
        let config = storage.get_config().clone();
        promote_due(storage.get_connection(), &config).await?;
        tasks = rest;
    }
    Ok(())
}

/// The queue's epoch: a random id kept in Redis next to the queue, created
/// when missing. Redis losing its data (FLUSHALL, a restart without
/// persistence) loses the epoch too, so a run whose recorded epoch differs
/// from the current one has lost its tasks and must be re-enqueued.
pub async fn epoch(
    conn: &mut ConnectionManager,
    state: &StateConfig,
) -> Result<String, QueueError> {
    let key = format!("{{{}:queue}}:epoch", state.queue_prefix);
    let ctx = |context| move |source| QueueError::Redis { context, source };
    let fresh = uuid::Uuid::now_v7().to_string();
    let _: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(&fresh)
        .arg("NX")
        .query_async(conn)
        .await
        .map_err(ctx("creating the queue epoch"))?;
    let current: Option<String> = conn
        .get(&key)
        .await
        .map_err(ctx("reading the queue epoch"))?;
    // Missing only if Redis lost it again between the two commands: the next
    // check sees a new epoch and re-enqueues.
    Ok(current.unwrap_or(fresh))
}

/// Queue depth as an operator (or an autoscaler) sees it.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    pub pending: u64,
    pub scheduled: u64,
    pub in_flight: u64,
    pub live_workers: u64,
}

/// Computes depth from the raw keys; apalis-redis's own metrics are broken in
/// 1.0.0 (they ZCARD sets and read the wrong registry key).
pub async fn depth(
    conn: &mut ConnectionManager,
    storage: &RedisStorage<WriteBatchTask>,
    worker: &WorkerSettings,
) -> Result<QueueDepth, QueueError> {
    let config = storage.get_config();
    let ctx = |context| move |source| QueueError::Redis { context, source };
    let pending: u64 = conn
        .llen(config.active_jobs_list())
        .await
        .map_err(ctx("reading queue length"))?;
    let scheduled: u64 = conn
        .zcard(config.scheduled_jobs_set())
        .await
        .map_err(ctx("reading scheduled tasks"))?;
    // apalis-redis scores heartbeats with each worker's own clock, in seconds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let alive_since = now.saturating_sub(worker.orphan_timeout().as_secs());
    let workers: Vec<String> = conn
        .zrangebyscore(config.workers_set(), alive_since, "+inf")
        .await
        .map_err(ctx("listing workers"))?;
    let mut in_flight = 0;
    for w in &workers {
        let inflight_key = format!("{}:{w}", config.inflight_jobs_set());
        let n: u64 = conn
            .scard(inflight_key)
            .await
            .map_err(ctx("reading in-flight tasks"))?;
        in_flight += n;
    }
    Ok(QueueDepth {
        pending,
        scheduled,
        in_flight,
        live_workers: workers.len() as u64,
    })
}
