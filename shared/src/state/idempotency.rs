//! `ebb_api_idempotency`: a run trigger retried with the same
//! `Idempotency-Key` (by the same caller) returns the run the first one
//! started instead of starting another.

use sqlx::PgConnection;

use crate::error::StateError;

/// Serializes triggers with the same key until the transaction ends, and
/// returns the run an earlier trigger with it started, if any (keys are
/// kept a day).
pub async fn claim(
    tx: &mut PgConnection,
    caller: &str,
    key: &str,
) -> Result<Option<i64>, StateError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 7))")
        .bind(caller)
        .bind(key)
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("locking an idempotency key"))?;
    sqlx::query("DELETE FROM ebb_api_idempotency WHERE created_at < now() - interval '1 day'")
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("forgetting old idempotency keys"))?;
    sqlx::query_scalar("SELECT run_id FROM ebb_api_idempotency WHERE caller = $1 AND key = $2")
        .bind(caller)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StateError::query("reading an idempotency key"))
}

/// Remembers the run a trigger with `key` started.
pub async fn remember(
    tx: &mut PgConnection,
    caller: &str,
    key: &str,
    run_id: i64,
) -> Result<(), StateError> {
    sqlx::query("INSERT INTO ebb_api_idempotency (caller, key, run_id) VALUES ($1, $2, $3)")
        .bind(caller)
        .bind(key)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("remembering an idempotency key"))?;
    Ok(())
}
