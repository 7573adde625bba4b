//! `type = "redshift"`: Amazon Redshift (or any Postgres-protocol warehouse
//! without Postgres's JSON functions and `COPY … TO STDOUT`).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::RedshiftSource;
use crate::config::{ConfigError, ConnectorTable};
use crate::secret::Secret;
use crate::sources::{Source, SourceConfig, SourceError};

/// Rows per `FETCH`: what the leader node sends at once.
pub const DEFAULT_FETCH_SIZE: u32 = 10_000;

#[derive(Debug, Clone)]
pub struct RedshiftSourceConfig {
    /// `postgres://user:password@cluster.region.redshift.amazonaws.com:5439/db`.
    pub url: Secret,
    pub fetch_size: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedshiftSourceConfig {
    url: String,
    fetch_size: Option<u32>,
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn SourceConfig>, ConfigError> {
    let raw: RawRedshiftSourceConfig = table.typed()?;
    let fetch_size = raw.fetch_size.unwrap_or(DEFAULT_FETCH_SIZE);
    if !(100..=1_000_000).contains(&fetch_size) {
        return Err(table.invalid(
            "fetch_size",
            format!(
                "{fetch_size} rows per FETCH; use 100 to 1000000 (default {DEFAULT_FETCH_SIZE})"
            ),
        ));
    }
    Ok(Arc::new(RedshiftSourceConfig {
        url: table.secret("url", &raw.url)?,
        fetch_size,
    }))
}

impl SourceConfig for RedshiftSourceConfig {
    fn type_name(&self) -> &'static str {
        "redshift"
    }

    fn connect<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move {
            let source = RedshiftSource::connect(name, self).await?;
            Ok(Box::new(source) as Box<dyn Source>)
        })
    }
}
