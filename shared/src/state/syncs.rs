//! `ebb_sync_settings`: what operators change about a sync at run time
//! (its schedule paused or not), kept across restarts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::StateError;

/// A sync's schedule paused (or resumed) by an operator.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SyncSetting {
    pub sync_name: String,
    pub paused: bool,
    /// Who changed it last (`cli`, `api:<token name>`).
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
    pub note: Option<String>,
}

/// Every sync's settings, by name; syncs never changed have none.
pub async fn all(pool: &PgPool) -> Result<HashMap<String, SyncSetting>, StateError> {
    let rows: Vec<SyncSetting> = sqlx::query_as(
        "SELECT sync_name, paused, changed_by, changed_at, note FROM ebb_sync_settings",
    )
    .fetch_all(pool)
    .await
    .map_err(StateError::query("reading sync settings"))?;
    Ok(rows.into_iter().map(|s| (s.sync_name.clone(), s)).collect())
}

pub async fn is_paused(pool: &PgPool, sync: &str) -> Result<bool, StateError> {
    let paused: Option<bool> =
        sqlx::query_scalar("SELECT paused FROM ebb_sync_settings WHERE sync_name = $1")
            .bind(sync)
            .fetch_optional(pool)
            .await
            .map_err(StateError::query("reading whether a sync is paused"))?;
    Ok(paused.unwrap_or(false))
}

/// Pauses or resumes a sync's schedule; returns the new setting.
pub async fn set_paused(
    pool: &PgPool,
    sync: &str,
    paused: bool,
    by: &str,
    note: Option<&str>,
) -> Result<SyncSetting, StateError> {
    sqlx::query_as(
        "INSERT INTO ebb_sync_settings (sync_name, paused, changed_by, note) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sync_name) DO UPDATE SET paused = EXCLUDED.paused, changed_by = EXCLUDED.changed_by, \
             changed_at = now(), note = EXCLUDED.note \
         RETURNING sync_name, paused, changed_by, changed_at, note",
    )
    .bind(sync)
    .bind(paused)
    .bind(by)
    .bind(note)
    .fetch_one(pool)
    .await
    .map_err(StateError::query("pausing or resuming a sync"))
}
