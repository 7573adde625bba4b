//! Incidents from runs: each alert, each sync it watches, each kind it
//! alerts on. Only a change opens or resolves an incident, so a sync that
//! stays broken makes one message, not one per run.

use chrono::{DateTime, Utc};
use ebb_shared::config::{AlertConfig, Config};
use ebb_shared::state::alerts::{self, IncidentKind};
use ebb_shared::state::runs::{self, Run, RunState};
use sqlx::PgPool;

use crate::error::PlannerError;

/// Opens and resolves incidents. `watching_since` stands in for the last
/// success of a sync that never succeeded (when `ebb serve` started).
pub async fn evaluate(
    config: &Config,
    pool: &PgPool,
    watching_since: DateTime<Utc>,
) -> Result<(), PlannerError> {
    if config.alerts.is_empty() {
        return Ok(());
    }
    let finished = runs::latest_finished_by_sync(pool).await?;
    let latest = runs::latest_by_sync(pool).await?;
    let now = Utc::now();
    for alert in &config.alerts {
        for sync in config.syncs.values().filter(|s| alert.watches(&s.name)) {
            let run = finished.get(&sync.name);
            if alert.run_failed
                && let Some(run) = run
            {
                if run.state == RunState::Failed {
                    let detail = format!(
                        "run #{} failed: {}",
                        run.id,
                        run.error.as_deref().unwrap_or("no reason recorded")
                    );
                    open(
                        pool,
                        alert,
                        &sync.name,
                        IncidentKind::RunFailed,
                        &detail,
                        run,
                    )
                    .await?;
                } else {
                    let resolution = format!("run #{} succeeded", run.id);
                    resolve(
                        pool,
                        alert,
                        &sync.name,
                        IncidentKind::RunFailed,
                        &resolution,
                    )
                    .await?;
                }
            }
            if alert.run_held
                && let Some(newest) = latest
                    .get(&sync.name)
                    .and_then(|(newest, _)| newest.as_ref())
            {
                if newest.state == RunState::Held {
                    let detail = format!(
                        "run #{} is {}",
                        newest.id,
                        newest.error.as_deref().unwrap_or("held by a guardrail")
                    );
                    open(
                        pool,
                        alert,
                        &sync.name,
                        IncidentKind::RunHeld,
                        &detail,
                        newest,
                    )
                    .await?;
                } else {
                    let resolution = format!("run #{} is {} now", newest.id, newest.state);
                    resolve(pool, alert, &sync.name, IncidentKind::RunHeld, &resolution).await?;
                }
            }
            if (alert.rejections_over.is_some() || alert.rejections_over_percent.is_some())
                && let Some(run) = run
            {
                let (rejected, considered) = rejections(run);
                let percent = if considered > 0 {
                    rejected as f64 * 100.0 / considered as f64
                } else {
                    0.0
                };
                let over = alert.rejections_over.is_some_and(|n| rejected as u64 > n)
                    || alert.rejections_over_percent.is_some_and(|p| percent > p);
                let what = format!(
                    "run #{} rejected {rejected} of {considered} records ({percent:.1}%)",
                    run.id
                );
                if over {
                    let detail = format!("{what}; see `ebb dlq list --sync {}`", sync.name);
                    open(
                        pool,
                        alert,
                        &sync.name,
                        IncidentKind::Rejections,
                        &detail,
                        run,
                    )
                    .await?;
                } else {
                    resolve(pool, alert, &sync.name, IncidentKind::Rejections, &what).await?;
                }
            }
            if let Some(limit) = alert.not_succeeded_for {
                let last_success = latest
                    .get(&sync.name)
                    .and_then(|(_, success)| success.as_ref());
                let since = last_success
                    .and_then(|r| r.finished_at)
                    .unwrap_or(watching_since);
                let overdue = (now - since).to_std().is_ok_and(|age| age > limit);
                if overdue {
                    let detail = match last_success {
                        Some(run) => format!(
                            "no successful run since run #{} at {} (more than {})",
                            run.id,
                            since.format("%Y-%m-%d %H:%M:%S UTC"),
                            human(limit)
                        ),
                        None => format!(
                            "no successful run since Ebb started watching at {} (more than {})",
                            since.format("%Y-%m-%d %H:%M:%S UTC"),
                            human(limit)
                        ),
                    };
                    if alerts::open(
                        pool,
                        &alert.name,
                        &sync.name,
                        IncidentKind::NotSucceeded,
                        &detail,
                        None,
                    )
                    .await?
                    {
                        tracing::warn!(alert = %alert.name, sync = %sync.name, %detail, "incident opened");
                    }
                } else if let Some(run) = last_success {
                    let resolution = format!("run #{} succeeded", run.id);
                    resolve(
                        pool,
                        alert,
                        &sync.name,
                        IncidentKind::NotSucceeded,
                        &resolution,
                    )
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// Records rejected (at planning or by the destination) and records the
/// run considered sending.
fn rejections(run: &Run) -> (i64, i64) {
    let rejected = run.rejected + run.rejected_at_plan;
    (rejected, run.to_send + run.rejected_at_plan)
}

async fn open(
    pool: &PgPool,
    alert: &AlertConfig,
    sync: &str,
    kind: IncidentKind,
    detail: &str,
    run: &Run,
) -> Result<(), PlannerError> {
    if alerts::open(pool, &alert.name, sync, kind, detail, Some(run.id)).await? {
        tracing::warn!(alert = %alert.name, sync, kind = kind.as_str(), detail, "incident opened");
    }
    Ok(())
}

async fn resolve(
    pool: &PgPool,
    alert: &AlertConfig,
    sync: &str,
    kind: IncidentKind,
    resolution: &str,
) -> Result<(), PlannerError> {
    if alerts::resolve(pool, &alert.name, sync, kind, resolution).await? {
        tracing::info!(alert = %alert.name, sync, kind = kind.as_str(), resolution, "incident resolved");
    }
    Ok(())
}

fn human(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}
