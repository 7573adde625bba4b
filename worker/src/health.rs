//! The worker's endpoints (with `--listen`): `/healthz` answers while the
//! process runs; `/readyz` answers 200 only while the state database and
//! Redis are both reachable; `/metrics` is its counters and histograms
//! (Prometheus text, see `ebb_shared::telemetry::metrics`). Point Kubernetes' liveness probe at `/healthz`
//! only: during an outage a worker waits for its infrastructure to return,
//! and restarting it would not help.

use std::net::SocketAddr;

use apalis_redis::ConnectionManager;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;

use crate::error::WorkerError;

#[derive(Clone)]
struct Deps {
    pool: PgPool,
    redis: ConnectionManager,
}

/// Binds `listen` and serves in the background.
pub async fn serve(
    listen: SocketAddr,
    pool: PgPool,
    redis: ConnectionManager,
) -> Result<(), WorkerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| WorkerError::Listen(format!("cannot listen on {listen}: {e}")))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    ebb_shared::telemetry::metrics::prometheus_text(),
                )
            }),
        )
        .with_state(Deps { pool, redis });
    tracing::info!(%listen, "serving /healthz, /readyz and /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoints stopped");
        }
    });
    Ok(())
}

/// 200 `ready`, or 503 naming the part that does not answer, without host
/// names or error text (the endpoint is unauthenticated; details go to the
/// log).
async fn readyz(State(deps): State<Deps>) -> (StatusCode, &'static str) {
    let mut redis = deps.redis.clone();
    if let Err(why) = ebb_shared::health::database_ready(&deps.pool).await {
        tracing::warn!(error = %why, "not ready");
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: state database");
    }
    match ebb_shared::health::queue_ready(&mut redis).await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(why) => {
            tracing::warn!(error = %why, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: queue")
        }
    }
}
