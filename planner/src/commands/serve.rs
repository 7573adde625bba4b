//! `ebb serve`: the planner daemon. Fires each sync on its cron schedule (a
//! sync with an active run is skipped, never doubled; a paused one is not
//! fired), re-enqueues work the queue lost (see `watchdog`), deletes run
//! records past their retention (all of these only on the replica that
//! leads, see `crate::leader`), and answers on every replica `/healthz` (process alive),
//! `/readyz` (state database and Redis reachable), `/metrics` (Prometheus
//! text, see `metrics`), the API under `/api/v1` (see `crate::api`) and the
//! web UI at `/` (see `crate::ui`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use ebb_shared::StateError;
use ebb_shared::config::SyncConfig;
use ebb_shared::health;
use ebb_shared::state::{ticks, verifications};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::api::{self, Auth};
use crate::context::Context;
use crate::control::trigger;
use crate::enqueue::Queue;
use crate::error::PlannerError;
use crate::leader;
use crate::ui;
use crate::watchdog::Watchdog;

/// What the unauthenticated endpoints share: one Redis connection, kept
/// between requests, and a cap on requests served at once.
struct Probes {
    ctx: Arc<Context>,
    auth: Arc<Auth>,
    leading: leader::Leading,
    queue: Mutex<Option<Queue>>,
    at_once: Semaphore,
}

/// `/readyz` and `/metrics` requests served at once; more are answered 503
/// at once, so a flood of probes cannot pile up connections.
const PROBES_AT_ONCE: usize = 4;

pub async fn serve(
    ctx: Arc<Context>,
    listen: SocketAddr,
    auth: Arc<Auth>,
) -> Result<(), PlannerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| PlannerError::Usage(format!("cannot listen on {listen}: {e}")))?;
    if !listen.ip().is_loopback() && !auth.protects_metrics() {
        tracing::warn!(%listen, "serving on a non-loopback address: /healthz, /readyz and /metrics need no authentication (set [api].protect_metrics for /metrics)");
    }
    match auth.as_ref() {
        Auth::Off => tracing::info!(
            "the API and the web UI are off: add an [api] section with tokens to ebb.toml to serve /api/v1 and /"
        ),
        Auth::Insecure => {
            tracing::warn!(%listen, "serving /api/v1 and the web UI at / WITHOUT AUTHENTICATION (--insecure-no-auth)")
        }
        Auth::Tokens { .. } => {
            tracing::info!(%listen, "serving /api/v1 (bearer tokens from [api]) and the web UI at / (log in with one of those tokens)")
        }
    }
    let identity = leader::identity();
    let leading = leader::campaign(ctx.config.state.database_url.clone(), identity.clone());
    let probes = Arc::new(Probes {
        ctx: ctx.clone(),
        auth: auth.clone(),
        leading: leading.clone(),
        queue: Mutex::new(None),
        at_once: Semaphore::new(PROBES_AT_ONCE),
    });
    let api_state = Arc::new(api::ApiState::new(ctx.clone()));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes)
        .merge(api::router(api_state.clone(), auth.clone()))
        .merge(ui::router(api_state, auth))
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/api/") {
                api::not_found().into_response()
            } else {
                ui::not_found().await
            }
        });
    tracing::info!(%listen, "serving /healthz, /readyz and /metrics");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let leaders = tokio::spawn(lead_while_elected(ctx.clone(), leading, identity));
    shutdown_signal().await;
    tracing::info!("shutting down");
    leaders.abort();
    server.abort();
    Ok(())
}

/// Runs the leader's loops while this replica leads, and stops them as soon
/// as it does not.
async fn lead_while_elected(ctx: Arc<Context>, mut leading: leader::Leading, identity: String) {
    let identity: Arc<str> = identity.into();
    loop {
        if !leader::wait_for(&mut leading, true).await {
            return;
        }
        let mut loops = leader_loops(&ctx, &identity);
        let campaign_over = !leader::wait_for(&mut leading, false).await;
        loops.abort_all();
        if campaign_over {
            return;
        }
        tracing::info!("stopped the leader's loops");
    }
}

/// What only the leader does: anything that starts runs or sends messages.
fn leader_loops(ctx: &Arc<Context>, identity: &Arc<str>) -> JoinSet<()> {
    let mut loops = JoinSet::new();
    let mut scheduled = 0;
    for sync in ctx.config.syncs.values().filter(|s| s.schedule.is_some()) {
        loops.spawn(schedule_loop(ctx.clone(), sync.clone(), identity.clone()));
        scheduled += 1;
    }
    if scheduled == 0 {
        tracing::warn!("no sync has a `schedule`; serve only watches running runs");
    }
    loops.spawn(watchdog_loop(ctx.clone()));
    loops.spawn(janitor_loop(ctx.clone()));
    loops.spawn(dependency_loop(ctx.clone()));
    loops.spawn(alert_loop(ctx.clone()));
    for sync in ctx.config.syncs.values().filter(|s| s.verify.is_some()) {
        loops.spawn(verify_loop(ctx.clone(), sync.clone()));
    }
    loops
}

