//! `[syncs.NAME]`: which model goes to which destination, how, and when.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::dbt::DbtModel;
use super::table::SourceText;
use crate::destinations::DestinationConfig;
use crate::sources::SourceConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSync {
    source: Spanned<String>,
    #[serde(default)]
    model: Option<Spanned<RawModel>>,
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
    #[serde(default)]
    pub(crate) after: Vec<Spanned<String>>,
    #[serde(default)]
    guardrails: Option<Spanned<Guardrails>>,
    #[serde(default)]
    verify: Option<Spanned<RawVerify>>,
    #[serde(default)]
    on_create_only: Option<Spanned<Vec<String>>>,
}

/// `[syncs.NAME.verify]`: `ebb serve` verifies the sync on a schedule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVerify {
    schedule: String,
    #[serde(default)]
    sample: Option<u64>,
    #[serde(default)]
    all: bool,
}

/// `model = "SELECT …"` or `model = { dbt = "customers" }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawModel {
    Sql(String),
    Dbt(RawDbtModel),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDbtModel {
    dbt: String,
}

/// The dbt project's models, read once from its manifest, for the syncs
/// that read `model = { dbt = … }`.
pub(crate) struct DbtModels<'a> {
    pub manifest: &'a Path,
    pub models: Result<BTreeMap<String, Vec<DbtModel>>, String>,
}

