//! `ebb_ui_sessions`: browsers logged in to `ebb serve`'s web UI. The
//! cookie itself is never stored, only its digest.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::StateError;

/// A logged-in browser, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UiSession {
    pub token_name: String,
    /// SHA-256 of the API token it was opened with (none without auth).
    pub token_digest: Option<Vec<u8>>,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// Opens a session; also drops every expired one, so the table holds only
/// the sessions of the last hours.
pub async fn open(
    pool: &PgPool,
    id_digest: &[u8],
    token_name: &str,
    token_digest: Option<&[u8]>,
    csrf: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StateError> {
    sqlx::query("DELETE FROM ebb_ui_sessions WHERE expires_at <= now()")
        .execute(pool)
        .await
        .map_err(StateError::query("dropping expired UI sessions"))?;
    sqlx::query(
        "INSERT INTO ebb_ui_sessions (id_digest, token_name, token_digest, csrf, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id_digest)
    .bind(token_name)
    .bind(token_digest)
    .bind(csrf)
    .bind(expires_at)
    .execute(pool)
    .await
    .map_err(StateError::query("opening a UI session"))?;
    Ok(())
}

/// The session whose cookie has this digest, unless it expired.
pub async fn find(pool: &PgPool, id_digest: &[u8]) -> Result<Option<UiSession>, StateError> {
    sqlx::query_as(
        "SELECT token_name, token_digest, csrf, expires_at FROM ebb_ui_sessions \
         WHERE id_digest = $1 AND expires_at > now()",
    )
    .bind(id_digest)
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("reading a UI session"))
}

/// Logs a session out; also drops every expired one.
pub async fn close(pool: &PgPool, id_digest: &[u8]) -> Result<(), StateError> {
    sqlx::query("DELETE FROM ebb_ui_sessions WHERE id_digest = $1 OR expires_at <= now()")
        .bind(id_digest)
        .execute(pool)
        .await
        .map_err(StateError::query("closing a UI session"))?;
    Ok(())
}
