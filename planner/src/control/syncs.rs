//! Each sync as an operator sees it: what it reads and writes, its
//! schedule and whether it is paused, its last runs and its health.

use chrono::{DateTime, Utc};
use ebb_shared::config::{Config, SyncConfig};
use ebb_shared::state::runs::{self, Run, RunState};
use ebb_shared::state::syncs::{self, SyncSetting};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::PlannerError;

/// One sync, with its state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncSummary {
    pub name: String,
    pub source: String,
    /// Where the model comes from: its file, or the config's line.
    pub model: String,
    pub destination: String,
    /// The destination's `type`.
    pub destination_type: String,
    /// `upsert`, `update`, `insert` or `mirror`.
    pub mode: String,
    pub primary_key: String,
    /// The cron expression, when the sync runs on a schedule.
    pub schedule: Option<String>,
    /// The schedule's time zone (IANA name).
    pub timezone: Option<String>,
    /// Whether an operator paused the schedule.
    pub paused: bool,
    /// Who paused or resumed it last, when, and why.
    pub pause: Option<SyncSetting>,
    /// When the schedule fires next (none when paused or unscheduled).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The newest run, whatever its state.
    pub last_run: Option<RunBrief>,
    /// When the newest successful run finished.
    pub last_success_at: Option<DateTime<Utc>>,
    pub health: SyncHealth,
    /// Open DLQ entries.
    pub open_dlq: i64,
}

/// A run in one line.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunBrief {
    pub id: i64,
    pub state: RunState,
    pub trigger: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub delivered: i64,
    pub rejected: i64,
    pub failed: i64,
}

impl From<&Run> for RunBrief {
    fn from(run: &Run) -> Self {
        RunBrief {
            id: run.id,
            state: run.state,
            trigger: run.trigger.clone(),
            created_at: run.created_at,
            finished_at: run.finished_at,
            delivered: run.delivered,
            rejected: run.rejected,
            failed: run.failed,
        }
    }
}

/// How a sync is doing, from its newest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncHealth {
    /// It never ran.
    NeverRun,
    /// A run is planning or running.
    Running,
    /// Its newest run is held by a guardrail, waiting for an operator.
    Held,
    /// Its newest run succeeded.
    Healthy,
    /// Its newest run failed or was cancelled.
    Failing,
}

/// Every sync of the config, in name order.
pub async fn overview(config: &Config, pool: &PgPool) -> Result<Vec<SyncSummary>, PlannerError> {
    let settings = syncs::all(pool).await?;
    let latest = runs::latest_by_sync(pool).await?;
    let open_dlq: std::collections::HashMap<String, i64> = runs::activity_by_sync(pool)
        .await?
        .into_iter()
        .map(|(sync, _, open)| (sync, open))
        .collect();
    Ok(config
        .syncs
        .values()
        .map(|sync| {
            let (last, last_success) = latest.get(&sync.name).cloned().unwrap_or_default();
            summarize(
                config,
                sync,
                settings.get(&sync.name).cloned(),
                last.as_ref(),
                last_success.as_ref(),
                open_dlq.get(&sync.name).copied().unwrap_or(0),
            )
        })
        .collect())
}

/// One sync, by name; `None` when the config has no such sync.
pub async fn one(
    config: &Config,
    pool: &PgPool,
    name: &str,
) -> Result<Option<SyncSummary>, PlannerError> {
    Ok(overview(config, pool)
        .await?
        .into_iter()
        .find(|s| s.name == name))
}

fn summarize(
    config: &Config,
    sync: &SyncConfig,
    setting: Option<SyncSetting>,
    last: Option<&Run>,
    last_success: Option<&Run>,
    open_dlq: i64,
) -> SyncSummary {
    let paused = setting.as_ref().is_some_and(|s| s.paused);
    let health = match last.map(|r| r.state) {
        None => SyncHealth::NeverRun,
        Some(RunState::Planning | RunState::Running) => SyncHealth::Running,
        Some(RunState::Held) => SyncHealth::Held,
        Some(RunState::Succeeded) => SyncHealth::Healthy,
        Some(RunState::Failed | RunState::Cancelled) => SyncHealth::Failing,
    };
    SyncSummary {
        name: sync.name.clone(),
        source: sync.source.clone(),
        model: sync.model.describe_origin(),
        destination: sync.destination.clone(),
        destination_type: config
            .destination(&sync.destination)
            .map_or("unknown", |d| d.type_name())
            .to_owned(),
        mode: sync.mode.as_str().to_owned(),
        primary_key: sync.primary_key.clone(),
        schedule: sync.schedule.as_ref().map(|s| s.expression.clone()),
        timezone: sync.schedule.as_ref().map(|s| s.timezone.name().to_owned()),
        paused,
        pause: setting,
        next_run_at: if paused {
            None
        } else {
            sync.schedule
                .as_ref()
                .and_then(|s| s.next_after(Utc::now()))
        },
        last_run: last.map(RunBrief::from),
        last_success_at: last_success.and_then(|r| r.finished_at),
        health,
        open_dlq,
    }
}

/// Pauses (`true`) or resumes a sync's schedule. Runs started by hand are
/// not affected.
pub async fn set_paused(
    config: &Config,
    pool: &PgPool,
    name: &str,
    paused: bool,
    by: &str,
    note: Option<&str>,
) -> Result<SyncSetting, PlannerError> {
    let sync = config.sync(name)?;
    Ok(syncs::set_paused(pool, &sync.name, paused, by, note).await?)
}