pub(crate) fn resolve_sync(
    src: &SourceText<'_>,
    base_dir: &Path,
    name: &str,
    raw: Spanned<RawSync>,
    sources: &BTreeMap<String, Arc<dyn SourceConfig>>,
    destinations: &BTreeMap<String, Arc<dyn DestinationConfig>>,
    dbt: Option<&DbtModels<'_>>,
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
        (Some(model), None) => {
            let at = model.span().start;
            match model.into_inner() {
                RawModel::Sql(sql) => Model {
                    sql,
                    origin: ModelOrigin::Inline {
                        config_path: src.path.to_owned(),
                        line: src.line_of(at),
                    },
                },
                RawModel::Dbt(RawDbtModel { dbt: name }) => dbt_model(dbt, &name)
                    .map_err(|message| src.invalid(Some(at), format!("{key}.model"), message))?,
            }
        }
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
                "missing model: set `model = \"SELECT ...\"`, `model = { dbt = \"NAME\" }` or `model_file = \"models/NAME.sql\"`",
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
    let guardrails = match raw.guardrails {
        None => Guardrails::default(),
        Some(g) => {
            let at = g.span().start;
            let g = g.into_inner();
            for (field, pct) in [
                ("max_remove_pct", g.max_remove_pct),
                ("max_change_pct", g.max_change_pct),
                ("max_row_drop_pct", g.max_row_drop_pct),
            ] {
                if let Some(pct) = pct
                    && !(0.0..=100.0).contains(&pct)
                {
                    return Err(src.invalid(
                        Some(at),
                        format!("{key}.guardrails.{field}"),
                        format!("{pct} is not a percentage; use 0 to 100"),
                    ));
                }
            }
            if g.flapping_versions > MAX_FLAPPING_VERSIONS {
                return Err(src.invalid(
                    Some(at),
                    format!("{key}.guardrails.flapping_versions"),
                    format!(
                        "{} is over the {MAX_FLAPPING_VERSIONS} versions Ebb keeps per record",
                        g.flapping_versions
                    ),
                ));
            }
            g
        }
    };
    let verify = match raw.verify {
        None => None,
        Some(v) => {
            let at = v.span().start;
            let v = v.into_inner();
            let schedule = SyncSchedule::parse(&v.schedule, timezone).map_err(|message| {
                src.invalid(Some(at), format!("{key}.verify.schedule"), message)
            })?;
            let sample = match (v.sample, v.all) {
                (Some(_), true) => {
                    return Err(src.invalid(
                        Some(at),
                        format!("{key}.verify"),
                        "set `sample = N` (records read back at random) or `all = true`, not both",
                    ));
                }
                (Some(0), false) => {
                    return Err(src.invalid(
                        Some(at),
                        format!("{key}.verify.sample"),
                        "must be at least 1 (or set `all = true`)",
                    ));
                }
                (Some(n), false) => Some(n),
                (None, true) => None,
                (None, false) => Some(DEFAULT_VERIFY_SAMPLE),
            };
            Some(VerifySchedule { schedule, sample })
        }
    };
    let on_create_only = match raw.on_create_only {
        None => Vec::new(),
        Some(fields) => {
            let at = fields.span().start;
            let fields = fields.into_inner();
            if let Some(unmapped) = fields
                .iter()
                .find(|f| !raw.mapping.is_empty() && !raw.mapping.contains_key(f.as_str()))
            {
                return Err(src.invalid(
                    Some(at),
                    format!("{key}.on_create_only"),
                    format!(
                        "`{unmapped}` is not a mapped field; name destination fields of `mapping` ({})",
                        raw.mapping.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            fields
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
    let sends_removed = raw
        .mode
        .as_ref()
        .is_some_and(|mode| mode.get_ref().sends_removed());
    destination
        .check_mapping(
            raw.destination.get_ref(),
            &mapping,
            &primary_key,
            sends_removed,
        )
        .map_err(|message| src.invalid(Some(header), format!("{key}.mapping"), message))?;
    if !on_create_only.is_empty() && !destination.keeps_fields_on_update() {
        return Err(src.invalid(
            Some(header),
            format!("{key}.on_create_only"),
            format!(
                "the {} destination `{}` writes every mapped field on update, so it cannot keep fields set only on create (hubspot, salesforce and postgres can)",
                destination.type_name(),
                raw.destination.get_ref()
            ),
        ));
    }
    Ok(SyncConfig {
        after: raw.after.into_iter().map(Spanned::into_inner).collect(),
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
        guardrails,
        verify,
        on_create_only,
    })
}

/// A sync's model from the dbt manifest.
fn dbt_model(dbt: Option<&DbtModels<'_>>, name: &str) -> Result<Model, String> {
    let Some(dbt) = dbt else {
        return Err(format!(
            "reads the dbt model `{name}`, but there is no [dbt] section: add `[dbt]` with `manifest = \"<dbt project>/target/manifest.json\"`"
        ));
    };
    let models = dbt.models.as_ref().map_err(Clone::clone)?;
    let found = match models.get(name).map(Vec::as_slice) {
        Some([one]) => one,
        Some(several) => {
            return Err(format!(
                "{} dbt models are named `{name}` (in different packages); Ebb cannot tell which to read",
                several.len()
            ));
        }
        None => {
            let names: Vec<&str> = models.keys().map(String::as_str).collect();
            let close: Vec<&str> = names
                .iter()
                .copied()
                .filter(|m| m.contains(name) || name.contains(m))
                .take(5)
                .collect();
            return Err(format!(
                "the dbt manifest {} has no model `{name}`{}",
                dbt.manifest.display(),
                if close.is_empty() {
                    format!(" ({} models)", names.len())
                } else {
                    format!("; did you mean {}?", close.join(", "))
                }
            ));
        }
    };
    let sql = found.sql().ok_or_else(|| {
        format!(
            "the dbt model `{name}` has neither a relation nor compiled SQL in {}; run `dbt compile`",
            dbt.manifest.display()
        )
    })?;
    Ok(Model {
        sql,
        origin: ModelOrigin::Dbt {
            manifest: dbt.manifest.to_owned(),
            model: name.to_owned(),
        },
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
    /// Limits past which a run is held for an operator instead of sent.
    pub guardrails: Guardrails,
    /// When `ebb serve` verifies the sync (`[syncs.NAME.verify]`).
    pub verify: Option<VerifySchedule>,
    /// Destination fields written when a record is created, never by an
    /// update: edits made in the destination are kept.
    pub on_create_only: Vec<String>,
    /// Syncs whose success starts this one (`after = [...]`).
    pub after: Vec<String>,
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

/// `[syncs.NAME.guardrails]`: a run whose plan crosses one of these is
/// held before anything is sent, until an operator approves or cancels it
/// (a broken model that mirrors an empty table must not delete every
/// contact). No limit is set unless configured; flapping records are
/// reported against the last 5 versions delivered.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// Removals, as a share of what is delivered (mirror mode), in percent.
    pub max_remove_pct: Option<f64>,
    /// Removals, in records.
    pub max_remove: Option<i64>,
    /// Changed records, as a share of what is delivered, in percent.
    pub max_change_pct: Option<f64>,
    /// Fewer rows than this read from the model.
    pub min_rows: Option<u64>,
    /// Rows read from the model fell by more than this share of the rows
    /// the sync's last successful run read, in percent.
    pub max_row_drop_pct: Option<f64>,
    /// How many versions delivered before the current one a changed record
    /// is compared with to report it flapping (changed back to one of
    /// them); 0 turns the report off, at most 10 are kept. Reported, never
    /// held.
    #[serde(default = "default_flapping_versions")]
    pub flapping_versions: u32,
}

fn default_flapping_versions() -> u32 {
    DEFAULT_FLAPPING_VERSIONS
}

/// `flapping_versions` when unset.
pub const DEFAULT_FLAPPING_VERSIONS: u32 = 5;
/// The versions the ledger keeps per record for flapping.
pub const MAX_FLAPPING_VERSIONS: u32 = 10;

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            max_remove_pct: None,
            max_remove: None,
            max_change_pct: None,
            min_rows: None,
            max_row_drop_pct: None,
            flapping_versions: DEFAULT_FLAPPING_VERSIONS,
        }
    }
}

/// A scheduled `ebb verify`.
#[derive(Debug, Clone)]
pub struct VerifySchedule {
    pub schedule: SyncSchedule,
    /// Records read back at random; `None`: every delivered record.
    pub sample: Option<u64>,
}

/// Records a verification reads back when no `sample` is given.
pub const DEFAULT_VERIFY_SAMPLE: u64 = 100;

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
    Inline {
        config_path: PathBuf,
        line: usize,
    },
    File {
        path: PathBuf,
    },
    /// `model = { dbt = "…" }`, from the dbt manifest.
    Dbt {
        manifest: PathBuf,
        model: String,
    },
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
            ModelOrigin::Dbt { manifest, model } => format!(
                "dbt model `{model}` ({}; SQL line {}, column {column})",
                manifest.display(),
                line_in_sql + 1
            ),
        }
    }

    /// The dbt model this model reads, when it is one.
    pub fn dbt_model(&self) -> Option<&str> {
        match &self.origin {
            ModelOrigin::Dbt { model, .. } => Some(model),
            _ => None,
        }
    }

    pub fn describe_origin(&self) -> String {
        match &self.origin {
            ModelOrigin::File { path } => path.display().to_string(),
            ModelOrigin::Inline { config_path, line } => {
                format!("{}:{line}", config_path.display())
            }
            ModelOrigin::Dbt { manifest, model } => {
                format!("dbt model `{model}` ({})", manifest.display())
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

    /// The last fire time at or before `at`: the tick a planner that just
    /// took over may have missed.
    pub fn last_at_or_before(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let local = at.with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|previous| previous.with_timezone(&chrono::Utc))
    }
}
