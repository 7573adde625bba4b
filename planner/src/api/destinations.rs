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
    let mut queue = api.queue.lock().await;
    if queue.is_none() {
        let connected = Queue::connect(&api.ctx.config.state, &api.ctx.config.worker)
            .await
            .map_err(crate::error::PlannerError::from)?;
        *queue = Some(connected);
    }
    let Some(connected) = queue.as_mut() else {
        return Err(Problem::from(crate::error::PlannerError::Usage(
            "no queue connection".into(),
        )));
    };
    match limits::collect_on(&api.ctx.config, connected).await {
        Ok(items) => Ok(Json(Page {
            items,
            next_cursor: None,
        })),
        Err(e) => {
            *queue = None;
            Err(e.into())
        }
    }
}
