//! The validated config model every crate works with.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state: StateConfig,
    pub worker: WorkerSettings,
    pub sources: BTreeMap<String, SourceConfig>,
    pub destinations: BTreeMap<String, DestinationConfig>,
    pub syncs: BTreeMap<String, SyncConfig>,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub database_url: Secret,
    pub redis_url: Secret,
    /// Prefix of every Redis key Ebb writes, so several Ebb installations
    /// (or parallel tests) can share one Redis.
    pub queue_prefix: String,
}

/// `[worker]`: queue liveness settings shared by workers and the planner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// A worker silent for `heartbeat_secs × missed_heartbeats` is taken for
    /// dead: another worker takes over its tasks, and its claims on batches
    /// run out after the same time.
    pub heartbeat_secs: u64,
    pub missed_heartbeats: usize,
    /// How often an idle worker looks for new tasks. apalis-redis wakes an
    /// idle worker only on its heartbeat, so workers beat this often.
    pub poll_interval_ms: u64,
    /// On SIGTERM, how long in-flight batches may take before the worker exits.
    pub shutdown_timeout_secs: u64,
    /// How often the planner's watchdog looks for lost tasks: pending
    /// batches of running runs that no worker holds and the queue no longer
    /// has (Redis losing its data is caught at once, by the queue epoch). A
    /// lost task is re-enqueued within this time.
    pub requeue_after_secs: u64,
    /// A batch whose task was delivered this many times without settling
    /// (its worker crashed on it each time) is quarantined to the DLQ.
    pub max_deliveries: u32,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            heartbeat_secs: 10,
            missed_heartbeats: 3,
            poll_interval_ms: 500,
            shutdown_timeout_secs: 30,
            requeue_after_secs: 30,
            max_deliveries: 5,
        }
    }
}

impl WorkerSettings {
    /// How long a silent worker is still presumed alive.
    pub fn orphan_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1) * self.missed_heartbeats.max(2) as u64)
    }

    /// How long a worker's claim on a batch lasts without renewal; renewed
    /// every third of it while the batch is delivered.
    pub fn claim_lease(&self) -> Duration {
        self.orphan_timeout()
    }

    /// The interval apalis-redis heartbeats (and so polls) at.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.clamp(50, 60_000)).min(self.orphan_timeout())
    }

    /// Missed apalis heartbeats (at [`Self::poll_interval`]) that add up to
    /// [`Self::orphan_timeout`].
    pub fn missed_polls(&self) -> usize {
        let polls = self.orphan_timeout().as_millis() / self.poll_interval().as_millis().max(1);
        (polls as usize).max(2)
    }
}

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Postgres(PostgresSourceConfig),
}

#[derive(Debug, Clone)]
pub struct PostgresSourceConfig {
    pub url: Secret,
}

#[derive(Debug, Clone)]
pub enum DestinationConfig {
    Http(HttpDestinationConfig),
    Postgres(PostgresDestinationConfig),
    HubSpot(HubSpotDestinationConfig),
    Mailchimp(MailchimpDestinationConfig),
    Salesforce(SalesforceDestinationConfig),
}

impl DestinationConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            DestinationConfig::Http(_) => "http",
            DestinationConfig::Postgres(_) => "postgres",
            DestinationConfig::HubSpot(_) => "hubspot",
            DestinationConfig::Mailchimp(_) => "mailchimp",
            DestinationConfig::Salesforce(_) => "salesforce",
        }
    }

    pub fn batch_size(&self) -> usize {
        match self {
            DestinationConfig::Http(c) => c.batch_size,
            DestinationConfig::Postgres(c) => c.batch_size,
            DestinationConfig::HubSpot(c) => c.batch_size,
            DestinationConfig::Mailchimp(c) => c.batch_size,
            DestinationConfig::Salesforce(c) => c.batch_size,
        }
    }

    pub fn limits(&self) -> &Limits {
        match self {
            DestinationConfig::Http(c) => &c.limits,
            DestinationConfig::Postgres(c) => &c.limits,
            DestinationConfig::HubSpot(c) => &c.limits,
            DestinationConfig::Mailchimp(c) => &c.limits,
            DestinationConfig::Salesforce(c) => &c.limits,
        }
    }
}

