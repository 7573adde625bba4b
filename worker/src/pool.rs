//! The worker pool: an apalis worker per destination queue, draining it
//! until SIGTERM, and beside each a keeper that tends the queue (see
//! [`keep_queue`]). On SIGTERM apalis stops fetching, in-flight batches get
//! up to `[worker].shutdown_timeout_secs` to settle, and the process exits;
//! a batch cut off mid-flight was never settled, its claim runs out, and
//! another worker delivers it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use apalis_redis::RedisStorage;
use ebb_shared::config::Config;
use ebb_shared::queue::{self, WriteBatchTask};

use crate::error::WorkerError;
use crate::faults::Faults;
use crate::handler::{WorkerState, write_batch};
use crate::health;
use crate::targets::Targets;
use crate::wake::WakeEvery;

pub struct PoolOptions {
    /// Batches processed at once by this process, per destination.
    pub concurrency: usize,
    /// Prefix of the worker's name in Redis (the pod name in Kubernetes).
    pub name: String,
    /// Where to serve the health endpoints, if anywhere.
    pub listen: Option<SocketAddr>,
}

pub async fn run(config: Config, options: PoolOptions) -> Result<(), WorkerError> {
    let concurrency = options.concurrency.max(1);
    // One queue per destination a sync writes to, each drained with its own
    // `concurrency` slots: a slow or throttled destination fills only its
    // own slots and never starves the others.
    let destinations: BTreeSet<&str> = config
        .syncs
        .values()
        .map(|s| s.destination.as_str())
        .collect();
    if destinations.is_empty() {
        return Err(WorkerError::NoSyncs);
    }
    // Two connections per in-flight batch (its load or settle, and its
    // claim's renewal, which must never wait behind them) plus headroom.
    let in_flight = (concurrency * destinations.len()) as u32;
    let pool =
        ebb_shared::db::connect_and_migrate(&config.state.database_url, 2 * in_flight + 2).await?;
    let conn = queue::connect(&config.state).await?;
    let targets = Targets::build(&config, &conn, &pool)?;
    if let Some(listen) = options.listen {
        health::serve(listen, pool.clone(), conn.clone()).await?;
    }
    // Unique per process: apalis refuses a name seen within the orphan window,
    // and PIDs repeat across containers.
    let base_name = format!("{}-{}", options.name, uuid::Uuid::now_v7().simple());
    let slots: HashMap<String, Arc<Semaphore>> = destinations
        .iter()
        .map(|d| ((*d).to_owned(), Arc::new(Semaphore::new(concurrency))))
        .collect();
    let state = Arc::new(WorkerState {
        pool,
        targets,
        name: base_name.clone(),
        claim_lease: config.worker.claim_lease(),
        max_deliveries: config.worker.max_deliveries,
        faults: Faults::from_env().map_err(WorkerError::Faults)?,
        solo: Default::default(),
        slots: slots.clone(),
    });
    let (stop, stopping) = watch::channel(false);
    let mut supervisors = JoinSet::new();
    for destination in destinations {
        let storage = queue::storage(conn.clone(), &config.state, &config.worker, destination);
        supervisors.spawn(keep_queue(
            storage.clone(),
            config.worker.poll_interval(),
            stopping.clone(),
        ));
        let name = format!("{base_name}-{destination}");
        tracing::info!(worker = %name, concurrency, queue = %queue::queue_name(&config.state.queue_prefix, destination), "draining queue");
        supervisors.spawn(supervise(Drain {
            name,
            storage,
            state: state.clone(),
            concurrency,
            shutdown_timeout: Duration::from_secs(config.worker.shutdown_timeout_secs),
            stopping: stopping.clone(),
        }));
    }
    shutdown_signal()
        .await
        .map_err(|e| WorkerError::Monitor(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(config.worker.shutdown_timeout_secs);
    let _ = stop.send(true);
    while supervisors.join_next().await.is_some() {}
    // Work that outlived its apalis worker (see `handler::write_batch`)
    // gets what is left of the shutdown timeout.
    for (destination, slots) in &slots {
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(%destination, "batches still in flight at the end of the shutdown timeout; their claims run out and other workers deliver them");
        }
    }
    tracing::info!("worker stopped cleanly");
    Ok(())
}

/// Tends one queue beside its apalis worker, every poll interval: promotes
/// due tasks in chunks (apalis's fetch fails for good once more than about
/// 8,000 are due at once; see `queue::promote_due`), and forgets finished
/// tasks, which apalis-redis keeps forever.
async fn keep_queue(
    mut storage: RedisStorage<WriteBatchTask>,
    every: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let config = storage.get_config().clone();
    loop {
        let conn = storage.get_connection();
        if let Err(e) = queue::promote_due(conn, &config).await {
            tracing::debug!(queue = %config.active_jobs_list(), error = %e, "cannot promote due tasks");
        }
        if let Err(e) = queue::forget_finished(conn, &config).await {
            tracing::debug!(queue = %config.active_jobs_list(), error = %e, "cannot forget finished tasks");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// One destination queue's apalis worker and what it needs.
struct Drain {
    name: String,
    storage: RedisStorage<WriteBatchTask>,
    state: Arc<WorkerState>,
    concurrency: usize,
    shutdown_timeout: Duration,
    stopping: watch::Receiver<bool>,
}

/// Runs a destination queue's apalis worker until shutdown, restarting it
/// when it fails (Redis unreachable, mostly) after an exponential backoff
/// with jitter, so an outage costs a few reconnect attempts, not a busy
/// loop. Each queue has its own supervisor: one failing never stops the
/// others' in-flight batches.
async fn supervise(mut drain: Drain) {
    let mut failures: u32 = 0;
    for attempt in 0u64.. {
        let started = Instant::now();
        let worker_name = format!("{}-r{attempt}", drain.name);
        let (storage, state, concurrency) = (
            drain.storage.clone(),
            drain.state.clone(),
            drain.concurrency,
        );
        let poll_interval = storage.get_config().heartbeat_interval;
        let mut stopping = drain.stopping.clone();
        let signal = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            Ok(())
        };
        let result = Monitor::new()
            .register(move |_| {
                WorkerBuilder::new(worker_name.clone())
                    .backend(WakeEvery::new(storage.clone(), poll_interval))
                    .data(state.clone())
                    .catch_panic()
                    .concurrency(concurrency)
                    .build(write_batch)
            })
            .should_restart(|_, _| false)
            .shutdown_timeout(drain.shutdown_timeout)
            .run_with_signal(signal)
            .await;
        if *drain.stopping.borrow() {
            return;
        }
        if started.elapsed() >= HEALTHY_UPTIME {
            failures = 0;
        }
        failures += 1;
        let wait = restart_backoff(failures);
        let error = match result {
            Ok(()) => "the worker ended".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            worker = %drain.name, failures, wait_ms = wait.as_millis() as u64, %error,
            "worker stopped; restarting after a backoff"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = drain.stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// A worker that ran this long before failing starts its backoff afresh.
const HEALTHY_UPTIME: Duration = Duration::from_secs(60);

/// 250 ms doubling per consecutive failure up to 30 s, with the upper half
/// jittered so restarted workers do not reconnect in lockstep.
fn restart_backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(250)
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(Duration::from_secs(30));
    let half = ceiling / 2;
    half + Duration::from_millis(rand::random_range(0..=half.as_millis() as u64))
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested; finishing in-flight batches");
    Ok(())
}
