//! `ebb check`: config, model SQL and mapping, checked against each source;
//! with `--connect`, also against each destination (credentials,
//! permissions, schema).

use std::collections::BTreeMap;

use ebb_shared::config::{Config, DestinationConfig, FieldMapping, SyncConfig};
use ebb_worker::destinations::util::api::Failure;
use ebb_worker::destinations::{hubspot, mailchimp, salesforce};

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
        let columns = source.describe(sync).await;
        let mapping = columns
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|columns| {
                PostgresSource::mapping_for(sync, columns).map_err(|e| e.to_string())
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
                    let types = columns.as_deref().unwrap_or_default();
                    problems += check_destination(config, sync, &mapping, types).await;
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
    column_types: &[(String, String)],
) -> usize {
    // (destination field, model column type); TEXT when the type is unknown.
    let fields: Vec<(&str, &str)> = mapping
        .iter()
        .map(|m| {
            let column_type = column_types
                .iter()
                .find(|(name, _)| name == &m.column)
                .map_or("TEXT", |(_, t)| t.as_str());
            (m.field.as_str(), column_type)
        })
        .collect();
    let destination = &sync.destination;
    let client = match ebb_worker::destinations::http::client() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let (result, base_url, what) = match config.destination(destination) {
        Some(DestinationConfig::HubSpot(c)) => (
            hubspot::check_mapping(&client, c, &fields).await.map(|check| {
                let how = if check.upserts {
                    format!("upserted by `{}`", c.match_on)
                } else {
                    format!(
                        "created, and looked up by `{}` when an earlier create's outcome is unknown",
                        c.match_on
                    )
                };
                (check.problems, format!("HubSpot {} accept the mapping of sync `{}`; records are {how}", c.object_type, sync.name))
            }),
            c.base_url.as_str(),
            format!("object type `{}`", c.object_type),
        ),
        Some(DestinationConfig::Mailchimp(c)) => (
            mailchimp::check_mapping(&client, c, &fields).await.map(|check| {
                (check.problems, format!("Mailchimp audience {} accepts the mapping of sync `{}`", c.list_id, sync.name))
            }),
            c.base_url.as_str(),
            format!("audience `{}`", c.list_id),
        ),
        Some(DestinationConfig::Salesforce(c)) => (
            salesforce::check_mapping(&client, c, &fields).await.map(|check| {
                (check.problems, format!("Salesforce {} accepts the mapping of sync `{}`; records are upserted by `{}`", c.object, sync.name, c.external_id))
            }),
            c.login_url.as_str(),
            format!("object `{}` (API v{})", c.object, c.api_version),
        ),
        // http and postgres destinations are reached at run time only.
        _ => return 0,
    };
    match result {
        Ok((problems, ok)) if problems.is_empty() => {
            println!("ok: destination `{destination}`: {ok}");
            0
        }
        Ok((problems, _)) => {
            for problem in &problems {
                eprintln!(
                    "error: sync `{}` → destination `{destination}`: {problem}",
                    sync.name
                );
            }
            problems.len()
        }
        Err(failure) => {
            let (kind, message) = match failure {
                Failure::Unauthorized(m) => ("bad credentials", m),
                Failure::Forbidden(m) => ("missing permissions", m),
                Failure::Unreachable(m) => ("unreachable", format!("{m} ({base_url})")),
                Failure::NotFound(m) => ("not found", format!("{what}: {m}")),
                Failure::Throttled { .. } => (
                    "rate limited",
                    "the destination answered 429; try again shortly".to_owned(),
                ),
                Failure::Transient(m, _)
                | Failure::Rejected(m)
                | Failure::Unexpected(m)
                | Failure::Misconfigured(m) => ("unexpected answer", m),
            };
            eprintln!("error: destination `{destination}`: {kind}: {message}");
            1
        }
    }
}
