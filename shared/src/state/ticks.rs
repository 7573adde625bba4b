//! `ebb_schedule_ticks`: the schedule ticks planners fired, so that one tick
//! starts at most one run however many `ebb serve` replicas see it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::StateError;

/// Claims `sync`'s tick at `fire_at` for the planner `planner`: true when
/// this call claimed it, false when another planner (or an earlier life of
/// this one) already had.
pub async fn claim(
    pool: &PgPool,
    sync: &str,
    fire_at: DateTime<Utc>,
    planner: &str,
) -> Result<bool, StateError> {
    let claimed = sqlx::query(
        "INSERT INTO ebb_schedule_ticks (sync_name, fire_at, claimed_by) VALUES ($1, $2, $3) \
         ON CONFLICT (sync_name, fire_at) DO NOTHING",
    )
    .bind(sync)
    .bind(fire_at)
    .bind(planner)
    .execute(pool)
    .await
    .map_err(StateError::query("claiming a schedule tick"))?;
    Ok(claimed.rows_affected() == 1)
}

/// Records the run a claimed tick started.
pub async fn set_run(
    pool: &PgPool,
    sync: &str,
    fire_at: DateTime<Utc>,
    run_id: i64,
) -> Result<(), StateError> {
    sqlx::query("UPDATE ebb_schedule_ticks SET run_id = $3 WHERE sync_name = $1 AND fire_at = $2")
        .bind(sync)
        .bind(fire_at)
        .bind(run_id)
        .execute(pool)
        .await
        .map_err(StateError::query("recording the run of a schedule tick"))?;
    Ok(())
}

/// Whether `sync`'s tick at `fire_at` was missed: nobody claimed it, though
/// an earlier tick of the sync was (so the sync was scheduled before, and a
/// planner was meant to fire it).
pub async fn missed(pool: &PgPool, sync: &str, fire_at: DateTime<Utc>) -> Result<bool, StateError> {
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM ebb_schedule_ticks WHERE sync_name = $1 AND fire_at = $2) \
            AND EXISTS (SELECT 1 FROM ebb_schedule_ticks WHERE sync_name = $1 AND fire_at < $2)",
    )
    .bind(sync)
    .bind(fire_at)
    .fetch_one(pool)
    .await
    .map_err(StateError::query("reading the schedule ticks"))
}

/// Deletes ticks older than `days` days; returns how many.
pub async fn delete_older_than(pool: &PgPool, days: u32) -> Result<u64, StateError> {
    let deleted = sqlx::query(
        "DELETE FROM ebb_schedule_ticks WHERE fire_at < now() - make_interval(days => $1)",
    )
    .bind(days as i32)
    .execute(pool)
    .await
    .map_err(StateError::query("deleting old schedule ticks"))?;
    Ok(deleted.rows_affected())
}
