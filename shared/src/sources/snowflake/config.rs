//! `type = "snowflake"`: Snowflake through its SQL API v2.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::SnowflakeSource;
use crate::config::{ConfigError, ConnectorTable};
use crate::secret::Secret;
use crate::sources::{Source, SourceConfig, SourceError};

#[derive(Debug, Clone)]
pub struct SnowflakeSourceConfig {
    /// The account identifier (`myorg-myaccount`, or a locator such as
    /// `xy12345.eu-central-1`).
    pub account: String,
    /// `https://<account>.snowflakecomputing.com` unless set.
    pub base_url: String,
    pub user: String,
    pub auth: SnowflakeAuth,
    pub warehouse: Option<String>,
    pub role: Option<String>,
    pub database: Option<String>,
    pub schema: Option<String>,
    /// Tagged on every statement, so Ebb's cost is found in QUERY_HISTORY;
    /// `ebb:<sync>` unless set.
    pub query_tag: Option<String>,
    /// How long a statement may run (Snowflake's `timeout`).
    pub statement_timeout_secs: u64,
}

/// How Ebb signs in: key-pair authentication (a JWT signed with the
/// user's private key) or an OAuth access token.
#[derive(Debug, Clone)]
pub enum SnowflakeAuth {
    /// An unencrypted PKCS#8 PEM key (`openssl pkcs8 -topk8 -nocrypt`).
    KeyPair {
        private_key: Secret,
    },
    OAuth {
        token: Secret,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnowflakeSourceConfig {
    account: String,
    base_url: Option<String>,
    user: String,
    private_key: Option<String>,
    private_key_path: Option<PathBuf>,
    oauth_token: Option<String>,
    warehouse: Option<String>,
    role: Option<String>,
    database: Option<String>,
    schema: Option<String>,
    query_tag: Option<String>,
    statement_timeout_secs: Option<u64>,
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn SourceConfig>, ConfigError> {
    let raw: RawSnowflakeSourceConfig = table.typed()?;
    if raw.account.trim().is_empty() {
        return Err(table.invalid("account", "the account identifier, e.g. `myorg-myaccount`"));
    }
    let auth = match (raw.private_key, raw.private_key_path, raw.oauth_token) {
        (Some(key), None, None) => SnowflakeAuth::KeyPair {
            private_key: table.secret("private_key", &key)?,
        },
        (None, Some(path), None) => {
            let path = if path.is_relative() {
                table.base_dir().join(path)
            } else {
                path
            };
            let key = std::fs::read_to_string(&path).map_err(|e| {
                table.invalid(
                    "private_key_path",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            SnowflakeAuth::KeyPair {
                private_key: Secret::new(key),
            }
        }
        (None, None, Some(token)) => SnowflakeAuth::OAuth {
            token: table.secret("oauth_token", &token)?,
        },
        _ => {
            return Err(table.invalid_table(
                "set exactly one of `private_key` (PEM text), `private_key_path` or `oauth_token`",
            ));
        }
    };
    let base_url = match raw.base_url {
        Some(url) => {
            table.http_url("base_url", &url)?;
            url.trim_end_matches('/').to_owned()
        }
        None => format!(
            "https://{}.snowflakecomputing.com",
            raw.account.to_ascii_lowercase()
        ),
    };
    Ok(Arc::new(SnowflakeSourceConfig {
        account: raw.account,
        base_url,
        user: raw.user,
        auth,
        warehouse: raw.warehouse,
        role: raw.role,
        database: raw.database,
        schema: raw.schema,
        query_tag: raw.query_tag,
        statement_timeout_secs: raw.statement_timeout_secs.unwrap_or(3600),
    }))
}

impl SourceConfig for SnowflakeSourceConfig {
    fn type_name(&self) -> &'static str {
        "snowflake"
    }

    fn connect<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Box<dyn Source>, SourceError>> {
        Box::pin(async move {
            let source = SnowflakeSource::connect(name, self)?;
            Ok(Box::new(source) as Box<dyn Source>)
        })
    }
}
