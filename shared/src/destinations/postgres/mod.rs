//! The `postgres` destination: upserts into a table by the mapped primary key
//! (a batch of keys never delivered goes in as a plain insert, about two
//! thirds of the upsert's cost) and, in mirror mode, deletes. Each request
//! is one transaction; a constraint or type violation rejects the chunk,
//! which the shared delivery code splits until only the offending records
//! are rejected.
//!
//! - `config.rs`: the database URL and table.
//! - `statements.rs`: the SQL, built from the batch's field names.
//! - `service.rs`: running it and classifying Postgres errors.
//! - `read_back.rs`: rows and keys read back for `ebb verify`.

pub mod config;
mod read_back;
mod service;
mod statements;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::SyncConfig;
use crate::destinations::destination::ReadBack;
use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::outcome::Attempt;
use crate::destinations::{Destination, DestinationError};
use crate::secret::redact_url;
pub use config::{PostgresConfig, TableName};

pub struct PostgresDestination {
    pool: PgPool,
    table: TableName,
    /// Each sync's key and kept columns.
    columns: HashMap<String, SyncColumns>,
}

/// How a sync writes the table.
pub struct SyncColumns {
    /// The column the sync's primary key is mapped to.
    pub key: String,
    /// Columns inserted with a row and never updated (`on_create_only`).
    pub on_create_only: Vec<String>,
    /// An upsert into the table succeeded in this process, so the table
    /// has the unique index on the key that `ON CONFLICT` needs. Until then
    /// every batch goes by the upsert, so that a table without one fails
    /// with that error rather than taking plain inserts it could not
    /// deduplicate on a redelivery.
    pub upsert_proven: AtomicBool,
}

impl PostgresDestination {
    /// Connects on first use, so a worker starts even while a destination
    /// database is down (its batches retry instead).
    pub fn new(
        name: &str,
        config: &PostgresConfig,
        syncs: &[&SyncConfig],
    ) -> Result<Self, DestinationError> {
        let options = crate::db::options(&config.url).map_err(|e| DestinationError::Setup {
            destination: name.to_owned(),
            message: format!("invalid url {}: {e}", redact_url(config.url.expose())),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options.application_name("ebb-worker"));
        let columns = syncs
            .iter()
            .map(|sync| {
                let key = sync
                    .mapping
                    .iter()
                    .find(|m| m.column == sync.primary_key)
                    .map(|m| m.field.clone())
                    .unwrap_or_else(|| sync.primary_key.clone());
                let on_create_only = sync.on_create_only.clone();
                (
                    sync.name.clone(),
                    SyncColumns {
                        key,
                        on_create_only,
                        upsert_proven: AtomicBool::new(false),
                    },
                )
            })
            .collect();
        Ok(Self {
            pool,
            table: config.table.clone(),
            columns,
        })
    }
}

impl Destination for PostgresDestination {
    fn send<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let Some(columns) = self.columns.get(&ctx.sync) else {
                return Attempt::Fatal(format!(
                    "sync `{}` does not write to table {} in this worker's config",
                    ctx.sync, self.table
                ));
            };
            service::apply(&self.pool, &self.table, columns, ctx.new_keys_only, records).await
        })
    }

    fn read_back<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> Option<BoxFuture<'a, ReadBack>> {
        let key_column = &self.columns.get(&ctx.sync)?.key;
        Some(Box::pin(read_back::rows(
            &self.pool,
            &self.table,
            key_column,
            records,
        )))
    }

    fn list_keys<'a>(
        &'a self,
        ctx: &'a BatchContext,
    ) -> Option<BoxFuture<'a, Result<Vec<String>, String>>> {
        let key_column = &self.columns.get(&ctx.sync)?.key;
        Some(Box::pin(read_back::keys(
            &self.pool,
            &self.table,
            key_column,
        )))
    }
}
