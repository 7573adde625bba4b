//! `[state]`: where Ebb keeps its own bookkeeping (Postgres) and its task
//! queue (Redis).

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::table::SourceText;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub database_url: Secret,
    pub redis_url: Secret,
    /// Prefix of every Redis key Ebb writes, so several Ebb installations
    /// (or parallel tests) can share one Redis.
    pub queue_prefix: String,
    /// How long a finished run's per-record outcomes are kept (without
    /// their payloads), for its history; `ebb serve` deletes older ones.
    pub run_records_retention_days: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    database_url: Spanned<String>,
    redis_url: Spanned<String>,
    #[serde(default = "default_queue_prefix")]
    queue_prefix: String,
    #[serde(default = "default_run_records_retention_days")]
    run_records_retention_days: u32,
}

fn default_run_records_retention_days() -> u32 {
    14
}

fn default_queue_prefix() -> String {
    "ebb".to_owned()
}

pub(crate) fn resolve_state(
    src: &SourceText<'_>,
    raw: Spanned<RawState>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<StateConfig, ConfigError> {
    let raw = raw.into_inner();
    let database_url = src.secret_at(
        raw.database_url.get_ref(),
        "state.database_url",
        raw.database_url.span().start,
        lookup,
    )?;
    let redis_url = src.secret_at(
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
    if raw.run_records_retention_days == 0 {
        return Err(src.invalid(
            None,
            "state.run_records_retention_days",
            "must be at least 1 (a run's records are its history)",
        ));
    }
    Ok(StateConfig {
        database_url,
        redis_url,
        queue_prefix: raw.queue_prefix,
        run_records_retention_days: raw.run_records_retention_days,
    })
}