/// A destination's limits, enforced across every worker through Redis:
/// every sync that writes to the destination shares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Requests in flight at once.
    pub max_concurrency: u32,
    pub rate_limit: Option<RateLimit>,
    /// Each worker process adapts its share below `max_concurrency` (AIMD
    /// on latency and back-pressure).
    pub adaptive_concurrency: bool,
}

/// At most `requests` per `per`, in any window of that length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpDestinationConfig {
    pub url: Secret,
    pub headers: BTreeMap<String, Secret>,
    pub batch_size: usize,
    pub timeout_secs: u64,
    pub max_retries: u32,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct PostgresDestinationConfig {
    pub url: Secret,
    pub table: TableName,
    pub batch_size: usize,
    pub max_retries: u32,
    pub limits: Limits,
}

/// HubSpot CRM v3: one object type, records matched on one property.
#[derive(Debug, Clone)]
pub struct HubSpotDestinationConfig {
    /// A private app's access token (`Authorization: Bearer`).
    pub access_token: Secret,
    /// `contacts`, `companies`, `deals`, … or a custom object's type id (`2-…`).
    pub object_type: String,
    /// The property records are matched on (e.g. `email`); the sync's
    /// mapping must fill it.
    pub match_on: String,
    /// `https://api.hubapi.com`, or an emulator's address.
    pub base_url: String,
    /// Inputs per batch request (HubSpot takes at most 100).
    pub batch_size: usize,
    pub timeout_secs: u64,
    pub max_retries: u32,
    pub limits: Limits,
}

/// Mailchimp Marketing API 3.0: the members of one audience (list).
#[derive(Debug, Clone)]
pub struct MailchimpDestinationConfig {
    /// `<key>-<data center>`; sent as HTTP Basic auth.
    pub api_key: Secret,
    pub list_id: String,
    /// `https://<dc>.api.mailchimp.com`, from the key's data center, or an
    /// emulator's address.
    pub base_url: String,
    /// The status a new member gets: `subscribed`, `pending` (double
    /// opt-in) or `transactional`. Existing members' status is never changed.
    pub status_if_new: String,
    /// What mirror mode does with members whose rows left the model.
    pub mirror_removal: MailchimpRemoval,
    /// Members per batch-subscribe request (Mailchimp takes at most 500).
    pub batch_size: usize,
    pub timeout_secs: u64,
    pub max_retries: u32,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailchimpRemoval {
    /// `DELETE …/members/{hash}`: archived, restorable, history kept.
    Archive,
    /// `…/actions/delete-permanent`: gone for good; Mailchimp will not let
    /// the address be re-added through the API.
    Delete,
}

/// Salesforce REST API: one sObject, upserted by an external id field.
#[derive(Debug, Clone)]
pub struct SalesforceDestinationConfig {
    /// Where OAuth tokens come from: `https://login.salesforce.com`,
    /// `https://test.salesforce.com` (sandboxes) or a My Domain URL.
    pub login_url: String,
    pub client_id: Secret,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    /// `62.0`: the `vXX.X` of REST paths.
    pub api_version: String,
    /// `Contact`, `Lead`, `Account`, `Invoice__c`, …
    pub object: String,
    /// The external id field records are upserted by (e.g. `Warehouse_Id__c`).
    pub external_id: String,
    /// `collections` (sObject Collections, 200 records a request) or
    /// `bulk` (one Bulk API 2.0 ingest job per batch, for large runs).
    pub api: SalesforceApi,
    /// Records per request (collections: at most 200) or per job (bulk).
    pub batch_size: usize,
    pub timeout_secs: u64,
    pub max_retries: u32,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SalesforceApi {
    Collections,
    Bulk,
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

/// Quotes a SQL identifier (`"` doubled), so model column and table names
/// from config can never inject SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Create new records and update changed ones.
    Upsert,
    /// Update records already delivered; never create.
    Update,
    /// Create records never delivered; never update.
    Insert,
    /// Upsert, and delete records that left the model.
    Mirror,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Upsert => "upsert",
            SyncMode::Update => "update",
            SyncMode::Insert => "insert",
            SyncMode::Mirror => "mirror",
        }
    }

    pub fn sends_added(self) -> bool {
        !matches!(self, SyncMode::Update)
    }

