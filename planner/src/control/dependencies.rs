//! Syncs that run after others (`after = ["a", "b"]`): a sync is due once
//! every sync it runs after has succeeded since its own newest run started
//! (or, if it never ran, once each has ever succeeded). `ebb serve` starts
//! due syncs; a sync whose upstreams keep succeeding while it runs is due
//! again when it ends, so it always catches up with their newest data.

use chrono::{DateTime, Utc};
use ebb_shared::config::Config;
use ebb_shared::state::runs::{self, RunState};
use sqlx::PgPool;

use crate::error::PlannerError;

/// A sync to start, and the upstream whose success made it due (the last
/// to succeed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub sync: String,
    pub after: String,
}

pub async fn due(config: &Config, pool: &PgPool) -> Result<Vec<Due>, PlannerError> {
    let dependents: Vec<_> = config
        .syncs
        .values()
        .filter(|s| !s.after.is_empty())
        .collect();
    if dependents.is_empty() {
        return Ok(Vec::new());
    }
    let latest = runs::latest_by_sync(pool).await?;
    let mut due = Vec::new();
    for sync in dependents {
        let newest = latest
            .get(&sync.name)
            .and_then(|(newest, _)| newest.as_ref());
        if newest.is_some_and(|r| matches!(r.state, RunState::Planning | RunState::Running)) {
            continue;
        }
        let since = newest.map(|r| r.created_at);
        let mut last: Option<(DateTime<Utc>, &str)> = None;
        let ready = sync.after.iter().all(|upstream| {
            let succeeded = latest
                .get(upstream)
                .and_then(|(_, success)| success.as_ref())
                .and_then(|r| r.finished_at);
            match succeeded {
                Some(at) if since.is_none_or(|since| at > since) => {
                    if last.is_none_or(|(seen, _)| at > seen) {
                        last = Some((at, upstream.as_str()));
                    }
                    true
                }
                _ => false,
            }
        });
        if let (true, Some((_, upstream))) = (ready, last) {
            due.push(Due {
                sync: sync.name.clone(),
                after: upstream.to_owned(),
            });
        }
    }
    Ok(due)
}