/// How often serve looks whether a scheduled verification is due.
const VERIFY_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Verifies `sync` on its `[syncs.NAME.verify]` schedule: due when the
/// schedule fired since the last scheduled verification (or since serve
/// started leading). A verification only reads, so one a new leader
/// repeats is harmless.
async fn verify_loop(ctx: Arc<Context>, sync: SyncConfig) {
    let Some(verify) = sync.verify.clone() else {
        return;
    };
    let leading_since = Utc::now();
    loop {
        tokio::time::sleep(VERIFY_CHECK_EVERY).await;
        let last = match verifications::last_started(&ctx.pool, &sync.name, "schedule").await {
            Ok(last) => last.unwrap_or(leading_since).max(leading_since),
            Err(e) => {
                tracing::warn!(sync = %sync.name, error = %e, "cannot read the last verification; will retry");
                continue;
            }
        };
        if verify
            .schedule
            .next_after(last)
            .is_none_or(|due| due > Utc::now())
        {
            continue;
        }
        let scope = crate::verify::Scope::of(verify.sample);
        match crate::verify::verify(&ctx.config, &ctx.pool, &sync, scope, "schedule").await {
            Ok(v) if v.drifted() > 0 => tracing::warn!(
                sync = %sync.name, verification = v.id, missing = v.missing, different = v.different,
                extra = v.extra, "scheduled verification found drift; see `ebb verify {} --resend`", sync.name
            ),
            Ok(v) => {
                tracing::info!(sync = %sync.name, verification = v.id, checked = v.checked, "scheduled verification found no drift")
            }
            Err(e) => {
                tracing::error!(sync = %sync.name, error = %e, "scheduled verification failed")
            }
        }
    }
}

async fn metrics(State(probes): State<Arc<Probes>>, headers: HeaderMap) -> Response {
    if probes.auth.protects_metrics()
        && let Err(problem) = probes.auth.caller(&headers)
    {
        return problem.into_response();
    }
    let Ok(_turn) = probes.at_once.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    };
    let ctx = &probes.ctx;
    let mut queue = probes.queue.lock().await;
    let mut text = super::metrics::render(&ctx.config, &ctx.pool, &mut queue).await;
    text.push_str(&ebb_shared::telemetry::metrics::prometheus_text());
    text.push_str(&format!(
        "# HELP ebb_planner_leader 1 while this ebb serve is the leader that fires schedules\n\
         # TYPE ebb_planner_leader gauge\nebb_planner_leader {}\n",
        u8::from(*probes.leading.borrow())
    ));
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// 200 `ready`, or 503 naming the part that does not answer (`state
/// database` or `queue`), without host names or error text: the endpoint
/// is unauthenticated. The details go to the log.
async fn readyz(State(probes): State<Arc<Probes>>) -> (StatusCode, &'static str) {
    let Ok(_turn) = probes.at_once.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy");
    };
    let ctx = &probes.ctx;
    if let Err(why) = health::database_ready(&ctx.pool).await {
        tracing::warn!(error = %why, "not ready");
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: state database");
    }
    let mut queue = probes.queue.lock().await;
    let answer = match queue.as_mut() {
        Some(queue) => health::queue_ready(&mut queue.conn).await,
        None => match Queue::connect(&ctx.config.state, &ctx.config.worker).await {
            Ok(connected) => health::queue_ready(&mut queue.insert(connected).conn).await,
            Err(e) => Err(e.to_string()),
        },
    };
    match answer {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(why) => {
            *queue = None;
            tracing::warn!(error = %why, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: queue")
        }
    }
}

/// A tick missed by at most this long when a planner takes over is fired
/// at once (when the sync was scheduled before, so a new sync or a first
/// start does not fire a tick from the past).
const MISSED_TICK_GRACE: Duration = Duration::from_secs(60);

