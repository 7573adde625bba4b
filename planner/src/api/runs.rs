//! `/runs`: run history, one run with its counts, cost and events, its
//! per-record outcomes, and cancelling a run.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use ebb_shared::state::records::{self, Outcome, RecordFilter, RunRecord};
use ebb_shared::state::runs::{self, Run, RunFilter, RunState};
use serde::Deserialize;

use super::ApiState;
use super::auth::Caller;
use super::paging::{self, Page};
use super::problem::{ApiPath, ApiQuery, Problem};

/// Which runs to list, newest first.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Runs of this sync.
    pub sync: Option<String>,
    /// Runs in this state.
    pub state: Option<RunState>,
    /// Runs created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Runs created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Runs per page (50 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Which records of a run to list, in key order.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// The record with this primary key.
    pub key: Option<String>,
    /// Records with this outcome.
    pub outcome: Option<Outcome>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Records per page (50 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Run history, newest first.
#[utoipa::path(get, path = "/runs", tag = "runs",
    params(RunQuery),
    responses(
        (status = 200, body = Page<Run>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_runs(
    State(api): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<RunQuery>,
) -> Result<Json<Page<Run>>, Problem> {
    let limit = paging::limit(query.limit)?;
    let Some(sync) = paging::stored_text(query.sync.as_deref()) else {
        return Ok(Json(paging::page(Vec::new(), limit, |run: &Run| {
            run.id.to_string()
        })));
    };
    let found = runs::query(
        &api.ctx.pool,
        &RunFilter {
            sync,
            state: query.state,
            since: query.since,
            until: query.until,
            before_id: paging::id_cursor(query.cursor.as_deref())?,
            limit: limit + 1,
        },
    )
    .await?;
    Ok(Json(paging::page(found, limit, |run| run.id.to_string())))
}

/// One run: its counts, cost, timings and events.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, body = Run),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get_run(
    State(api): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Run>, Problem> {
    let mut run = runs::get(&api.ctx.pool, id).await?;
    runs::with_events(&api.ctx.pool, std::slice::from_mut(&mut run)).await?;
    Ok(Json(run))
}

/// A run's records and their outcomes, in key order; rejected and failed
/// ones with their reason. Kept for `[state].run_records_retention_days`
/// after the run ended.
#[utoipa::path(get, path = "/runs/{id}/records", tag = "runs",
    params(("id" = i64, Path, description = "The run's id"), RecordQuery),
    responses(
        (status = 200, body = Page<RunRecord>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The run's records were deleted after the retention period", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_run_records(
    State(api): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<RecordQuery>,
) -> Result<Json<Page<RunRecord>>, Problem> {
    let limit = paging::limit(query.limit)?;
    let run = runs::get(&api.ctx.pool, id).await?;
    if run.records_purged {
        return Err(Problem::new(
            axum::http::StatusCode::GONE,
            "gone",
            "Gone",
            format!(
                "run #{id}'s records were deleted {} days after it ended ([state].run_records_retention_days); its totals remain",
                api.ctx.config.state.run_records_retention_days
            ),
        ));
    }
    let Some(key) = paging::stored_text(query.key.as_deref()) else {
        return Ok(Json(paging::page(Vec::new(), limit, |r: &RunRecord| {
            r.record_key.clone()
        })));
    };
    let found = records::of_run(
        &api.ctx.pool,
        id,
        &RecordFilter {
            key,
            outcome: query.outcome,
            after_key: paging::key_cursor(query.cursor.as_deref()),
            limit: limit + 1,
        },
    )
    .await?;
    Ok(Json(paging::page(found, limit, |record| {
        record.record_key.clone()
    })))
}

/// Cancels a planning or running run: its unsent batches are not sent;
/// what was sent stays in the ledger, and batches being delivered finish.
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs",
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run, cancelled", body = Run),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run had already ended", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn cancel_run(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Run>, Problem> {
    caller.require_operator()?;
    let run = crate::control::runs::cancel(&api.ctx.pool, id, &caller.label()).await?;
    Ok(Json(run))
}

/// Approves a run a guardrail held: it becomes running and its batches go
/// on the queue.
#[utoipa::path(post, path = "/runs/{id}/approve", tag = "runs",
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run, approved and running", body = Run),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is not held", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn approve_run(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Run>, Problem> {
    caller.require_operator()?;
    let run = crate::control::trigger::approve(&api.ctx, id, &caller.label()).await?;
    Ok(Json(run))
}
