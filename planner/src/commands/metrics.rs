//! `/metrics` of `ebb serve`: queue depth, destination limits, active runs
//! and open DLQ entries, in the Prometheus text format, for dashboards and
//! for KEDA's `prometheus` scaler (which, unlike its `redis` list scaler,
//! also sees tasks still in apalis-redis's `scheduled` ZSET, so workers can
//! scale from zero).

use std::fmt::Write;

use ebb_shared::config::Config;
use sqlx::PgPool;

use crate::enqueue::Queue;
use crate::error::PlannerError;

use super::limits::{self, DestinationLimits};

/// Renders every metric; a part that cannot be read (Redis down) is left
/// out and counted in `ebb_metrics_errors`, so the rest still reports.
/// `queue` is the connection kept between scrapes: opened when missing,
/// dropped after an error so the next scrape opens a fresh one.
pub async fn render(config: &Config, pool: &PgPool, queue: &mut Option<Queue>) -> String {
    type PerDestination = fn(&DestinationLimits) -> u64;
    const DESTINATION_GAUGES: [(&str, &str, PerDestination); 6] = [
        (
            "ebb_queue_waiting_tasks",
            "Tasks waiting on a destination's queue.",
            |r| r.queue.pending + r.queue.scheduled,
        ),
        (
            "ebb_queue_running_tasks",
            "Tasks fetched by live workers.",
            |r| r.queue.in_flight,
        ),
        (
            "ebb_queue_live_workers",
            "Workers alive on a destination's queue.",
            |r| r.queue.live_workers,
        ),
        (
            "ebb_limiter_in_flight",
            "Requests holding a concurrency lease.",
            |r| r.now.in_flight,
        ),
        (
            "ebb_limiter_max_concurrency",
            "The destination's max_concurrency.",
            |r| u64::from(r.max_concurrency),
        ),
        (
            "ebb_limiter_paused_milliseconds",
            "Pause left after a 429, for every worker.",
            |r| r.now.paused_for_ms,
        ),
    ];
    let mut out = String::new();
    let mut errors = 0;
    let rows = match queue {
        Some(queue) => limits::collect_on(config, queue).await,
        None => match Queue::connect(&config.state, &config.worker).await {
            Ok(connected) => limits::collect_on(config, queue.insert(connected)).await,
            Err(e) => Err(e.into()),
        },
    };
    if rows.is_err() {
        *queue = None;
    }
    match rows {
        Ok(rows) => {
            for (name, help, value) in DESTINATION_GAUGES {
                let samples = rows.iter().map(|r| (r.destination.as_str(), value(r)));
                gauge(&mut out, name, help, "destination", samples);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queues and limiters");
            errors += 1;
        }
    }
    match by_sync(pool).await {
        Ok(rows) => {
            let active = rows
                .iter()
                .map(|(sync, active, _)| (sync.as_str(), *active as u64));
            gauge(
                &mut out,
                "ebb_runs_active",
                "Runs planning or running, per sync.",
                "sync",
                active,
            );
            let open = rows
                .iter()
                .map(|(sync, _, open)| (sync.as_str(), *open as u64));
            gauge(
                &mut out,
                "ebb_dlq_open_entries",
                "Open dead-letter entries, per sync.",
                "sync",
                open,
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the state database");
            errors += 1;
        }
    }
    gauge(
        &mut out,
        "ebb_metrics_errors",
        "Metric groups that could not be read.",
        "",
        [("", errors)],
    );
    out
}

/// `(sync, active runs, open DLQ entries)` for every sync with either.
async fn by_sync(pool: &PgPool) -> Result<Vec<(String, i64, i64)>, PlannerError> {
    Ok(ebb_shared::state::runs::activity_by_sync(pool).await?)
}

/// One gauge family; an empty `label` writes unlabelled samples.
fn gauge<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (label_value, value) in samples {
        if label.is_empty() {
            let _ = writeln!(out, "{name} {value}");
            continue;
        }
        let escaped = label_value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(out, "{name}{{{label}=\"{escaped}\"}} {value}");
    }
}
