//! `type = "mysql"`: a MySQL or MariaDB warehouse.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::MySqlSource;
use crate::config::{ConfigError, ConnectorTable};
use crate::secret::Secret;
use crate::sources::{Source, SourceConfig, SourceError};

#[derive(Debug, Clone)]
pub struct MySqlSourceConfig {
    /// `mysql://user:password@host:3306/database` (with `?ssl-mode=…` when
    /// the server needs TLS).
    pub url: Secret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMySqlSourceConfig {
    url: String,
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn SourceConfig>, ConfigError> {
    let raw: RawMySqlSourceConfig = table.typed()?;
    let url = table.secret("url", &raw.url)?;
    if !url.expose().starts_with("mysql://") && !url.expose().starts_with("mariadb://") {
        return Err(table.invalid(
            "url",
            "a MySQL or MariaDB URL starts with mysql:// (mysql://user:password@host:3306/database)",
        ));
    }
    Ok(Arc::new(MySqlSourceConfig { url }))
}

impl SourceConfig for MySqlSourceConfig {
    fn type_name(&self) -> &'static str {
        "mysql"
    }

    fn connect<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move {
            let source = MySqlSource::connect(name, self).await?;
            Ok(Box::new(source) as Box<dyn Source>)
        })
    }
}
