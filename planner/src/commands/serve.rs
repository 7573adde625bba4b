//! `ebb serve`: the planner daemon. Fires each sync on its cron schedule (a
//! sync with an active run is skipped, never doubled), re-enqueues work the
//! queue lost (see `watchdog`), and answers `/healthz` (process alive),
//! `/readyz` (state database and Redis reachable) and `/metrics`
//! (Prometheus text, see `metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::Utc;
use ebb_shared::StateError;
use ebb_shared::config::SyncConfig;
use ebb_shared::health;

use crate::context::Context;
use crate::enqueue::{RunRef, enqueue_run};
use crate::error::PlannerError;
use crate::plan;
use crate::watchdog::Watchdog;

pub async fn serve(ctx: Arc<Context>, listen: SocketAddr) -> Result<(), PlannerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| PlannerError::Usage(format!("cannot listen on {listen}: {e}")))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx.clone());
    tracing::info!(%listen, "serving /healthz and /readyz");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut schedulers = Vec::new();
    for sync in ctx.config.syncs.values().filter(|s| s.schedule.is_some()) {
        let ctx = ctx.clone();
        let sync = sync.clone();
        schedulers.push(tokio::spawn(async move { schedule_loop(ctx, sync).await }));
    }
    if schedulers.is_empty() {
        tracing::warn!("no sync has a `schedule`; serve only watches running runs");
    }
    let watchdog = tokio::spawn(watchdog_loop(ctx.clone()));
    shutdown_signal().await;
    tracing::info!("shutting down");
    for s in schedulers {
        s.abort();
    }
    watchdog.abort();
    server.abort();
    Ok(())
}

async fn metrics(State(ctx): State<Arc<Context>>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        super::metrics::render(&ctx.config, &ctx.pool).await,
    )
}

async fn readyz(State(ctx): State<Arc<Context>>) -> (StatusCode, String) {
    let answer = async {
        health::database_ready(&ctx.pool).await?;
        // A fresh connection per probe: it proves Redis accepts
        // connections (`queue::connect` pings it).
        ebb_shared::queue::connect(&ctx.config.state)
            .await
            .map(drop)
            .map_err(|e| format!("queue: {e}"))
    }
    .await;
    match answer {
        Ok(()) => (StatusCode::OK, "ready".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn schedule_loop(ctx: Arc<Context>, sync: SyncConfig) {
    let Some(schedule) = sync.schedule.clone() else {
        return;
    };
    loop {
        let Some(next) = schedule.schedule.upcoming(Utc).next() else {
            tracing::warn!(sync = %sync.name, "schedule has no future fire time");
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        match fire(&ctx, &sync).await {
            Ok(Some(run_id)) => tracing::info!(sync = %sync.name, run_id, "scheduled run started"),
            Ok(None) => {}
            Err(PlannerError::State(StateError::RunActive { run_id, .. })) => {
                tracing::info!(sync = %sync.name, active_run = run_id, "previous run still active; skipping this tick");
            }
            Err(e) => tracing::error!(sync = %sync.name, error = %e, "scheduled run failed"),
        }
    }
}

/// How often serve looks for running runs whose tasks the queue lost.
const WATCHDOG_EVERY: Duration = Duration::from_secs(2);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

async fn watchdog_loop(ctx: Arc<Context>) {
    let mut backoff = Duration::from_secs(1);
    let queue = loop {
        match ctx.queue().await {
            Ok(queue) => break queue,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "queue unreachable; the watchdog waits");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    };
    // The connection manager reconnects by itself from here on.
    let mut watchdog = Watchdog::new(queue);
    loop {
        tokio::time::sleep(WATCHDOG_EVERY).await;
        if let Err(e) = watchdog.check_all(&ctx.pool).await {
            tracing::warn!(error = %e, "watchdog check failed; will retry");
        }
    }
}

async fn fire(ctx: &Context, sync: &SyncConfig) -> Result<Option<i64>, PlannerError> {
    let planned = plan::plan_run(&ctx.config, &ctx.pool, sync, false, "schedule").await?;
    if !planned.batches.is_empty() {
        let mut queue = ctx.queue().await?;
        let run = RunRef {
            id: planned.run_id,
            sync: &sync.name,
            destination: &sync.destination,
        };
        enqueue_run(&ctx.pool, &mut queue, run, &planned.batches).await?;
    }
    Ok(Some(planned.run_id))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
