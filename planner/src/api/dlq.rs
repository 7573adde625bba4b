//! `/dlq`: dead-lettered records: list, show, replay, dismiss, resolve.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ebb_shared::state::dlq::{self, Closing, DlqEntry, DlqFilter};
use ebb_shared::state::runs::Run;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::Caller;
use super::paging::{self, Page};
use super::problem::{ApiBody, ApiPath, ApiQuery, Problem};
use crate::control::dlq::{self as control, Selection};

/// Which entries to list, oldest first.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DlqQuery {
    /// Entries of this sync.
    pub sync: Option<String>,
    /// `open` (the default), `resolved`, `discarded` or `superseded`.
    pub status: Option<DlqStatus>,
    /// Entries whose reason contains this (case-insensitive).
    pub reason: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Entries per page (50 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DlqStatus {
    Open,
    Resolved,
    Discarded,
    Superseded,
}

impl DlqStatus {
    fn as_str(self) -> &'static str {
        match self {
            DlqStatus::Open => "open",
            DlqStatus::Resolved => "resolved",
            DlqStatus::Discarded => "discarded",
            DlqStatus::Superseded => "superseded",
        }
    }
}

/// Which open entries to replay: their ids, or every open entry of a sync.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ReplayRequest {
    Sync(SyncEntries),
    Ids(EntryIds),
}

/// Which open entries to close, and why: their ids, or every open entry of
/// a sync.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CloseRequest {
    Sync(SyncEntries),
    Ids(EntryIds),
}

/// Every open entry of a sync.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncEntries {
    pub sync: String,
    /// Only the entries whose reason contains this (case-insensitive).
    pub reason: Option<String>,
    /// Why (dismiss and resolve); recorded with the entries.
    pub note: Option<String>,
}

/// Entries by id.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryIds {
    #[schema(min_items = 1)]
    #[serde(deserialize_with = "ids")]
    pub ids: Vec<i64>,
    /// Why (dismiss and resolve); recorded with the entries.
    pub note: Option<String>,
}

/// Entry ids, as JSON Schema reads integers: `7` and `7.0` alike.
fn ids<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<i64>, D::Error> {
    let numbers = Vec::<serde_json::Number>::deserialize(deserializer)?;
    numbers
        .iter()
        .map(|n| {
            n.as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not an entry id")))
        })
        .collect()
}

fn selection(ids: &[i64], sync: Option<&SyncEntries>) -> Result<Selection, Problem> {
    if ids.is_empty() && sync.is_none() {
        return Err(Problem::bad_request(
            "give the entries' `ids`, or a `sync` for all its open entries",
        ));
    }
    Ok(Selection {
        ids: ids.to_vec(),
        sync: sync.map(|s| s.sync.clone()),
        reason: sync.and_then(|s| s.reason.clone()),
    })
}

impl ReplayRequest {
    fn selection(&self) -> Result<Selection, Problem> {
        match self {
            ReplayRequest::Ids(e) => selection(&e.ids, None),
            ReplayRequest::Sync(e) => selection(&[], Some(e)),
        }
    }
}

impl CloseRequest {
    fn selection(&self) -> Result<Selection, Problem> {
        match self {
            CloseRequest::Ids(e) => selection(&e.ids, None),
            CloseRequest::Sync(e) => selection(&[], Some(e)),
        }
    }

    fn note(&self) -> Option<&str> {
        match self {
            CloseRequest::Ids(e) => e.note.as_deref(),
            CloseRequest::Sync(e) => e.note.as_deref(),
        }
    }
}

/// The runs a replay started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    pub runs: Vec<Run>,
}

/// The entries an operation closed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Closed {
    pub ids: Vec<i64>,
}

