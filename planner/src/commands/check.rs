//! `ebb check`: config, model SQL and mapping, checked against each source.

use std::collections::BTreeMap;

use ebb_shared::config::Config;

use crate::source::PostgresSource;

/// Returns the number of problems found (each already printed).
pub async fn check(config: &Config) -> usize {
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
            Ok(mapping) => println!(
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
            ),
            Err(e) => {
                eprintln!("error: {e}");
                problems += 1;
            }
        }
    }
    problems
}
