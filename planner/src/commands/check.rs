//! `ebb check`: config, model SQL and mapping, checked against each source;
//! with `--connect`, also against each destination (credentials,
//! permissions, schema).

use std::collections::BTreeMap;

use ebb_shared::config::{Config, DbtModel, FieldMapping, SyncConfig, read_manifest, stale_models};
use ebb_shared::destinations::util::api;
use ebb_shared::sources::{Column, Source, effective_mapping};

/// Returns the number of problems found (each already printed).
pub async fn check(config: &Config, connect: bool) -> usize {
    warn_stale_dbt_manifest(config);
    let mut problems = 0;
    let mut sources: BTreeMap<&str, Option<Box<dyn Source>>> = BTreeMap::new();
    for sync in config.syncs.values() {
        if !sources.contains_key(sync.source.as_str()) {
            let connected = match config.source(&sync.source) {
                Some(source_config) => match source_config.connect(&sync.source).await {
                    Ok(source) => Some(source),
                    Err(e) => {
                        eprintln!("error: {e}");
                        problems += 1;
                        None
                    }
                },
                None => None,
            };
            sources.insert(sync.source.as_str(), connected);
        }
        let Some(Some(source)) = sources.get(sync.source.as_str()) else {
            eprintln!(
                "skipped: sync `{}` (source `{}` unreachable)",
                sync.name, sync.source
            );
            continue;
        };
        let columns = source.describe(sync).await;
        let mapping = columns
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|columns| effective_mapping(sync, columns).map_err(|e| e.to_string()));
        // A sync without a `[mapping]` sends the model's columns: what the
        // destination needs of them is checked now that they are known.
        let mapping = mapping.and_then(|mapping| {
            match config.destination(&sync.destination) {
                Some(destination) if sync.mapping.is_empty() => destination
                    .check_mapping(
                        &sync.destination,
                        &mapping,
                        &sync.primary_key,
                        sync.mode.sends_removed(),
                    )
                    .map_err(|message| format!("sync `{}`: {message}", sync.name)),
                _ => Ok(()),
            }
            .map(|()| mapping)
        });
        match mapping {
            Ok(mapping) => {
                println!(
                    "ok: sync `{}`: model from {} maps {} field(s) to `{}` ({} mode){}",
                    sync.name,
                    sync.model.describe_origin(),
                    mapping.len(),
                    sync.destination,
                    sync.mode.as_str(),
                    sync.schedule
                        .as_ref()
                        .map(|s| format!(", schedule `{}`", s.expression))
                        .unwrap_or_default()
                );
                if connect {
                    let columns = columns.as_deref().unwrap_or_default();
                    problems += check_destination(config, sync, &mapping, columns).await;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                problems += 1;
            }
        }
    }
    problems
}

/// Connects to the sync's destination and checks the mapping against its
/// schema; returns the number of problems (each printed).
async fn check_destination(
    config: &Config,
    sync: &SyncConfig,
    mapping: &[FieldMapping],
    columns: &[Column],
) -> usize {
    // (destination field, model column type); TEXT when the type is unknown.
    let fields: Vec<(&str, &str)> = mapping
        .iter()
        .map(|m| {
            let column_type = columns
                .iter()
                .find(|c| c.name == m.column)
                .map_or("TEXT", |c| c.type_name.as_str());
            (m.field.as_str(), column_type)
        })
        .collect();
    let destination = &sync.destination;
    let Some(destination_config) = config.destination(destination) else {
        return 0;
    };
    let client = match api::client() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    // http and postgres destinations are reached at run time only.
    let Some(checked) = destination_config
        .check_connection(&client, sync, &fields)
        .await
    else {
        return 0;
    };
    match checked {
        Ok(report) if report.problems.is_empty() => {
            println!("ok: destination `{destination}`: {}", report.accepted);
            0
        }
        Ok(report) => {
            for problem in &report.problems {
                eprintln!(
                    "error: sync `{}` → destination `{destination}`: {problem}",
                    sync.name
                );
            }
            report.problems.len()
        }
        Err(problem) => {
            eprintln!(
                "error: destination `{destination}`: {}: {}",
                problem.kind, problem.message
            );
            1
        }
    }
}

/// A dbt manifest older than the models it describes: Ebb would read what
/// dbt built before those changes. A warning, not a problem: the models
/// may simply not have been rebuilt yet.
fn warn_stale_dbt_manifest(config: &Config) {
    let Some(dbt) = &config.dbt else {
        return;
    };
    let Ok(models) = read_manifest(&dbt.manifest) else {
        return;
    };
    let used: Vec<&DbtModel> = config
        .syncs
        .values()
        .filter_map(|s| s.model.dbt_model())
        .filter_map(|name| models.get(name).and_then(|m| m.first()))
        .collect();
    for file in stale_models(&dbt.manifest, &used) {
        eprintln!(
            "warning: {} changed after the dbt manifest {} was written; run `dbt compile` (or your dbt job) so Ebb reads the current model",
            file.display(),
            dbt.manifest.display()
        );
    }
}
