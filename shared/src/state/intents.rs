//! Create intents (`ebb_intents`), for destinations whose create is not
//! idempotent: an intent is committed before a create is sent, so when the
//! create's answer is lost (a dropped connection, a worker crash before the
//! batch committed) the record comes back with an intent, and the
//! destination looks it up by its match key instead of creating it twice.
//! Intents are cleared when their record settles ([`clear_answered`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::error::StateError;

/// An earlier create of a record, whose outcome is unknown.
#[derive(Debug, Clone, Copy)]
pub struct Intent {
    /// How long ago the create was attempted.
    pub age: Duration,
    /// When, on the state database's clock: a record the create made is
    /// no older than this (give or take the destination's clock).
    pub at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct IntentLog {
    pool: PgPool,
}

impl IntentLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The keys among `keys` whose earlier create has an unknown outcome,
    /// with when that create was attempted.
    pub async fn unresolved(
        &self,
        sync: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Intent>, sqlx::Error> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let found: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT record_key, (EXTRACT(EPOCH FROM clock_timestamp() - created_at) * 1000)::bigint, created_at \
             FROM ebb_intents WHERE sync_name = $1 AND record_key = ANY($2)",
        )
        .bind(sync)
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(found
            .into_iter()
            .map(|(key, age_ms, at)| {
                let age = Duration::from_millis(age_ms.max(0) as u64);
                (key, Intent { age, at })
            })
            .collect())
    }

    /// Commits intents for `keys`, before their create is sent. An intent
    /// keeps the time of the first attempt.
    pub async fn record(&self, sync: &str, run_id: i64, keys: &[&str]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO ebb_intents (sync_name, record_key, run_id) \
             SELECT $1, k, $2 FROM UNNEST($3::text[]) AS k \
             ON CONFLICT (sync_name, record_key) DO NOTHING",
        )
        .bind(sync)
        .bind(run_id)
        .bind(keys)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Clears the intents of records that were applied (their id is in the
/// ledger now) or refused (nothing was created). A failed record keeps its
/// intent: its create may have happened.
pub async fn clear_answered(
    tx: &mut PgConnection,
    sync: &str,
    answered: &[&str],
) -> Result<(), StateError> {
    sqlx::query("DELETE FROM ebb_intents WHERE sync_name = $1 AND record_key = ANY($2)")
        .bind(sync)
        .bind(answered)
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("clearing answered create intents"))?;
    Ok(())
}
