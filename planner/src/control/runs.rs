//! Stopping a run by hand.

use ebb_shared::state::runs::{self, Run};
use sqlx::PgPool;

use crate::error::PlannerError;

/// Cancels a planning, held or running run: its unsent batches are not
/// sent; what was sent stays in the ledger. `by` is who asked.
pub async fn cancel(pool: &PgPool, id: i64, by: &str) -> Result<Run, PlannerError> {
    let run = runs::get(pool, id).await?;
    if !runs::cancel(pool, id, by).await? {
        return Err(PlannerError::Conflict(format!(
            "run #{id} has already ended ({})",
            run.state
        )));
    }
    ebb_shared::telemetry::metrics::run_ended(
        &run.sync_name,
        "cancelled",
        (chrono::Utc::now() - run.created_at).to_std().ok(),
    );
    Ok(runs::get(pool, id).await?)
}