async fn schedule_loop(ctx: Arc<Context>, sync: SyncConfig, planner: Arc<str>) {
    let Some(schedule) = sync.schedule.clone() else {
        return;
    };
    let started = Utc::now();
    if let Some(missed) = schedule.last_at_or_before(started)
        && (started - missed).to_std().unwrap_or_default() <= MISSED_TICK_GRACE
    {
        match ticks::missed(&ctx.pool, &sync.name, missed).await {
            Ok(true) => {
                tracing::info!(sync = %sync.name, tick = %missed, "firing a tick no planner fired (leadership changed)");
                fire(&ctx, &sync, missed, &planner).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(sync = %sync.name, error = %e, "cannot tell whether the last tick was fired")
            }
        }
    }
    let mut after = started;
    loop {
        let Some(next) = schedule.next_after(after) else {
            tracing::warn!(sync = %sync.name, "schedule has no future fire time");
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        fire(&ctx, &sync, next, &planner).await;
        after = next;
    }
}

/// Fires `sync`'s tick at `tick`: claims it (a tick another planner fired
/// is skipped), then starts a run unless the sync is paused or running.
async fn fire(ctx: &Context, sync: &SyncConfig, tick: DateTime<Utc>, planner: &str) {
    match ticks::claim(&ctx.pool, &sync.name, tick, planner).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(sync = %sync.name, %tick, "another planner fired this tick; skipping it");
            return;
        }
        Err(e) => {
            tracing::error!(sync = %sync.name, %tick, error = %e, "cannot claim the tick; skipping it");
            return;
        }
    }
    match ebb_shared::state::syncs::is_paused(&ctx.pool, &sync.name).await {
        Ok(true) => {
            tracing::info!(sync = %sync.name, "schedule paused; skipping this tick");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(sync = %sync.name, error = %e, "cannot read whether the sync is paused; skipping this tick");
            return;
        }
    }
    match trigger::run_now(ctx, sync, false, "schedule").await {
        Ok(run_id) => {
            tracing::info!(sync = %sync.name, run_id, "scheduled run started");
            if let Err(e) = ticks::set_run(&ctx.pool, &sync.name, tick, run_id).await {
                tracing::warn!(sync = %sync.name, run_id, error = %e, "cannot record the tick's run");
            }
        }
        Err(PlannerError::State(StateError::RunActive { run_id, .. })) => {
            tracing::info!(sync = %sync.name, active_run = run_id, "previous run still active; skipping this tick");
        }
        Err(e) => tracing::error!(sync = %sync.name, error = %e, "scheduled run failed"),
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

/// How often serve looks for syncs whose upstreams (`after`) succeeded.
const DEPENDENCIES_EVERY: Duration = Duration::from_secs(2);

async fn dependency_loop(ctx: Arc<Context>) {
    if ctx.config.syncs.values().all(|s| s.after.is_empty()) {
        return;
    }
    loop {
        tokio::time::sleep(DEPENDENCIES_EVERY).await;
        let due = match crate::control::dependencies::due(&ctx.config, &ctx.pool).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the syncs that run after others; will retry");
                continue;
            }
        };
        for due in due {
            let Some(sync) = ctx.config.syncs.get(&due.sync).cloned() else {
                continue;
            };
            match ebb_shared::state::syncs::is_paused(&ctx.pool, &sync.name).await {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    tracing::warn!(sync = %sync.name, error = %e, "cannot read whether the sync is paused");
                    continue;
                }
            }
            let trigger = format!("after:{}", due.after);
            match trigger::start_in_background(&ctx, &sync, false, &trigger, None).await {
                Ok(started) => {
                    tracing::info!(sync = %sync.name, run_id = started.run.id, %trigger, "run started after an upstream sync succeeded")
                }
                Err(PlannerError::State(StateError::RunActive { .. })) => {}
                Err(e) => {
                    tracing::error!(sync = %sync.name, error = %e, "run after an upstream sync failed")
                }
            }
        }
    }
}

/// How often serve looks at runs for alerts, and sends queued messages.
const ALERTS_EVERY: Duration = Duration::from_secs(2);

async fn alert_loop(ctx: Arc<Context>) {
    if ctx.config.alerts.is_empty() {
        return;
    }
    let started = Utc::now();
    let client = match ebb_shared::destinations::util::api::client() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client for alerts; alerts are off");
            return;
        }
    };
    loop {
        tokio::time::sleep(ALERTS_EVERY).await;
        if let Err(e) = crate::alerts::evaluate(&ctx.config, &ctx.pool, started).await {
            tracing::warn!(error = %e, "cannot evaluate alerts; will retry");
        }
        if let Err(e) = crate::alerts::deliver_due(&ctx.config, &ctx.pool, &client).await {
            tracing::warn!(error = %e, "cannot send alert messages; will retry");
        }
    }
}

/// How often serve deletes run records past their retention.
const JANITOR_EVERY: Duration = Duration::from_secs(3600);

async fn janitor_loop(ctx: Arc<Context>) {
    let days = ctx.config.state.run_records_retention_days;
    loop {
        match ebb_shared::state::records::delete_older_than(&ctx.pool, days).await {
            Ok(0) => {}
            Ok(runs) => tracing::info!(
                runs,
                days,
                "deleted the records of runs past their retention"
            ),
            Err(e) => tracing::warn!(error = %e, "could not delete old run records; will retry"),
        }
        if let Err(e) = ticks::delete_older_than(&ctx.pool, days).await {
            tracing::warn!(error = %e, "could not delete old schedule ticks; will retry");
        }
        tokio::time::sleep(JANITOR_EVERY).await;
    }
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
