//! `type = "postgres"`: a table in another Postgres database, upserted by
//! the sync's primary key.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

use super::PostgresDestination;
use crate::config::{
    ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping, SyncConfig,
};
use crate::destinations::budget::BatchWrites;
use crate::destinations::{BuildContext, Destination, DestinationConfig, DestinationError};
use crate::secret::Secret;
use crate::sql::quote_ident;

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: Secret,
    pub table: TableName,
    pub delivery: DeliverySettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgresConfig {
    url: String,
    table: String,
}

/// 500 rows a transaction; 8 concurrent transactions against one database.
/// Adaptive concurrency is off by default: Ebb's own database work
/// dominates a postgres destination's latency, so round trips say little
/// about the destination. Statements have no timeout of their own.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(500, 8)
        .adaptive_concurrency(false)
        .without_timeout()
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawPostgresConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let url = table.secret("url", &raw.url)?;
    let table_name =
        TableName::from_str(&raw.table).map_err(|message| table.invalid("table", message))?;
    Ok(Arc::new(PostgresConfig {
        url,
        table: table_name,
        delivery,
    }))
}

impl DestinationConfig for PostgresConfig {
    fn type_name(&self) -> &'static str {
        "postgres"
    }

    fn keeps_fields_on_update(&self) -> bool {
        true
    }

    /// Statements on a database connection, not API requests: nothing
    /// counts against a quota.
    fn requests_for(&self, _sync: &SyncConfig, _batch: &BatchWrites) -> u64 {
        0
    }

    fn requests_note(&self, _sync: &SyncConfig) -> Option<&'static str> {
        Some("writes are SQL statements (one transaction per batch), not API requests")
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    fn check_mapping(
        &self,
        _destination: &str,
        mapping: &[FieldMapping],
        primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        if !mapping.is_empty() && !mapping.iter().any(|m| m.column == primary_key) {
            return Err(format!(
                "the postgres destination upserts by the primary key, so the mapping must map a column to `{primary_key}` (e.g. `id = \"{primary_key}\"`)"
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(PostgresDestination::new(
            ctx.name, self, ctx.syncs,
        )?))
    }
}

/// `schema.table` (schema optional), kept unquoted; [`TableName::quoted`]
/// renders it as a safe SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.table)),
            None => quote_ident(&self.table),
        }
    }
}

impl FromStr for TableName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('.').map(str::trim).collect();
        let ok = |p: &str| !p.is_empty();
        match parts.as_slice() {
            [table] if ok(table) => Ok(TableName {
                schema: None,
                table: (*table).to_owned(),
            }),
            [schema, table] if ok(schema) && ok(table) => Ok(TableName {
                schema: Some((*schema).to_owned()),
                table: (*table).to_owned(),
            }),
            _ => Err(format!(
                "`{s}` is not a table name; use `table` or `schema.table`"
            )),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}
