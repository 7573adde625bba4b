//! `ebb.toml`: typed config, `${VAR}` interpolation and errors that point at
//! the file, line and key.
//!
//! This module reads what is common to every installation (`[state]`,
//! `[worker]`, `[syncs.*]`); each source and destination reads its own table
//! in its folder (`sources/<type>/config.rs`, `destinations/<type>/config.rs`),
//! picked by `type` from the registries (`sources::registry`,
//! `destinations::registry`).

mod alerts;
mod api;
mod dbt;
mod delivery;
mod error;
mod interpolate;
mod state;
mod sync;
mod table;
mod telemetry;
#[cfg(test)]
pub(crate) mod test_support;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

pub use alerts::{AlertConfig, AlertTarget};
pub use api::{ApiConfig, ApiToken, MIN_TOKEN_CHARS, Role};
pub use dbt::{DbtConfig, DbtModel, read_manifest, stale_models};
pub use delivery::{
    BatchCap, DELIVERY_FIELDS, DeliveryDefaults, DeliverySettings, Limits, MAX_BATCH_SIZE,
    RateLimit,
};
pub use error::ConfigError;
pub use interpolate::interpolate;
pub use state::StateConfig;
pub use sync::{
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_VERIFY_SAMPLE, FieldMapping, Guardrails,
    MAX_MAX_RECORD_BYTES, Model, ModelOrigin, SyncConfig, SyncMode, SyncSchedule, VerifySchedule,
};
pub use table::ConnectorTable;
pub use telemetry::{OtlpProtocol, TelemetryConfig};
pub use worker::WorkerSettings;

use crate::destinations::{self, DestinationConfig};
use crate::sources::{self, SourceConfig};
use table::SourceText;

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state: StateConfig,
    pub worker: WorkerSettings,
    /// `[api]`: who may call `ebb serve`'s API. Without it, the API is off.
    pub api: Option<ApiConfig>,
    /// `[dbt]`: the dbt project models are read from, and its jobs.
    pub dbt: Option<DbtConfig>,
    /// `[alerts.NAME]`, in name order.
    pub alerts: Vec<AlertConfig>,
    /// `[telemetry]`: where traces go.
    pub telemetry: TelemetryConfig,
    pub sources: BTreeMap<String, Arc<dyn SourceConfig>>,
    pub destinations: BTreeMap<String, Arc<dyn DestinationConfig>>,
    pub syncs: BTreeMap<String, SyncConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state: Spanned<state::RawState>,
    #[serde(default)]
    worker: Option<Spanned<WorkerSettings>>,
    #[serde(default)]
    api: Option<Spanned<api::RawApi>>,
    #[serde(default)]
    dbt: Option<Spanned<dbt::RawDbt>>,
    #[serde(default)]
    alerts: BTreeMap<String, Spanned<alerts::RawAlert>>,
    #[serde(default)]
    telemetry: Option<Spanned<TelemetryConfig>>,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    destinations: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    syncs: BTreeMap<String, Spanned<sync::RawSync>>,
}

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

        let state = state::resolve_state(&src, raw.state, lookup)?;
        let worker = raw.worker.map(Spanned::into_inner).unwrap_or_default();
        let api = raw
            .api
            .map(|api| api::resolve_api(&src, api, lookup))
            .transpose()?;

        let mut sources = BTreeMap::new();
        for (name, table) in &raw.sources {
            let table = ConnectorTable::new(&src, format!("sources.{name}"), table, lookup, &[]);
            sources.insert(name.clone(), sources::registry::parse(&table)?);
        }
        let mut destinations = BTreeMap::new();
        for (name, table) in &raw.destinations {
            let table = ConnectorTable::new(
                &src,
                format!("destinations.{name}"),
                table,
                lookup,
                DELIVERY_FIELDS,
            );
            destinations.insert(name.clone(), destinations::registry::parse(&table)?);
        }
        let dbt = raw
            .dbt
            .map(|dbt| dbt::resolve_dbt(&src, &base_dir, dbt, lookup))
            .transpose()?;
        let dbt_models = dbt.as_ref().map(|dbt| sync::DbtModels {
            manifest: &dbt.manifest,
            models: dbt::read_manifest(&dbt.manifest),
        });
        check_after(&src, &raw.syncs)?;
        let sync_names: Vec<&str> = raw.syncs.keys().map(String::as_str).collect();
        let alerts = alerts::resolve_alerts(&src, raw.alerts, &sync_names, lookup)?;
        let mut syncs = BTreeMap::new();
        for (name, raw_sync) in raw.syncs {
            let sync = sync::resolve_sync(
                &src,
                &base_dir,
                &name,
                raw_sync,
                &sources,
                &destinations,
                dbt_models.as_ref(),
            )?;
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
            api,
            dbt,
            alerts,
            telemetry: raw.telemetry.map(Spanned::into_inner).unwrap_or_default(),
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

    pub fn destination(&self, name: &str) -> Option<&dyn DestinationConfig> {
        self.destinations.get(name).map(Arc::as_ref)
    }

    pub fn source(&self, name: &str) -> Option<&dyn SourceConfig> {
        self.sources.get(name).map(Arc::as_ref)
    }
}

/// Checks `after = [...]`: every name is a sync, and they form no cycle
/// (the cycle is named).
fn check_after(
    src: &SourceText<'_>,
    syncs: &BTreeMap<String, Spanned<sync::RawSync>>,
) -> Result<(), ConfigError> {
    for (name, raw) in syncs {
        for upstream in &raw.get_ref().after {
            let upstream_name = upstream.get_ref();
            if upstream_name == name {
                return Err(src.invalid(
                    Some(upstream.span().start),
                    format!("syncs.{name}.after"),
                    "a sync cannot run after itself",
                ));
            }
            if !syncs.contains_key(upstream_name) {
                return Err(src.invalid(
                    Some(upstream.span().start),
                    format!("syncs.{name}.after"),
                    format!(
                        "unknown sync `{upstream_name}`; defined syncs are: {}",
                        syncs.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    // Depth-first, in name order: a sync met again while on the path closes
    // a cycle.
    fn visit<'a>(
        name: &'a str,
        syncs: &'a BTreeMap<String, Spanned<sync::RawSync>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<(Vec<&'a str>, usize)> {
        if done.contains(name) {
            return None;
        }
        if let Some(start) = path.iter().position(|p| *p == name) {
            let mut cycle = path[start..].to_vec();
            cycle.push(name);
            let at = syncs
                .get(path[path.len() - 1])
                .and_then(|raw| raw.get_ref().after.iter().find(|a| a.get_ref() == name))
                .map_or(0, |a| a.span().start);
            return Some((cycle, at));
        }
        path.push(name);
        if let Some(raw) = syncs.get(name) {
            for upstream in &raw.get_ref().after {
                if let Some(found) = visit(upstream.get_ref(), syncs, path, done) {
                    return Some(found);
                }
            }
        }
        path.pop();
        done.insert(name);
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for name in syncs.keys() {
        if let Some((cycle, at)) = visit(name, syncs, &mut Vec::new(), &mut done) {
            // `after` points upstream; the cycle reads in run order.
            let order: Vec<&str> = cycle.iter().rev().copied().collect();
            return Err(src.invalid(
                Some(at),
                format!("syncs.{}.after", cycle[cycle.len() - 2]),
                format!(
                    "`after` makes a cycle: {}; no sync of it could ever start",
                    order.join(" → ")
                ),
            ));
        }
    }
    Ok(())
}

/// Lets a connector's typed config be read back as its own type (in tests,
/// and where one connector needs another's details).
pub trait AsAny {
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests;
