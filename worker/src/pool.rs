//! The worker pool: an apalis monitor draining the write queue until SIGTERM.
//! On SIGTERM apalis stops fetching, waits for in-flight batches up to
//! `[worker].shutdown_timeout_secs`, puts prefetched tasks back on the queue
//! and exits; a batch cut off mid-flight was never committed and is picked up
//! again by another worker.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use ebb_shared::config::Config;
use ebb_shared::queue;

use crate::destinations::Registry;
use crate::error::WorkerError;
use crate::faults::Faults;
use crate::handler::{WorkerState, write_batch};
use crate::health;

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
    // Two connections per in-flight batch (its transaction, and the
    // delivery counter that must commit outside it) plus headroom.
    let in_flight = (concurrency * destinations.len()) as u32;
    let pool =
        ebb_shared::db::connect_and_migrate(&config.state.database_url, 2 * in_flight + 2).await?;
    let conn = queue::connect(&config.state).await?;
    let registry = Registry::build(&config, &conn)?;
    if let Some(listen) = options.listen {
        health::serve(listen, pool.clone(), conn.clone()).await?;
    }
    let state = Arc::new(WorkerState {
        pool,
        registry,
        max_deliveries: config.worker.max_deliveries,
        faults: Faults::from_env().map_err(WorkerError::Faults)?,
        solo: Default::default(),
    });
    // Unique per process: apalis refuses a name seen within the orphan window,
    // and PIDs repeat across containers.
    let base_name = format!("{}-{}", options.name, uuid::Uuid::now_v7().simple());
    let mut monitor = Monitor::new();
    for destination in destinations {
        let storage = queue::storage(
            conn.clone(),
            &config.state,
            &config.worker,
            destination,
            concurrency,
        );
        let name = format!("{base_name}-{destination}");
        tracing::info!(worker = %name, concurrency, queue = %queue::queue_name(&config.state.queue_prefix, destination), "draining queue");
        let state = state.clone();
        monitor = monitor.register(move |restarts| {
            WorkerBuilder::new(format!("{name}-r{restarts}"))
                .backend(storage.clone())
                .data(state.clone())
                .catch_panic()
                .concurrency(concurrency)
                .build(write_batch)
        });
    }
    monitor
        .should_restart(|ctx, error| {
            tracing::warn!(worker = %ctx.name(), %error, "worker stopped; restarting");
            true
        })
        .shutdown_timeout(Duration::from_secs(config.worker.shutdown_timeout_secs))
        .run_with_signal(shutdown_signal())
        .await
        .map_err(|e| WorkerError::Monitor(e.to_string()))?;
    tracing::info!("worker stopped cleanly");
    Ok(())
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
