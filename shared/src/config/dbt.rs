//! `[dbt]`: models read from a dbt project's `target/manifest.json`, and
//! the dbt Cloud jobs whose completion triggers the syncs reading them.
//!
//! ```toml
//! [dbt]
//! manifest = "../analytics/target/manifest.json"   # relative to ebb.toml
//! webhook_secret = "${DBT_WEBHOOK_SECRET}"          # dbt Cloud's webhook secret
//! jobs = { "123" = ["customers", "orders"] }         # what each job builds
//! ```
//!
//! A sync then reads `model = { dbt = "customers" }`: the relation dbt
//! built (`SELECT * FROM "analytics"."marts"."customers"`), or, for an
//! ephemeral model, its compiled SQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::table::SourceText;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct DbtConfig {
    pub manifest: PathBuf,
    /// Verifies the `Authorization` HMAC of dbt Cloud's webhooks; without
    /// it, the webhook is off.
    pub webhook_secret: Option<Secret>,
    /// dbt Cloud job id → the models it builds. A job not listed triggers
    /// every sync that reads a dbt model.
    pub jobs: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDbt {
    manifest: Spanned<String>,
    #[serde(default)]
    webhook_secret: Option<Spanned<String>>,
    #[serde(default)]
    jobs: BTreeMap<String, Vec<String>>,
}

pub(crate) fn resolve_dbt(
    src: &SourceText<'_>,
    base_dir: &Path,
    raw: Spanned<RawDbt>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<DbtConfig, ConfigError> {
    let raw = raw.into_inner();
    let webhook_secret = raw
        .webhook_secret
        .map(|s| src.secret_at(s.get_ref(), "dbt.webhook_secret", s.span().start, lookup))
        .transpose()?;
    if webhook_secret
        .as_ref()
        .is_some_and(|s| s.expose().trim().is_empty())
    {
        return Err(src.invalid(
            None,
            "dbt.webhook_secret",
            "is empty; copy the secret dbt Cloud shows for the webhook",
        ));
    }
    Ok(DbtConfig {
        manifest: base_dir.join(raw.manifest.get_ref()),
        webhook_secret,
        jobs: raw.jobs,
    })
}

/// A dbt model as a manifest describes it.
#[derive(Debug, Clone)]
pub struct DbtModel {
    pub name: String,
    /// `"db"."schema"."name"`: where dbt built it (none when ephemeral).
    pub relation: Option<String>,
    pub compiled_sql: Option<String>,
    /// The model's `.sql` file, relative to the dbt project.
    pub original_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Manifest {
    nodes: BTreeMap<String, Node>,
}

#[derive(Deserialize)]
struct Node {
    resource_type: String,
    name: String,
    #[serde(default)]
    relation_name: Option<String>,
    #[serde(default)]
    compiled_code: Option<String>,
    /// dbt before 1.3.
    #[serde(default)]
    compiled_sql: Option<String>,
    #[serde(default)]
    original_file_path: Option<String>,
}

/// The models of a manifest, by name; `Err` says why it cannot be read.
pub fn read_manifest(path: &Path) -> Result<BTreeMap<String, Vec<DbtModel>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the dbt manifest {}: {e}; run `dbt compile` (or `dbt build`) in the dbt project first",
            path.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a dbt manifest.json: {e}", path.display()))?;
    let mut models: BTreeMap<String, Vec<DbtModel>> = BTreeMap::new();
    for node in manifest.nodes.into_values() {
        if node.resource_type != "model" {
            continue;
        }
        models.entry(node.name.clone()).or_default().push(DbtModel {
            name: node.name,
            relation: node.relation_name.filter(|r| !r.trim().is_empty()),
            compiled_sql: node.compiled_code.or(node.compiled_sql),
            original_file: node.original_file_path.map(PathBuf::from),
        });
    }
    Ok(models)
}

impl DbtModel {
    /// What Ebb reads: the relation dbt built, or the compiled SQL of an
    /// ephemeral model.
    pub fn sql(&self) -> Option<String> {
        match (&self.relation, &self.compiled_sql) {
            (Some(relation), _) => Some(format!("SELECT * FROM {relation}")),
            (None, Some(sql)) if !sql.trim().is_empty() => Some(sql.clone()),
            _ => None,
        }
    }
}

/// The model files that changed after the manifest was written: the
/// manifest is stale, and Ebb would read what dbt built before.
pub fn stale_models(manifest: &Path, models: &[&DbtModel]) -> Vec<PathBuf> {
    let Some(written) = modified(manifest) else {
        return Vec::new();
    };
    // The manifest is in `<project>/target/`; model paths are relative to
    // `<project>`.
    let Some(project) = manifest.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    models
        .iter()
        .filter_map(|m| m.original_file.as_ref())
        .map(|file| project.join(file))
        .filter(|file| modified(file).is_some_and(|changed| changed > written))
        .collect()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
