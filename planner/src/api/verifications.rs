//! `/verifications`: records read back from destinations and compared
//! with what Ebb delivered (`ebb verify`); start one, read its drift, send
//! the drift again.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ebb_shared::state::runs::Run;
use ebb_shared::state::verifications::{self, Drift, Verification};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::Caller;
use super::paging::{self, Page};
use super::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use crate::control::trigger;
use crate::error::PlannerError;
use crate::verify::{self, Scope};

/// Drifted records a verification's detail lists.
const DRIFT_LISTED: i64 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerificationQuery {
    /// Only this sync's verifications.
    pub sync: Option<String>,
    /// Verifications per page (50 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// What to read back.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Records read back at random (100 by default).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "whole_number")]
    pub sample: Option<u64>,
    /// Every delivered record instead of a sample (`sample` is then
    /// ignored).
    #[serde(default)]
    pub all: bool,
}

/// A count, as JSON Schema reads integers: `7` and `7.0` alike.
fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..1.8e19).contains(f))
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not a count of records")))
}

/// A verification and its drifted records (the first 500, by key).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerificationDetail {
    pub verification: Verification,
    pub drift: Vec<Drift>,
}

/// Verifications, newest first.
#[utoipa::path(get, path = "/verifications", tag = "verifications",
    params(VerificationQuery),
    responses(
        (status = 200, body = Page<Verification>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_verifications(
    State(api): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<VerificationQuery>,
) -> Result<Json<Page<Verification>>, Problem> {
    let limit = paging::limit(query.limit)?;
    let Some(sync) = paging::stored_text(query.sync.as_deref()) else {
        return Ok(Json(Page {
            items: Vec::new(),
            next_cursor: None,
        }));
    };
    let items = verifications::list(&api.ctx.pool, sync, limit)
        .await
        .map_err(PlannerError::from)?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// One verification, with its drifted records.
#[utoipa::path(get, path = "/verifications/{id}", tag = "verifications",
    params(("id" = i64, Path, description = "The verification's id")),
    responses(
        (status = 200, body = VerificationDetail),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get_verification(
    State(api): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<VerificationDetail>, Problem> {
    let verification = verifications::get(&api.ctx.pool, id)
        .await
        .map_err(PlannerError::from)?;
    let drift = verifications::drift(&api.ctx.pool, id, DRIFT_LISTED)
        .await
        .map_err(PlannerError::from)?;
    Ok(Json(VerificationDetail {
        verification,
        drift,
    }))
}

/// Starts a verification of a sync (operators; it spends requests at the
/// destination). Answers 202 with it, running; poll its `Location`.
#[utoipa::path(post, path = "/syncs/{name}/verifications", tag = "verifications",
    params(("name" = String, Path, description = "The sync's name")),
    request_body(content = Option<VerifyRequest>, description = "Optional; a sample of 100 records by default"),
    responses(
        (status = 202, description = "The verification, running", body = Verification),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn start_verification(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<Response, Problem> {
    caller.require_operator()?;
    let sync = api
        .ctx
        .config
        .syncs
        .get(&name)
        .ok_or_else(|| Problem::not_found(format!("no sync `{name}`")))?
        .clone();
    let scope = Scope::asked(request.sample, request.all).map_err(Problem::bad_request)?;
    let id = verify::start(&api.ctx.pool, &sync, scope, &caller.label()).await?;
    let ctx = api.ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = verify::verify_started(&ctx.config, &ctx.pool, &sync, scope, id).await {
            tracing::error!(sync = %sync.name, verification = id, error = %e, "verification failed");
        }
    });
    let verification = verifications::get(&api.ctx.pool, id)
        .await
        .map_err(PlannerError::from)?;
    let mut response = (StatusCode::ACCEPTED, Json(verification)).into_response();
    if let Ok(location) = format!("/api/v1/verifications/{id}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Sends a verification's drifted records again (operators): marks them in
/// the ledger and starts a run of the sync, answered 202 like a trigger.
/// 409 while the verification runs, or while the sync has an active run
/// (the records stay marked: that run's successor sends them).
#[utoipa::path(post, path = "/verifications/{id}/resend", tag = "verifications",
    params(("id" = i64, Path, description = "The verification's id")),
    responses(
        (status = 202, description = "The run that sends the drift again", body = Run),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn resend_verification(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, Problem> {
    caller.require_operator()?;
    let pool = &api.ctx.pool;
    let verification = verifications::get(pool, id)
        .await
        .map_err(PlannerError::from)?;
    if verification.state != "succeeded" {
        return Err(Problem::conflict(format!(
            "verification #{id} is {}; only a finished verification's drift can be sent again",
            verification.state
        )));
    }
    let sync = api
        .ctx
        .config
        .syncs
        .get(&verification.sync_name)
        .ok_or_else(|| {
            Problem::not_found(format!(
                "sync `{}` is no longer in the config",
                verification.sync_name
            ))
        })?;
    verifications::mark_for_resend(pool, id, &sync.name)
        .await
        .map_err(PlannerError::from)?;
    let started =
        trigger::start_in_background(&api.ctx, sync, false, &caller.label(), None).await?;
    verifications::set_resend_run(pool, id, started.run.id)
        .await
        .map_err(PlannerError::from)?;
    let location = format!("/api/v1/runs/{}", started.run.id);
    let mut response = (StatusCode::ACCEPTED, Json(started.run)).into_response();
    if let Ok(location) = location.parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}
