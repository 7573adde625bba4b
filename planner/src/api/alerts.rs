//! `/alerts`: incidents the configured alerts opened, and resolved.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ebb_shared::state::alerts::{self, Incident};
use serde::Deserialize;

use super::ApiState;
use super::paging::{self, Page};
use super::problem::{ApiQuery, Problem};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// Also list resolved incidents.
    #[serde(default)]
    pub all: bool,
    /// Incidents per page (50 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Incidents, newest first: open ones (with `all`, resolved ones too).
#[utoipa::path(get, path = "/alerts", tag = "alerts",
    params(AlertQuery),
    responses(
        (status = 200, body = Page<Incident>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_incidents(
    State(api): State<Arc<ApiState>>,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> Result<Json<Page<Incident>>, Problem> {
    let limit = paging::limit(query.limit)?;
    let items = alerts::incidents(&api.ctx.pool, query.all, limit)
        .await
        .map_err(crate::error::PlannerError::from)?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}