    pub fn sends_changed(self) -> bool {
        !matches!(self, SyncMode::Insert)
    }

    pub fn sends_removed(self) -> bool {
        matches!(self, SyncMode::Mirror)
    }
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub name: String,
    pub source: String,
    pub destination: String,
    pub model: Model,
    pub primary_key: String,
    pub mode: SyncMode,
    pub schedule: Option<SyncSchedule>,
    /// A mapped record (its JSON) larger than this is rejected at planning,
    /// into the DLQ with its key, instead of being stored and sent.
    pub max_record_bytes: usize,
    /// Destination field ← model column. Empty means "every model column,
    /// under its own name".
    pub mapping: Vec<FieldMapping>,
}

/// `max_record_bytes` when unset: far above what any destination takes in
/// one record (HubSpot caps a property at 65,536 characters), small enough
/// that a batch of 500 fits a worker's memory.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// The highest `max_record_bytes` accepted: Postgres's jsonb takes up to
/// 255 MiB, and every record waits in the state database until delivered.
pub const MAX_MAX_RECORD_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct FieldMapping {
    pub field: String,
    pub column: String,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub sql: String,
    pub origin: ModelOrigin,
}

/// Where the model SQL was written, to point SQL errors at the right line.
#[derive(Debug, Clone)]
pub enum ModelOrigin {
    Inline { config_path: PathBuf, line: usize },
    File { path: PathBuf },
}

impl Model {
    /// The SQL without trailing semicolons, ready to be wrapped as a subquery.
    pub fn as_subquery(&self) -> &str {
        self.sql.trim_end().trim_end_matches(';').trim_end()
    }

    /// Turns a 1-based character position in [`Model::as_subquery`] into a
    /// `file:line:column` string for error messages.
    pub fn locate(&self, position: usize) -> String {
        let sql = self.as_subquery();
        let before: String = sql.chars().take(position.saturating_sub(1)).collect();
        let line_in_sql = before.matches('\n').count();
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        match &self.origin {
            ModelOrigin::File { path } => {
                format!("{}:{}:{}", path.display(), line_in_sql + 1, column)
            }
            ModelOrigin::Inline { config_path, line } => {
                format!(
                    "{}:{} (model SQL line {}, column {column})",
                    config_path.display(),
                    line + line_in_sql,
                    line_in_sql + 1
                )
            }
        }
    }

    pub fn describe_origin(&self) -> String {
        match &self.origin {
            ModelOrigin::File { path } => path.display().to_string(),
            ModelOrigin::Inline { config_path, line } => {
                format!("{}:{line}", config_path.display())
            }
        }
    }
}

/// A cron schedule with Unix cron's meaning, in a time zone (UTC unless
/// the sync sets `timezone`).
///
/// Five fields are `minute hour day-of-month month day-of-week`; six put
/// seconds first. Both read every field the same way, as Vixie cron does:
/// weekdays 0-7 with 0 and 7 Sunday (or `SUN`-`SAT`), and when both
/// day-of-month and day-of-week are restricted a day matching *either*
/// fires (`0 9 1 * 1`: the 1st of the month and every Monday). The `cron`
/// crate reads them otherwise (weekdays 1-7 from Sunday, the two day
/// fields ANDed), so `croner`, which follows POSIX/Vixie, evaluates them.
#[derive(Debug, Clone)]
pub struct SyncSchedule {
    pub expression: String,
    pub timezone: chrono_tz::Tz,
    cron: croner::Cron,
}

impl SyncSchedule {
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<SyncSchedule, String> {
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) && !expression.trim_start().starts_with('@') {
            return Err(format!(
                "`{expression}` has {fields} fields; use 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| format!("`{expression}` is not a valid cron expression: {e}"))?;
        let timezone = match timezone {
            None => chrono_tz::Tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                format!("`{name}` is not a time zone; use an IANA name such as `Europe/Berlin` or `America/New_York`")
            })?,
        };
        Ok(SyncSchedule {
            expression: expression.to_owned(),
            timezone,
            cron,
        })
    }

    /// The first fire time strictly after `after`. Local times that a
    /// daylight-saving change skips or repeats fire once.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&chrono::Utc))
    }
}
