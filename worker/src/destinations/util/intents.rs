//! Create intents (`ebb_intents`), for destinations whose create is not
//! idempotent: an intent is committed before a create is sent, so when the
//! create's answer is lost (a dropped connection, a worker crash before the
//! batch committed) the record comes back with an intent, and the
//! destination looks it up by its match key instead of creating it twice.
//! Intents are cleared when their record settles (see `settle`).

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;

#[derive(Clone)]
pub struct IntentLog {
    pool: PgPool,
}

impl IntentLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The keys among `keys` whose earlier create has an unknown outcome,
    /// with how long ago that create was attempted.
    pub async fn unresolved(
        &self,
        sync: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Duration>, sqlx::Error> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let found: Vec<(String, i64)> = sqlx::query_as(
            "SELECT record_key, (EXTRACT(EPOCH FROM clock_timestamp() - created_at) * 1000)::bigint \
             FROM ebb_intents WHERE sync_name = $1 AND record_key = ANY($2)",
        )
        .bind(sync)
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(found
            .into_iter()
            .map(|(key, age_ms)| (key, Duration::from_millis(age_ms.max(0) as u64)))
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
