//! `ebb serve`'s REST API under `/api/v1`, and its OpenAPI document at
//! `/api/v1/openapi.json`, generated from the handlers (utoipa), so it
//! cannot drift from them.
//!
//! - [`auth`]: bearer tokens from `[api]`, viewer and operator roles.
//! - [`problem`]: RFC 9457 problem documents for every error.
//! - [`paging`]: cursor paging for lists.
//! - `syncs`, `runs`, `dlq`, `destinations`, `alerts`, `verifications`:
//!   the resources. Their JSON is
//!   the CLI's `--json`: the same types, the same names.
//!
//! What an operation does is written once, in `crate::control` and
//! `ebb_shared::state`, for the API and the CLI alike.

mod alerts;
pub mod auth;
pub(crate) mod destinations;
mod dlq;
mod paging;
pub mod problem;
mod runs;
mod syncs;
mod verifications;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::sync::Mutex;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::context::Context;
use crate::enqueue::Queue;
pub use auth::{Auth, Caller};
use problem::Problem;

/// What the handlers share.
pub struct ApiState {
    pub ctx: Arc<Context>,
    /// One Redis connection for `/destinations`, kept between requests.
    pub queue: Mutex<Option<Queue>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ebb",
        version = "1",
        description = "Ebb's control plane: syncs, runs, the dead-letter queue and destinations. Every operation needs `Authorization: Bearer <token>` with a token from `[api].tokens` in ebb.toml; operations that change anything need an operator's token. Errors are RFC 9457 problem documents; lists are paged by cursor (`next_cursor`)."
    ),
    modifiers(&BearerAuth),
    components(schemas(
        ebb_shared::state::runs::RunState,
        ebb_shared::state::records::Outcome,
        dlq::DlqStatus,
    )),
    tags(
        (name = "syncs", description = "Each sync: its state, runs started by hand, its schedule paused or resumed"),
        (name = "runs", description = "Run history, a run's records, cancelling a run"),
        (name = "dlq", description = "Dead-lettered records: inspect, replay, dismiss, resolve"),
        (name = "destinations", description = "Each destination's limits and queue"),
        (name = "alerts", description = "Incidents opened and resolved by the configured alerts"),
        (name = "verifications", description = "Delivered records read back from destinations: drift, and sending it again"),
        (name = "webhooks", description = "Events from other systems that start syncs; signed by their sender instead of a bearer token"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

impl ApiState {
    pub fn new(ctx: Arc<Context>) -> ApiState {
        ApiState {
            ctx,
            queue: Mutex::new(None),
        }
    }
}

/// The API's routes, behind `auth`, and its OpenAPI document. Paths it does
/// not know are left to the caller's fallback (see [`not_found`]).
pub fn router(state: Arc<ApiState>, auth: Arc<Auth>) -> Router {
    let v1 = OpenApiRouter::new()
        .routes(routes!(syncs::list_syncs))
        .routes(routes!(syncs::get_sync))
        .routes(routes!(syncs::trigger_run))
        .routes(routes!(syncs::pause_sync))
        .routes(routes!(syncs::resume_sync))
        .routes(routes!(runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::list_run_records))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(runs::approve_run))
        .routes(routes!(dlq::list_dlq))
        .routes(routes!(dlq::get_dlq_entry))
        .routes(routes!(dlq::replay_dlq))
        .routes(routes!(dlq::dismiss_dlq))
        .routes(routes!(dlq::resolve_dlq))
        .routes(routes!(destinations::list_destinations))
        .routes(routes!(alerts::list_incidents))
        .routes(routes!(verifications::list_verifications))
        .routes(routes!(verifications::get_verification))
        .routes(routes!(verifications::start_verification))
        .routes(routes!(verifications::resend_verification));
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .split_for_parts();
    // Signed by the sender, so outside the bearer-token layer.
    let (webhooks, webhook_doc) = OpenApiRouter::new()
        .nest(
            "/api/v1",
            OpenApiRouter::new().routes(routes!(webhooks::dbt_webhook)),
        )
        .split_for_parts();
    doc.merge(webhook_doc);
    let doc = Arc::new(doc);
    routes
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this path does not take this method; see /api/v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ))
        .merge(webhooks)
        .with_state(state)
}

/// The answer to a path under `/api/` that the API does not have.
pub fn not_found() -> Problem {
    Problem::not_found("no such path in Ebb's API; see /api/v1/openapi.json")
}
