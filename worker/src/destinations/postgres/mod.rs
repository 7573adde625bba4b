//! The `postgres` destination: upserts into a table by the mapped primary key
//! and, in mirror mode, deletes. Each request is one transaction; a
//! constraint or type violation rejects the chunk, which the shared delivery
//! code splits until only the offending records are rejected.
//!
//! - `statements.rs`: the SQL, built from the batch's field names.
//! - `service.rs`: running it and classifying Postgres errors.

mod service;
mod statements;

use std::time::Duration;

use ebb_shared::config::{PostgresDestinationConfig, SyncConfig};
use ebb_shared::secret::redact_url;
use futures::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::batch::{BatchContext, OutboundRecord};
use crate::destinations::Destination;
use crate::destinations::util::outcome::Attempt;
use crate::error::WorkerError;

/// Connects on first use, so a worker starts even while a destination
/// database is down (its batches retry instead).
pub fn connect_lazy(name: &str, config: &PostgresDestinationConfig) -> Result<PgPool, WorkerError> {
    let options =
        ebb_shared::db::options(&config.url).map_err(|e| WorkerError::DestinationSetup {
            destination: name.to_owned(),
            message: format!("invalid url {}: {e}", redact_url(config.url.expose())),
        })?;
    Ok(PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.application_name("ebb-worker")))
}

pub struct PostgresDestination {
    pool: PgPool,
    table: ebb_shared::config::TableName,
    /// The destination column the primary key is mapped to.
    key_column: String,
}

impl PostgresDestination {
    pub fn new(pool: PgPool, config: &PostgresDestinationConfig, sync: &SyncConfig) -> Self {
        let key_column = sync
            .mapping
            .iter()
            .find(|m| m.column == sync.primary_key)
            .map(|m| m.field.clone())
            .unwrap_or_else(|| sync.primary_key.clone());
        Self {
            pool,
            table: config.table.clone(),
            key_column,
        }
    }
}

impl Destination for PostgresDestination {
    fn send<'a>(
        &'a self,
        _ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(service::apply(
            &self.pool,
            &self.table,
            &self.key_column,
            records,
        ))
    }
}
