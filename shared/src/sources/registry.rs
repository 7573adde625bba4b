//! The source types Ebb knows: each `type` with the parser of its typed
//! config. Adding a source type adds its folder and one line here (see
//! `docs/connectors.md`).

use std::sync::Arc;

use super::SourceConfig;
use super::{bigquery, mysql, postgres, redshift, snowflake};
use crate::config::{ConfigError, ConnectorTable};

/// One source type.
pub struct SourceType {
    /// Its `type = "…"` in config.
    pub name: &'static str,
    /// Reads and checks its `[sources.NAME]` table.
    pub parse: fn(&ConnectorTable<'_>) -> Result<Arc<dyn SourceConfig>, ConfigError>,
}

pub const SOURCE_TYPES: &[SourceType] = &[
    SourceType {
        name: "postgres",
        parse: postgres::config::parse,
    },
    SourceType {
        name: "mysql",
        parse: mysql::config::parse,
    },
    SourceType {
        name: "redshift",
        parse: redshift::config::parse,
    },
    SourceType {
        name: "snowflake",
        parse: snowflake::config::parse,
    },
    SourceType {
        name: "bigquery",
        parse: bigquery::config::parse,
    },
];

/// Reads a `[sources.NAME]` table with the parser its `type` names.
pub(crate) fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn SourceConfig>, ConfigError> {
    let names: Vec<&str> = SOURCE_TYPES.iter().map(|t| t.name).collect();
    let kind = table.type_of(&names)?;
    match SOURCE_TYPES.iter().find(|t| t.name == kind) {
        Some(source_type) => (source_type.parse)(table),
        None => Err(table.invalid("type", format!("unknown type `{kind}`"))),
    }
}
