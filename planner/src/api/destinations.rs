//! `/destinations`: each destination's limits, as configured and as they
//! stand across all workers, with its queue.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::ApiState;
use super::paging::Page;
use super::problem::Problem;
use crate::commands::limits::{self, DestinationLimits};
use crate::enqueue::Queue;
use crate::error::PlannerError;

/// Every destination, in name order.
#[utoipa::path(get, path = "/destinations", tag = "destinations",
    responses(
        (status = 200, body = Page<DestinationLimits>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The task queue (Redis) does not answer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_destinations(
    State(api): State<Arc<ApiState>>,
) -> Result<Json<Page<DestinationLimits>>, Problem> {
    Ok(Json(Page {
        items: current(&api).await?,
        next_cursor: None,
    }))
}

/// Every destination's limits as they stand, on the connection the API
/// keeps (opened again after an error).
pub(crate) async fn current(api: &ApiState) -> Result<Vec<DestinationLimits>, PlannerError> {
    let mut queue = api.queue.lock().await;
    let connected = match queue.as_mut() {
        Some(connected) => connected,
        None => queue.insert(Queue::connect(&api.ctx.config.state, &api.ctx.config.worker).await?),
    };
    let limits = limits::collect_on(&api.ctx.config, connected).await;
    if limits.is_err() {
        *queue = None;
    }
    limits
}