/// Dead-lettered records, oldest first.
#[utoipa::path(get, path = "/dlq", tag = "dlq",
    params(DlqQuery),
    responses(
        (status = 200, body = Page<DlqEntry>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_dlq(
    State(api): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<DlqQuery>,
) -> Result<Json<Page<DlqEntry>>, Problem> {
    let limit = paging::limit(query.limit)?;
    let (Some(sync), Some(reason)) = (
        paging::stored_text(query.sync.as_deref()),
        paging::stored_text(query.reason.as_deref()),
    ) else {
        return Ok(Json(paging::page(Vec::new(), limit, |e: &DlqEntry| {
            e.id.to_string()
        })));
    };
    let entries = dlq::list(
        &api.ctx.pool,
        &DlqFilter {
            sync,
            status: query.status.map(DlqStatus::as_str),
            include_closed: false,
            reason,
            record_key: None,
            reason_group: None,
            after_id: paging::id_cursor(query.cursor.as_deref())?,
            limit: limit + 1,
        },
    )
    .await?;
    Ok(Json(paging::page(entries, limit, |e| e.id.to_string())))
}

/// One entry, with its payload and reason.
#[utoipa::path(get, path = "/dlq/{id}", tag = "dlq",
    params(("id" = i64, Path, description = "The entry's id")),
    responses(
        (status = 200, body = DlqEntry),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get_dlq_entry(
    State(api): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<DlqEntry>, Problem> {
    dlq::get(&api.ctx.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("DLQ entry #{id} does not exist")))
}

/// Sends entries again, one replay run per sync; successes leave the DLQ.
/// An entry whose record has since been delivered in a newer version is
/// closed as superseded instead.
#[utoipa::path(post, path = "/dlq/replay", tag = "dlq",
    request_body = ReplayRequest,
    responses(
        (status = 202, description = "The replay runs, started", body = Replayed),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An entry is closed or was rejected at planning, or its sync has an active run", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn replay_dlq(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiBody(request): ApiBody<ReplayRequest>,
) -> Result<(StatusCode, Json<Replayed>), Problem> {
    caller.require_operator()?;
    let selection = request.selection()?;
    if let Some(sync) = &selection.sync
        && !api.ctx.config.syncs.contains_key(sync)
    {
        return Err(Problem::not_found(format!("no sync `{sync}`")));
    }
    if paging::stored_text(selection.reason.as_deref()).is_none() {
        return Err(Problem::not_found(
            "no open DLQ entry has a reason containing NUL",
        ));
    }
    let started = control::replay(&api.ctx, &selection, &caller.label()).await?;
    Ok((StatusCode::ACCEPTED, Json(Replayed { runs: started })))
}

/// Closes open entries without sending them: they are not to be delivered.
#[utoipa::path(post, path = "/dlq/dismiss", tag = "dlq",
    request_body = CloseRequest,
    responses(
        (status = 200, body = Closed),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No open entry matches the sync and reason", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn dismiss_dlq(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiBody(request): ApiBody<CloseRequest>,
) -> Result<Json<Closed>, Problem> {
    close(&api, &caller, &request, Closing::Dismiss).await
}

/// Closes open entries as dealt with another way (e.g. fixed in the
/// destination by hand).
#[utoipa::path(post, path = "/dlq/resolve", tag = "dlq",
    request_body = CloseRequest,
    responses(
        (status = 200, body = Closed),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No open entry matches the sync and reason", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn resolve_dlq(
    State(api): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    ApiBody(request): ApiBody<CloseRequest>,
) -> Result<Json<Closed>, Problem> {
    close(&api, &caller, &request, Closing::Resolve).await
}

async fn close(
    api: &ApiState,
    caller: &Caller,
    request: &CloseRequest,
    closing: Closing,
) -> Result<Json<Closed>, Problem> {
    caller.require_operator()?;
    let selection = request.selection()?;
    if paging::stored_text(selection.sync.as_deref()).is_none()
        || paging::stored_text(selection.reason.as_deref()).is_none()
    {
        return Ok(Json(Closed { ids: Vec::new() }));
    }
    let ids = control::close(
        &api.ctx.pool,
        &selection,
        closing,
        &caller.label(),
        request.note(),
    )
    .await?;
    Ok(Json(Closed { ids }))
}
