//! Readiness, as `ebb serve` and `ebb-worker --listen` report it on
//! `/readyz`: Ebb can do its work only while the state database and Redis
//! both answer. `Err` names what does not answer, and why, for the log (the
//! endpoints themselves answer without the details).

use apalis_redis::ConnectionManager;
use sqlx::PgPool;

pub async fn database_ready(pool: &PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| format!("state database: {e}"))
}

pub async fn queue_ready(redis: &mut ConnectionManager) -> Result<(), String> {
    redis::cmd("PING")
        .query_async::<String>(redis)
        .await
        .map(drop)
        .map_err(|e| format!("queue: {e}"))
}
