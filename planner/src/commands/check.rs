//! `ebb check`: config, model SQL and mapping, checked against each source;
//! with `--connect`, also against each destination (credentials,
//! permissions, schema).

use std::collections::BTreeMap;

use ebb_shared::config::{Config, DestinationConfig, FieldMapping, SyncConfig};
use ebb_worker::destinations::hubspot::{self, Failure};

use crate::source::PostgresSource;

/// Returns the number of problems found (each already printed).
pub async fn check(config: &Config, connect: bool) -> usize {
    let mut problems = 0;
    let mut sources: BTreeMap<&str, Option<PostgresSource>> = BTreeMap::new();
    for sync in config.syncs.values() {
        if !sources.contains_key(sync.source.as_str()) {
            let connected = match config.source(&sync.source) {
                Some(cfg) => match PostgresSource::connect(&sync.source, cfg).await {
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
        match source.resolve_mapping(sync).await {
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
                    problems += check_destination(config, sync, &mapping).await;
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
async fn check_destination(config: &Config, sync: &SyncConfig, mapping: &[FieldMapping]) -> usize {
    let Some(DestinationConfig::HubSpot(hubspot_config)) = config.destination(&sync.destination)
    else {
        // http and postgres destinations are reached at run time only.
        return 0;
    };
    let client = match ebb_worker::destinations::http::client() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let fields: Vec<&str> = mapping.iter().map(|m| m.field.as_str()).collect();
    let destination = &sync.destination;
    match hubspot::check_mapping(&client, hubspot_config, &fields).await {
        Ok(check) if check.problems.is_empty() => {
            println!(
                "ok: destination `{destination}`: HubSpot {} accept the mapping of sync `{}`; records are {}",
                hubspot_config.object_type,
                sync.name,
                if check.upserts {
                    format!("upserted by `{}`", hubspot_config.match_on)
                } else {
                    format!(
                        "created, and looked up by `{}` when an earlier create's outcome is unknown",
                        hubspot_config.match_on
                    )
                }
            );
            0
        }
        Ok(check) => {
            for problem in &check.problems {
                eprintln!(
                    "error: sync `{}` → destination `{destination}`: {problem}",
                    sync.name
                );
            }
            check.problems.len()
        }
        Err(failure) => {
            let (what, message) = match failure {
                Failure::Unauthorized(m) => ("bad credentials", m),
                Failure::Forbidden(m) => ("missing permissions", m),
                Failure::Unreachable(m) => {
                    ("unreachable", format!("{m} ({})", hubspot_config.base_url))
                }
                Failure::NotFound(m) => (
                    "unknown object type",
                    format!("`{}`: {m}", hubspot_config.object_type),
                ),
                Failure::Throttled { .. } => (
                    "rate limited",
                    "HubSpot answered 429; try again shortly".to_owned(),
                ),
                Failure::Transient(m, _)
                | Failure::Rejected(m)
                | Failure::Unexpected(m)
                | Failure::Misconfigured(m) => ("unexpected answer", m),
            };
            eprintln!("error: destination `{destination}`: {what}: {message}");
            1
        }
    }
}
