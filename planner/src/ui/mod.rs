//! `ebb serve`'s web UI at `/`: syncs, runs, the dead-letter queue and
//! destinations, for the operators and the owners of a destination who
//! would otherwise need a shell and SQL.
//!
//! Server-rendered HTML (maud: templates are Rust, checked by the compiler
//! and escaped by construction), one stylesheet and one small script
//! embedded in the binary: no front-end build step, and every page works
//! without JavaScript. The script only adds what HTML cannot: times in
//! the browser's zone, live refresh of a running run, confirmation of a
//! full resync, and "select all" in the DLQ.
//!
//! It reads and acts through the same `crate::control` and state modules
//! as the API, with the API's tokens and roles (see [`session`]).
//!
//! - [`session`]: login with an API token, the session cookie, CSRF.
//! - [`layout`]: the page shell and the small pieces every page uses.
//! - [`chart`]: run charts as inline SVG.
//! - [`syncs`], [`runs`], [`dlq`], [`destinations`]: the pages.

mod chart;
mod destinations;
mod dlq;
mod form;
mod layout;
mod runs;
pub mod session;
mod syncs;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::problem::Problem;
use crate::api::{ApiState, Auth};
use crate::error::PlannerError;

/// What the pages share: the API's state (its context and queue
/// connection) and its tokens.
pub struct UiState {
    pub api: Arc<ApiState>,
    pub auth: Arc<Auth>,
}

/// The UI's routes.
pub fn router(api: Arc<ApiState>, auth: Arc<Auth>) -> Router {
    let state = Arc::new(UiState { api, auth });
    Router::new()
        .route("/", get(syncs::overview))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/syncs/{name}", get(syncs::detail))
        .route("/syncs/{name}/run", post(syncs::trigger))
        .route("/syncs/{name}/pause", post(syncs::pause))
        .route("/syncs/{name}/resume", post(syncs::resume))
        .route("/runs/{id}", get(runs::detail))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/approve", post(runs::approve))
        .route("/dlq", get(dlq::list))
        .route("/dlq/act", post(dlq::act))
        .route("/dlq/{id}", get(dlq::entry))
        .route("/destinations", get(destinations::list))
        .route("/assets/ui.css", get(stylesheet))
        .route("/assets/ui.js", get(script))
        .layer(axum::middleware::map_response(protect))
        .with_state(state)
}

/// Headers on every UI answer: no framing (clickjacking), scripts and
/// styles from Ebb only (inline `style` attributes size the charts), no
/// sniffing, no referrer to other sites, and pages kept out of caches.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    response
}

const STYLESHEET: &str = include_str!("assets/ui.css");
const SCRIPT: &str = include_str!("assets/ui.js");

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A page that could not be shown: its status, and what failed, in words.
#[derive(Debug)]
pub struct UiError(Problem);

impl UiError {
    pub fn not_found(detail: impl Into<String>) -> UiError {
        UiError(Problem::not_found(detail))
    }

    pub fn bad_request(detail: impl Into<String>) -> UiError {
        UiError(Problem::bad_request(detail))
    }
}

impl From<Problem> for UiError {
    fn from(problem: Problem) -> Self {
        UiError(problem)
    }
}

impl From<PlannerError> for UiError {
    /// The API answers an unexpected error with a bare 500; the UI's users
    /// are logged in and need to know what failed (a model that does not
    /// compile, a source that does not answer), so the page says it.
    /// Errors carry no secrets (see `ebb_shared::secret`).
    fn from(e: PlannerError) -> Self {
        let what = e.to_string();
        let mut problem = Problem::from(e);
        if problem.status == 500 {
            problem.detail = format!("{what} (also in ebb serve's log)");
        }
        UiError(problem)
    }
}

impl From<ebb_shared::StateError> for UiError {
    fn from(e: ebb_shared::StateError) -> Self {
        UiError::from(PlannerError::from(e))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = layout::error_page(status, &self.0.title, &self.0.detail);
        (status, body).into_response()
    }
}

/// The answer to a path that is neither a page nor an API operation.
pub async fn not_found() -> Response {
    UiError::not_found("no page at this address; start from the syncs overview").into_response()
}
