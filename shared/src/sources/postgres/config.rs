//! `type = "postgres"`: a Postgres (or wire-compatible) warehouse.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::PostgresSource;
use crate::config::{ConfigError, ConnectorTable};
use crate::secret::Secret;
use crate::sources::{Source, SourceConfig, SourceError};

#[derive(Debug, Clone)]
pub struct PostgresSourceConfig {
    pub url: Secret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgresSourceConfig {
    url: String,
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn SourceConfig>, ConfigError> {
    let raw: RawPostgresSourceConfig = table.typed()?;
    Ok(Arc::new(PostgresSourceConfig {
        url: table.secret("url", &raw.url)?,
    }))
}

impl SourceConfig for PostgresSourceConfig {
    fn type_name(&self) -> &'static str {
        "postgres"
    }

    fn connect<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move {
            let source = PostgresSource::connect(name, self).await?;
            Ok(Box::new(source) as Box<dyn Source>)
        })
    }
}
