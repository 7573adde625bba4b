//! `ebb.toml`: typed config, `${VAR}` interpolation and errors that point at
//! the file, line and key.
//!
//! Destinations and sources are parsed in two steps, as Arroyo does for
//! connectors: the table is read as an untyped TOML table first, then its
//! `type` picks the typed config struct it is deserialized into.

mod interpolate;
mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

pub use interpolate::interpolate;
pub use types::*;

use crate::secret::Secret;

/// Everything that can be wrong with a config file. Messages never contain
/// interpolated values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}. Pass --config PATH or set EBB_CONFIG")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}{key}: {message}", location(path, *line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
    #[error("{key}: environment variable `{var}` is not set; export it or change the value")]
    MissingEnv { key: String, var: String },
    #[error("{key}: {message}")]
    Interpolation { key: String, message: String },
}

fn location(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}: ", path.display()),
        None => format!("{}: ", path.display()),
    }
}

/// Where the config was read from, to turn byte offsets into line numbers.
struct SourceText<'a> {
    path: &'a Path,
    text: &'a str,
}

impl SourceText<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn invalid(
        &self,
        offset: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: offset.map(|o| self.line_of(o)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Finds the line of `field = ...` inside the table that starts at
    /// `table_offset`, so an unknown or bad field in a destination points at
    /// its own line rather than at the table header.
    fn field_offset(&self, table_offset: usize, field: &str) -> usize {
        let mut offset = table_offset;
        for line in self.text[table_offset.min(self.text.len())..].split_inclusive('\n') {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(field)
                && rest.trim_start().starts_with('=')
            {
                return offset + (line.len() - trimmed.len());
            }
            offset += line.len();
        }
        table_offset
    }

    fn localize(&self, interpolation: ConfigError, offset: usize) -> ConfigError {
        match interpolation {
            ConfigError::MissingEnv { key, var } => self.invalid(
                Some(offset),
                key,
                format!("environment variable `{var}` is not set; export it or change the value"),
            ),
            ConfigError::Interpolation { key, message } => self.invalid(Some(offset), key, message),
            other => other,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state: Spanned<RawState>,
    #[serde(default)]
    worker: Option<Spanned<WorkerSettings>>,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    destinations: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    syncs: BTreeMap<String, Spanned<RawSync>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    database_url: Spanned<String>,
    redis_url: Spanned<String>,
    #[serde(default = "default_queue_prefix")]
    queue_prefix: String,
}

fn default_queue_prefix() -> String {
    "ebb".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    source: Spanned<String>,
    #[serde(default)]
    model: Option<Spanned<String>>,
    #[serde(default)]
    model_file: Option<Spanned<String>>,
    primary_key: Spanned<String>,
    destination: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<SyncMode>>,
    #[serde(default)]
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    max_record_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    mapping: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgresSource {
    #[serde(rename = "type")]
    _type: String,
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpDestination {
    #[serde(rename = "type")]
    _type: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_http_batch_size")]
    batch_size: usize,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_http_max_concurrency")]
    max_concurrency: u32,
    rate_limit: Option<RawRateLimit>,
    #[serde(default = "yes")]
    adaptive_concurrency: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHubSpotDestination {
    #[serde(rename = "type")]
    _type: String,
    access_token: String,
    object: String,
    match_on: String,
    #[serde(default = "default_hubspot_base_url")]
    base_url: String,
    #[serde(default = "default_hubspot_batch_size")]
    batch_size: usize,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_hubspot_max_concurrency")]
    max_concurrency: u32,
    #[serde(default = "default_hubspot_rate_limit")]
    rate_limit: Option<RawRateLimit>,
    #[serde(default = "yes")]
    adaptive_concurrency: bool,
}

fn default_hubspot_base_url() -> String {
    "https://api.hubapi.com".to_owned()
}
/// HubSpot's batch endpoints take at most 100 inputs.
pub const HUBSPOT_MAX_BATCH: usize = 100;
fn default_hubspot_batch_size() -> usize {
    HUBSPOT_MAX_BATCH
}
/// HubSpot documents no cap on requests in flight; a handful keeps well
/// inside the rate limit without queueing at HubSpot.
fn default_hubspot_max_concurrency() -> u32 {
    5
}
/// HubSpot's burst limit for a private app on Free and Starter accounts:
/// 100 requests per 10 seconds, per account (Professional and Enterprise
/// allow 190; raise it in config).
fn default_hubspot_rate_limit() -> Option<RawRateLimit> {
    Some(RawRateLimit {
        requests: 100,
        per_seconds: 10.0,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailchimpDestination {
    #[serde(rename = "type")]
    _type: String,
    api_key: String,
    list_id: String,
    base_url: Option<String>,
    #[serde(default = "default_status_if_new")]
    status_if_new: String,
    #[serde(default = "default_mirror_removal")]
    mirror_removal: MailchimpRemoval,
    #[serde(default = "default_mailchimp_batch_size")]
    batch_size: usize,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_mailchimp_max_concurrency")]
    max_concurrency: u32,
    rate_limit: Option<RawRateLimit>,
    #[serde(default = "yes")]
    adaptive_concurrency: bool,
}

fn default_status_if_new() -> String {
    "subscribed".to_owned()
}
fn default_mirror_removal() -> MailchimpRemoval {
    MailchimpRemoval::Archive
}
/// Mailchimp's batch subscribe takes at most 500 members.
pub const MAILCHIMP_MAX_BATCH: usize = 500;
fn default_mailchimp_batch_size() -> usize {
    MAILCHIMP_MAX_BATCH
}
/// Mailchimp allows 10 simultaneous connections per API key.
fn default_mailchimp_max_concurrency() -> u32 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSalesforceDestination {
    #[serde(rename = "type")]
    _type: String,
    #[serde(default = "default_salesforce_login_url")]
    login_url: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    #[serde(default = "default_salesforce_api_version")]
    api_version: String,
    object: String,
    external_id: String,
    #[serde(default = "default_salesforce_api")]
    api: SalesforceApi,
    batch_size: Option<usize>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_salesforce_max_concurrency")]
    max_concurrency: u32,
    rate_limit: Option<RawRateLimit>,
    #[serde(default = "yes")]
    adaptive_concurrency: bool,
}

fn default_salesforce_login_url() -> String {
    "https://login.salesforce.com".to_owned()
}
fn default_salesforce_api_version() -> String {
    "62.0".to_owned()
}
/// sObject Collections take at most 200 records per request.
pub const SALESFORCE_MAX_BATCH: usize = 200;
fn default_salesforce_api() -> SalesforceApi {
    SalesforceApi::Collections
}
/// A Bulk API 2.0 job per batch of this many records.
const SALESFORCE_BULK_BATCH: usize = 10_000;
/// Salesforce caps long-running requests per org at 25; a handful in flight
/// leaves room for the org's other integrations.
fn default_salesforce_max_concurrency() -> u32 {
    5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests: u32,
    per_seconds: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgresDestination {
    #[serde(rename = "type")]
    _type: String,
    url: String,
    table: String,
    #[serde(default = "default_postgres_batch_size")]
    batch_size: usize,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_postgres_max_concurrency")]
    max_concurrency: u32,
    rate_limit: Option<RawRateLimit>,
    /// Off by default: Ebb's own database work dominates a postgres
    /// destination's latency, so RTT says little about the destination.
    #[serde(default)]
    adaptive_concurrency: bool,
}

fn yes() -> bool {
    true
}

/// Requests in flight to one generic HTTP endpoint, across all workers.
fn default_http_max_concurrency() -> u32 {
    8
}
/// Concurrent batch transactions against one destination database.
fn default_postgres_max_concurrency() -> u32 {
    8
}

fn default_http_batch_size() -> usize {
    100
}
fn default_postgres_batch_size() -> usize {
    500
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    5
}

/// Largest batch any destination accepts from config; bigger batches make a
/// single poison record expensive to isolate.
pub const MAX_BATCH_SIZE: usize = 10_000;

impl Config {
    /// Reads and validates `path`, filling `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `lookup` resolves `${VAR}` (the environment, or a
    /// map in tests).
    pub fn parse(
        path: &Path,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let src = SourceText { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let line = src.line_of(offset);
            let line_start = text[..offset.min(text.len())]
                .rfind('\n')
                .map(|i| i + 1)
                .unwrap_or(0);
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column: offset.saturating_sub(line_start) + 1,
                message: e.message().trim().to_owned(),
            }
        })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();

        let state = resolve_state(&src, raw.state, lookup)?;
        let worker = raw.worker.map(Spanned::into_inner).unwrap_or_default();

        let mut sources = BTreeMap::new();
        for (name, table) in raw.sources {
            sources.insert(name.clone(), resolve_source(&src, &name, table, lookup)?);
        }
        let mut destinations = BTreeMap::new();
        for (name, table) in raw.destinations {
            destinations.insert(
                name.clone(),
                resolve_destination(&src, &name, table, lookup)?,
            );
        }
        let mut syncs = BTreeMap::new();
        for (name, sync) in raw.syncs {
            let sync = resolve_sync(&src, &base_dir, &name, sync, &sources, &destinations)?;
            syncs.insert(name, sync);
        }
        if syncs.is_empty() {
            return Err(src.invalid(
                None,
                "syncs",
                "no sync is defined; add a [syncs.NAME] table",
            ));
        }
        Ok(Config {
            path: path.to_owned(),
            state,
            worker,
            sources,
            destinations,
            syncs,
        })
    }

    pub fn sync(&self, name: &str) -> Result<&SyncConfig, ConfigError> {
        self.syncs.get(name).ok_or_else(|| ConfigError::Invalid {
            path: self.path.clone(),
            line: None,
            key: format!("syncs.{name}"),
            message: format!(
                "no such sync; defined syncs are: {}",
                self.syncs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    pub fn destination(&self, name: &str) -> Option<&DestinationConfig> {
        self.destinations.get(name)
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.get(name)
    }
}

fn secret_at(
    src: &SourceText<'_>,
    value: &str,
    key: &str,
    offset: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    interpolate(value, key, lookup)
        .map(Secret::new)
        .map_err(|e| src.localize(e, offset))
}

fn resolve_state(
    src: &SourceText<'_>,
    raw: Spanned<RawState>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<StateConfig, ConfigError> {
    let raw = raw.into_inner();
    let database_url = secret_at(
        src,
        raw.database_url.get_ref(),
        "state.database_url",
        raw.database_url.span().start,
        lookup,
    )?;
    let redis_url = secret_at(
        src,
        raw.redis_url.get_ref(),
        "state.redis_url",
        raw.redis_url.span().start,
        lookup,
    )?;
    let valid_prefix = !raw.queue_prefix.is_empty()
        && raw
            .queue_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
    if !valid_prefix {
        return Err(src.invalid(
            None,
            "state.queue_prefix",
            "must be non-empty and use only letters, digits, `_`, `-`, `.` or `:`",
        ));
    }
    Ok(StateConfig {
        database_url,
        redis_url,
        queue_prefix: raw.queue_prefix,
    })
}

fn typed<T: DeserializeOwned>(
    src: &SourceText<'_>,
    key: &str,
    table: &Spanned<toml::Table>,
) -> Result<T, ConfigError> {
    T::deserialize(toml::Value::Table(table.get_ref().clone())).map_err(|e| {
        let message = e.message().trim().to_owned();
        let offset = message
            .split('`')
            .nth(1)
            .map(|field| src.field_offset(table.span().start, field))
            .unwrap_or(table.span().start);
        src.invalid(Some(offset), key, message)
    })
}

fn type_of(
    src: &SourceText<'_>,
    key: &str,
    table: &Spanned<toml::Table>,
    known: &[&str],
) -> Result<String, ConfigError> {
    match table.get_ref().get("type") {
        Some(toml::Value::String(t)) if known.contains(&t.as_str()) => Ok(t.clone()),
        Some(toml::Value::String(t)) => Err(src.invalid(
            Some(src.field_offset(table.span().start, "type")),
            format!("{key}.type"),
            format!(
                "unknown type `{t}`; supported types are: {}",
                known.join(", ")
            ),
        )),
        _ => Err(src.invalid(
            Some(table.span().start),
            key,
            format!(
                "missing `type = \"...\"`; supported types are: {}",
                known.join(", ")
            ),
        )),
    }
}

fn resolve_source(
    src: &SourceText<'_>,
    name: &str,
    table: Spanned<toml::Table>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<SourceConfig, ConfigError> {
    let key = format!("sources.{name}");
    type_of(src, &key, &table, &["postgres"])?;
    let raw: RawPostgresSource = typed(src, &key, &table)?;
    let url_key = format!("{key}.url");
    let url = secret_at(
        src,
        &raw.url,
        &url_key,
        src.field_offset(table.span().start, "url"),
        lookup,
    )?;
    Ok(SourceConfig::Postgres(PostgresSourceConfig { url }))
}

fn resolve_destination(
    src: &SourceText<'_>,
    name: &str,
    table: Spanned<toml::Table>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<DestinationConfig, ConfigError> {
    let key = format!("destinations.{name}");
    let start = table.span().start;
    let kind = type_of(
        src,
        &key,
        &table,
        &["http", "postgres", "hubspot", "mailchimp", "salesforce"],
    )?;
    let check_batch = |batch_size: usize| {
        if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
            Err(src.invalid(
                Some(src.field_offset(start, "batch_size")),
                format!("{key}.batch_size"),
                format!("must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}"),
            ))
        } else {
            Ok(())
        }
    };
    // A vendor's own cap on records per request, above the general one.
    let vendor_batch = |batch_size: usize, max: usize, api_takes: &str, unit: &str, hint: &str| {
        check_batch(batch_size)?;
        if batch_size > max {
            return Err(src.invalid(
                Some(src.field_offset(start, "batch_size")),
                format!("{key}.batch_size"),
                format!("{api_takes} at most {max} {unit} per request, got {batch_size}{hint}"),
            ));
        }
        Ok(())
    };
    let limits = |max_concurrency: u32, rate_limit: Option<RawRateLimit>, adaptive: bool| {
        if max_concurrency == 0 {
            return Err(src.invalid(
                Some(src.field_offset(start, "max_concurrency")),
                format!("{key}.max_concurrency"),
                "must be at least 1",
            ));
        }
        let rate_limit = match rate_limit {
            None => None,
            Some(r) if r.requests == 0 || !(r.per_seconds > 0.0 && r.per_seconds.is_finite()) => {
                return Err(src.invalid(
                    Some(src.field_offset(start, "rate_limit")),
                    format!("{key}.rate_limit"),
                    format!(
                        "needs requests >= 1 and per_seconds > 0, got {{ requests = {}, per_seconds = {} }}",
                        r.requests, r.per_seconds
                    ),
                ));
            }
            Some(r) => Some(RateLimit {
                requests: r.requests,
                per: std::time::Duration::from_secs_f64(r.per_seconds),
            }),
        };
        Ok(Limits {
            max_concurrency,
            rate_limit,
            adaptive_concurrency: adaptive,
        })
    };
    let check_http_url = |field: &str, url: &str| {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(())
        } else {
            Err(src.invalid(
                Some(src.field_offset(start, field)),
                format!("{key}.{field}"),
                "must start with http:// or https://",
            ))
        }
    };
    // A field's value with `${VAR}` filled in, kept as a secret.
    let field_secret = |field: &str, value: &str| {
        secret_at(
            src,
            value,
            &format!("{key}.{field}"),
            src.field_offset(start, field),
            lookup,
        )
    };
    // A vendor API's base URL: interpolated, http(s), no trailing slash.
    let service_url = |field: &str, value: &str| {
        let url = field_secret(field, value)?
            .expose()
            .trim_end_matches('/')
            .to_owned();
        check_http_url(field, &url)?;
        Ok(url)
    };
    match kind.as_str() {
        "http" => {
            let raw: RawHttpDestination = typed(src, &key, &table)?;
            check_batch(raw.batch_size)?;
            let limits = limits(
                raw.max_concurrency,
                raw.rate_limit,
                raw.adaptive_concurrency,
            )?;
            let url = field_secret("url", &raw.url)?;
            check_http_url("url", url.expose())?;
            let mut headers = BTreeMap::new();
            for (header, value) in raw.headers {
                let header_key = format!("{key}.headers.{header}");
                let value = secret_at(
                    src,
                    &value,
                    &header_key,
                    src.field_offset(start, "headers"),
                    lookup,
                )?;
                headers.insert(header, value);
            }
            if raw.timeout_secs == 0 {
                return Err(src.invalid(
                    Some(src.field_offset(start, "timeout_secs")),
                    format!("{key}.timeout_secs"),
                    "must be at least 1",
                ));
            }
            Ok(DestinationConfig::Http(HttpDestinationConfig {
                url,
                headers,
                batch_size: raw.batch_size,
                timeout_secs: raw.timeout_secs,
                max_retries: raw.max_retries,
                limits,
            }))
        }
        "hubspot" => {
            let raw: RawHubSpotDestination = typed(src, &key, &table)?;
            vendor_batch(
                raw.batch_size,
                HUBSPOT_MAX_BATCH,
                "HubSpot's batch endpoints take",
                "inputs",
                "",
            )?;
            let limits = limits(
                raw.max_concurrency,
                raw.rate_limit,
                raw.adaptive_concurrency,
            )?;
            let access_token = field_secret("access_token", &raw.access_token)?;
            let object_ok = !raw.object.is_empty()
                && raw
                    .object
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
            if !object_ok {
                return Err(src.invalid(
                    Some(src.field_offset(start, "object")),
                    format!("{key}.object"),
                    format!(
                        "`{}` is not a HubSpot object type; use e.g. `contacts`, `companies`, `deals` or a custom object's type id like `2-1234567`",
                        raw.object
                    ),
                ));
            }
            if raw.match_on.trim().is_empty() {
                return Err(src.invalid(
                    Some(src.field_offset(start, "match_on")),
                    format!("{key}.match_on"),
                    "must name the HubSpot property records are matched on, e.g. `email`",
                ));
            }
            let base_url = service_url("base_url", &raw.base_url)?;
            Ok(DestinationConfig::HubSpot(HubSpotDestinationConfig {
                access_token,
                object_type: raw.object,
                match_on: raw.match_on.trim().to_owned(),
                base_url,
                batch_size: raw.batch_size,
                timeout_secs: raw.timeout_secs.max(1),
                max_retries: raw.max_retries,
                limits,
            }))
        }
        "mailchimp" => {
            let raw: RawMailchimpDestination = typed(src, &key, &table)?;
            vendor_batch(
                raw.batch_size,
                MAILCHIMP_MAX_BATCH,
                "Mailchimp's batch subscribe takes",
                "members",
                "",
            )?;
            let limits = limits(
                raw.max_concurrency,
                raw.rate_limit,
                raw.adaptive_concurrency,
            )?;
            let api_key = field_secret("api_key", &raw.api_key)?;
            let base_url = match raw.base_url {
                Some(url) => service_url("base_url", &url)?,
                None => {
                    let data_center = api_key
                        .expose()
                        .rsplit_once('-')
                        .map(|(_, dc)| dc.to_owned())
                        .filter(|dc| {
                            !dc.is_empty() && dc.chars().all(|c| c.is_ascii_alphanumeric())
                        });
                    match data_center {
                        Some(dc) => format!("https://{dc}.api.mailchimp.com"),
                        None => {
                            return Err(src.invalid(
                                Some(src.field_offset(start, "api_key")),
                                format!("{key}.api_key"),
                                "a Mailchimp API key ends in `-<data center>` (e.g. `…-us6`); copy the whole key from Account → Extras → API keys",
                            ));
                        }
                    }
                }
            };
            if !matches!(
                raw.status_if_new.as_str(),
                "subscribed" | "pending" | "transactional"
            ) {
                return Err(src.invalid(
                    Some(src.field_offset(start, "status_if_new")),
                    format!("{key}.status_if_new"),
                    format!(
                        "`{}` is not a status for new members; use `subscribed`, `pending` (double opt-in) or `transactional`",
                        raw.status_if_new
                    ),
                ));
            }
            if raw.list_id.trim().is_empty()
                || !raw.list_id.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(src.invalid(
                    Some(src.field_offset(start, "list_id")),
                    format!("{key}.list_id"),
                    "must be the audience's list id (letters and digits, e.g. `a1b2c3d4e5`; Audience → Settings → Audience name and defaults)",
                ));
            }
            Ok(DestinationConfig::Mailchimp(MailchimpDestinationConfig {
                api_key,
                list_id: raw.list_id,
                base_url,
                status_if_new: raw.status_if_new,
                mirror_removal: raw.mirror_removal,
                batch_size: raw.batch_size,
                timeout_secs: raw.timeout_secs.max(1),
                max_retries: raw.max_retries,
                limits,
            }))
        }
        "salesforce" => {
            let raw: RawSalesforceDestination = typed(src, &key, &table)?;
            let batch_size = raw.batch_size.unwrap_or(match raw.api {
                SalesforceApi::Collections => SALESFORCE_MAX_BATCH,
                SalesforceApi::Bulk => SALESFORCE_BULK_BATCH,
            });
            let max = match raw.api {
                SalesforceApi::Collections => SALESFORCE_MAX_BATCH,
                SalesforceApi::Bulk => MAX_BATCH_SIZE,
            };
            vendor_batch(
                batch_size,
                max,
                "Salesforce takes",
                "records",
                "; set `api = \"bulk\"` for larger batches",
            )?;
            let limits = limits(
                raw.max_concurrency,
                raw.rate_limit,
                raw.adaptive_concurrency,
            )?;
            let login_url = service_url("login_url", &raw.login_url)?;
            let version_ok = raw
                .api_version
                .split_once('.')
                .is_some_and(|(major, minor)| {
                    !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()) && minor == "0"
                });
            if !version_ok {
                return Err(src.invalid(
                    Some(src.field_offset(start, "api_version")),
                    format!("{key}.api_version"),
                    format!(
                        "`{}` is not a Salesforce API version; use e.g. `62.0`",
                        raw.api_version
                    ),
                ));
            }
            let name_ok = |name: &str| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            for (field, value) in [("object", &raw.object), ("external_id", &raw.external_id)] {
                if !name_ok(value) {
                    return Err(src.invalid(
                        Some(src.field_offset(start, field)),
                        format!("{key}.{field}"),
                        format!("`{value}` is not a Salesforce API name (letters, digits and `_`, e.g. `Contact` or `Warehouse_Id__c`)"),
                    ));
                }
            }
            Ok(DestinationConfig::Salesforce(SalesforceDestinationConfig {
                login_url,
                client_id: field_secret("client_id", &raw.client_id)?,
                client_secret: field_secret("client_secret", &raw.client_secret)?,
                refresh_token: field_secret("refresh_token", &raw.refresh_token)?,
                api_version: raw.api_version,
                object: raw.object,
                external_id: raw.external_id,
                api: raw.api,
                batch_size,
                timeout_secs: raw.timeout_secs.max(1),
                max_retries: raw.max_retries,
                limits,
            }))
        }
        _ => {
            let raw: RawPostgresDestination = typed(src, &key, &table)?;
            check_batch(raw.batch_size)?;
            let limits = limits(
                raw.max_concurrency,
                raw.rate_limit,
                raw.adaptive_concurrency,
            )?;
            let url = field_secret("url", &raw.url)?;
            let table_name = TableName::from_str(&raw.table).map_err(|message| {
                src.invalid(
                    Some(src.field_offset(start, "table")),
                    format!("{key}.table"),
                    message,
                )
            })?;
            Ok(DestinationConfig::Postgres(PostgresDestinationConfig {
                url,
                table: table_name,
                batch_size: raw.batch_size,
                max_retries: raw.max_retries,
                limits,
            }))
        }
    }
}

fn resolve_sync(
    src: &SourceText<'_>,
    base_dir: &Path,
    name: &str,
    raw: Spanned<RawSync>,
    sources: &BTreeMap<String, SourceConfig>,
    destinations: &BTreeMap<String, DestinationConfig>,
) -> Result<SyncConfig, ConfigError> {
    let key = format!("syncs.{name}");
    let header = raw.span().start;
    let raw = raw.into_inner();
    if !sources.contains_key(raw.source.get_ref()) {
        return Err(src.invalid(
            Some(raw.source.span().start),
            format!("{key}.source"),
            format!(
                "unknown source `{}`; defined sources are: {}",
                raw.source.get_ref(),
                list(sources.keys())
            ),
        ));
    }
    let Some(destination) = destinations.get(raw.destination.get_ref()) else {
        return Err(src.invalid(
            Some(raw.destination.span().start),
            format!("{key}.destination"),
            format!(
                "unknown destination `{}`; defined destinations are: {}",
                raw.destination.get_ref(),
                list(destinations.keys())
            ),
        ));
    };
    let model = match (raw.model, raw.model_file) {
        (Some(sql), None) => Model {
            sql: sql.get_ref().clone(),
            origin: ModelOrigin::Inline {
                config_path: src.path.to_owned(),
                line: src.line_of(sql.span().start),
            },
        },
        (None, Some(file)) => {
            let path = base_dir.join(file.get_ref());
            let sql = std::fs::read_to_string(&path).map_err(|e| {
                src.invalid(
                    Some(file.span().start),
                    format!("{key}.model_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Model {
                sql,
                origin: ModelOrigin::File { path },
            }
        }
        (Some(_), Some(file)) => {
            return Err(src.invalid(
                Some(file.span().start),
                key,
                "set either `model` or `model_file`, not both",
            ));
        }
        (None, None) => {
            return Err(src.invalid(
                Some(header),
                key,
                "missing model: set `model = \"SELECT ...\"` or `model_file = \"models/NAME.sql\"`",
            ));
        }
    };
    if model.sql.trim().trim_end_matches(';').trim().is_empty() {
        return Err(src.invalid(Some(header), key, "the model SQL is empty"));
    }
    let timezone = raw.timezone.as_ref().map(|tz| tz.get_ref().as_str());
    let schedule = match raw.schedule {
        None => {
            if let Some(tz) = &raw.timezone {
                return Err(src.invalid(
                    Some(tz.span().start),
                    format!("{key}.timezone"),
                    "a timezone needs a `schedule` to apply to",
                ));
            }
            None
        }
        Some(expr) => Some(
            SyncSchedule::parse(expr.get_ref(), timezone).map_err(|message| {
                let (at, field) = match &raw.timezone {
                    Some(tz) if message.contains("is not a time zone") => {
                        (tz.span().start, "timezone")
                    }
                    _ => (expr.span().start, "schedule"),
                };
                src.invalid(Some(at), format!("{key}.{field}"), message)
            })?,
        ),
    };
    let max_record_bytes = match raw.max_record_bytes {
        None => DEFAULT_MAX_RECORD_BYTES,
        Some(bytes) if (1..=MAX_MAX_RECORD_BYTES).contains(bytes.get_ref()) => bytes.into_inner(),
        Some(bytes) => {
            return Err(src.invalid(
                Some(bytes.span().start),
                format!("{key}.max_record_bytes"),
                format!(
                    "must be between 1 and {MAX_MAX_RECORD_BYTES} (64 MiB): every record is kept in Ebb's state database until it is delivered"
                ),
            ));
        }
    };
    let primary_key = raw.primary_key.get_ref().trim().to_owned();
    if primary_key.is_empty() {
        return Err(src.invalid(
            Some(raw.primary_key.span().start),
            format!("{key}.primary_key"),
            "must name a model column",
        ));
    }
    let mut mapping = Vec::with_capacity(raw.mapping.len());
    for (field, column) in raw.mapping {
        if column.get_ref().trim().is_empty() {
            return Err(src.invalid(
                Some(column.span().start),
                format!("{key}.mapping.{field}"),
                "must name a model column",
            ));
        }
        mapping.push(FieldMapping {
            field,
            column: column.into_inner(),
        });
    }
    // Vendors match records on one field, which a non-empty mapping must fill.
    let match_field = match destination {
        DestinationConfig::HubSpot(hubspot) => Some((
            hubspot.match_on.as_str(),
            format!(
                "matches records on the HubSpot property `{}`",
                hubspot.match_on
            ),
        )),
        DestinationConfig::Salesforce(salesforce) => Some((
            salesforce.external_id.as_str(),
            format!(
                "upserts {} records by the external id `{}`",
                salesforce.object, salesforce.external_id
            ),
        )),
        _ => None,
    };
    if let Some((field, how)) = match_field
        && !mapping.is_empty()
        && !mapping.iter().any(|m| m.field == field)
    {
        return Err(src.invalid(
            Some(header),
            format!("{key}.mapping"),
            format!(
                "destination `{}` {how}, so the mapping must fill it (e.g. `{field} = \"{primary_key}\"`)",
                raw.destination.get_ref(),
            ),
        ));
    }
    if let DestinationConfig::Mailchimp(_) = destination
        && !mapping.iter().any(|m| m.field == "email_address")
    {
        return Err(src.invalid(
            Some(header),
            format!("{key}.mapping"),
            "Mailchimp members are keyed by email: the mapping must fill `email_address` (e.g. `email_address = \"email\"`); merge fields go by their tag (`FNAME = \"first_name\"`), and `tags` may list tags",
        ));
    }
    if let DestinationConfig::Postgres(_) = destination
        && !mapping.is_empty()
        && !mapping.iter().any(|m| m.column == primary_key)
    {
        return Err(src.invalid(
            Some(header),
            format!("{key}.mapping"),
            format!(
                "the postgres destination upserts by the primary key, so the mapping must map a column to `{primary_key}` (e.g. `id = \"{primary_key}\"`)"
            ),
        ));
    }
    Ok(SyncConfig {
        name: name.to_owned(),
        source: raw.source.into_inner(),
        destination: raw.destination.into_inner(),
        model,
        primary_key,
        mode: raw
            .mode
            .map(Spanned::into_inner)
            .unwrap_or(SyncMode::Upsert),
        schedule,
        max_record_bytes,
        mapping,
    })
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
