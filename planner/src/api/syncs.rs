//! `/syncs`: each sync's state; trigger a run, pause and resume the
//! schedule.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ebb_shared::state::runs::Run;
use serde::Deserialize;

use super::ApiState;
use super::auth::Caller;
use super::paging::Page;
use super::problem::{ApiJson, ApiPath, Problem};
use crate::control::syncs::{self, SyncSummary};
use crate::control::trigger::{self, IdempotencyKey};
use crate::plan::{self, PlanReport};

/// How to run a sync.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Send every record again, ignoring what was delivered before.
    #[serde(default)]
    pub full_resync: bool,
    /// Only plan: what a run would add, change, remove and reject; nothing
    /// is sent and no run is recorded.
    #[serde(default)]
    pub dry_run: bool,
}

/// Why a schedule is paused or resumed.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    pub note: Option<String>,
}

/// Every sync of the config.
#[utoipa::path(get, path = "/syncs", tag = "syncs",
    responses(
        (status = 200, description = "Every sync, in name order", body = Page<SyncSummary>),
        (status = 401, description = "No token, or an unknown one", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_syncs(
    State(api): State<Arc<ApiState>>,
) -> Result<Json<Page<SyncSummary>>, Problem> {
    let items = syncs::overview(&api.ctx.config, &api.ctx.pool).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// One sync.
#[utoipa::path(get, path = "/syncs/{name}", tag = "syncs",
    params(("name" = String, Path, description = "The sync's name in ebb.toml")),
    responses(
        (status = 200, body = SyncSummary),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such sync", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get_sync(
    State(api): State<Arc<ApiState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SyncSummary>, Problem> {
    syncs::one(&api.ctx.config, &api.ctx.pool, &name)
        .await?
        .map(Json)
        .ok_or_else(|| no_such_sync(&api, &name))
}

/// Starts a run of the sync: answers at once with the run (planning), which
/// then runs in `ebb serve`. A retry with the same `Idempotency-Key` returns
/// the same run. With `dry_run`, answers the plan instead, and runs nothing.
#[utoipa::path(post, path = "/syncs/{name}/runs", tag = "syncs",
    params(
        ("name" = String, Path, description = "The sync's name in ebb.toml"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes a retried trigger return the run the first one started (kept a day): 1 to 255 visible ASCII characters"),
    ),
    request_body(content = Option<TriggerRequest>, description = "Optional; defaults to a normal run"),
    responses(
        (status = 202, description = "The run, started (or started by an earlier trigger with the same key)", body = Run),
        (status = 200, description = "A dry run's plan", body = PlanReport),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A viewer's token", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The sync has an active run", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn trigger_run(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<TriggerRequest>,
) -> Result<Response, Problem> {
    caller.require_operator()?;
    let ctx = &api.ctx;
    let sync = ctx
        .config
        .syncs
        .get(&name)
        .ok_or_else(|| no_such_sync(&api, &name))?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| {
                    Problem::bad_request(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?,
        ),
    };
    if request.dry_run {
        let report = plan::dry_run(&ctx.config, &ctx.pool, sync, request.full_resync).await?;
        return Ok((StatusCode::OK, Json(report)).into_response());
    }
    let label = caller.label();
    let started = trigger::start_in_background(
        ctx,
        sync,
        request.full_resync,
        &label,
        key.map(|key| IdempotencyKey {
            caller: &caller.name,
            key,
        }),
    )
    .await?;
    let location = format!("/api/v1/runs/{}", started.run.id);
    let mut response = (StatusCode::ACCEPTED, Json(started.run)).into_response();
    if let Ok(location) = location.parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if started.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// Pauses the sync's schedule (survives restarts). Runs started by hand
/// still run.
#[utoipa::path(post, path = "/syncs/{name}/pause", tag = "syncs",
    params(("name" = String, Path, description = "The sync's name in ebb.toml")),
    request_body(content = Option<PauseRequest>),
    responses(
        (status = 200, body = SyncSummary),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn pause_sync(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<PauseRequest>,
) -> Result<Json<SyncSummary>, Problem> {
    set_paused(&api, &caller, &name, true, request.note.as_deref()).await
}

/// Resumes the sync's schedule.
#[utoipa::path(post, path = "/syncs/{name}/resume", tag = "syncs",
    params(("name" = String, Path, description = "The sync's name in ebb.toml")),
    request_body(content = Option<PauseRequest>),
    responses(
        (status = 200, body = SyncSummary),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn resume_sync(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<PauseRequest>,
) -> Result<Json<SyncSummary>, Problem> {
    set_paused(&api, &caller, &name, false, request.note.as_deref()).await
}

async fn set_paused(
    api: &ApiState,
    caller: &Caller,
    name: &str,
    paused: bool,
    note: Option<&str>,
) -> Result<Json<SyncSummary>, Problem> {
    caller.require_operator()?;
    if !api.ctx.config.syncs.contains_key(name) {
        return Err(no_such_sync(api, name));
    }
    syncs::set_paused(
        &api.ctx.config,
        &api.ctx.pool,
        name,
        paused,
        &caller.label(),
        note,
    )
    .await?;
    syncs::one(&api.ctx.config, &api.ctx.pool, name)
        .await?
        .map(Json)
        .ok_or_else(|| no_such_sync(api, name))
}

fn no_such_sync(api: &ApiState, name: &str) -> Problem {
    Problem::not_found(format!(
        "no sync `{name}`; syncs are: {}",
        api.ctx
            .config
            .syncs
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
