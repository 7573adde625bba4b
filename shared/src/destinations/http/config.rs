//! `type = "http"`: the URL batches are `POST`ed to, and its headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::HttpDestination;
use crate::config::{ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings};
use crate::destinations::{BuildContext, Destination, DestinationConfig, DestinationError};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub url: Secret,
    /// Sent with every request; values may hold credentials.
    pub headers: BTreeMap<String, Secret>,
    pub delivery: DeliverySettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpConfig {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// 100 records a request; 8 requests in flight to one endpoint, across all
/// workers.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(100, 8)
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawHttpConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let url = table.secret("url", &raw.url)?;
    table.http_url("url", url.expose())?;
    let mut headers = BTreeMap::new();
    for (header, value) in raw.headers {
        let key = format!("{}.headers.{header}", table.key());
        headers.insert(header, table.secret_at("headers", &key, &value)?);
    }
    Ok(Arc::new(HttpConfig {
        url,
        headers,
        delivery,
    }))
}

impl DestinationConfig for HttpConfig {
    fn type_name(&self) -> &'static str {
        "http"
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(HttpDestination::new(ctx.http.clone(), self)))
    }
}
