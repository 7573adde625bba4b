//! `type = "bigquery"`: Google BigQuery through its REST API v2.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::BigQuerySource;
use crate::config::{ConfigError, ConnectorTable};
use crate::secret::Secret;
use crate::sources::{Source, SourceConfig, SourceError};

/// Rows per page of results.
pub const DEFAULT_PAGE_SIZE: u32 = 10_000;

#[derive(Debug, Clone)]
pub struct BigQuerySourceConfig {
    /// The project the query jobs run (and are billed) in.
    pub project: String,
    /// `US`, `EU`, `europe-west3`, …: where the data is.
    pub location: Option<String>,
    pub auth: BigQueryAuth,
    /// A query that would bill more fails instead (BigQuery's
    /// `maximumBytesBilled`).
    pub maximum_bytes_billed: Option<u64>,
    pub page_size: u32,
    /// `https://bigquery.googleapis.com` unless set.
    pub base_url: String,
}

#[derive(Debug, Clone)]
pub enum BigQueryAuth {
    /// A service account's JSON key (signed into a self-signed JWT).
    ServiceAccountKey(Secret),
    /// An OAuth access token obtained elsewhere (`gcloud auth
    /// print-access-token`, workload identity).
    AccessToken(Secret),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBigQuerySourceConfig {
    project: String,
    location: Option<String>,
    credentials_path: Option<PathBuf>,
    credentials_json: Option<String>,
    access_token: Option<String>,
    maximum_bytes_billed: Option<u64>,
    page_size: Option<u32>,
    base_url: Option<String>,
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn SourceConfig>, ConfigError> {
    let raw: RawBigQuerySourceConfig = table.typed()?;
    let auth = match (raw.credentials_path, raw.credentials_json, raw.access_token) {
        (Some(path), None, None) => {
            let path = if path.is_relative() {
                table.base_dir().join(path)
            } else {
                path
            };
            let key = std::fs::read_to_string(&path).map_err(|e| {
                table.invalid(
                    "credentials_path",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            BigQueryAuth::ServiceAccountKey(Secret::new(key))
        }
        (None, Some(json), None) => {
            BigQueryAuth::ServiceAccountKey(table.secret("credentials_json", &json)?)
        }
        (None, None, Some(token)) => {
            BigQueryAuth::AccessToken(table.secret("access_token", &token)?)
        }
        _ => {
            return Err(table.invalid_table(
                "set exactly one of `credentials_path` (a service account's JSON key file), `credentials_json` or `access_token`",
            ));
        }
    };
    let page_size = raw.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(100..=100_000).contains(&page_size) {
        return Err(table.invalid(
            "page_size",
            format!("{page_size} rows per page; use 100 to 100000 (default {DEFAULT_PAGE_SIZE})"),
        ));
    }
    let base_url = match raw.base_url {
        Some(url) => {
            table.http_url("base_url", &url)?;
            url.trim_end_matches('/').to_owned()
        }
        None => "https://bigquery.googleapis.com".to_owned(),
    };
    Ok(Arc::new(BigQuerySourceConfig {
        project: raw.project,
        location: raw.location,
        auth,
        maximum_bytes_billed: raw.maximum_bytes_billed,
        page_size,
        base_url,
    }))
}

impl SourceConfig for BigQuerySourceConfig {
    fn type_name(&self) -> &'static str {
        "bigquery"
    }

    fn connect<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move {
            let source = BigQuerySource::connect(name, self)?;
            Ok(Box::new(source) as Box<dyn Source>)
        })
    }
}
