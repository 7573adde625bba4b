//! `/metrics` of `ebb serve`: queue depth, destination limits, active runs
//! and open DLQ entries, in the Prometheus text format, for dashboards and
//! for KEDA's `prometheus` scaler (which, unlike its `redis` list scaler,
//! also sees tasks still in apalis-redis's `scheduled` ZSET, so workers can
//! scale from zero).

use std::fmt::Write;

use ebb_shared::config::Config;
use sqlx::PgPool;

use crate::error::PlannerError;

use super::limits;

/// Renders every metric; a part that cannot be read (Redis down) is left
/// out and counted in `ebb_metrics_errors`, so the rest still reports.
pub async fn render(config: &Config, pool: &PgPool) -> String {
    let mut out = String::new();
    let mut errors = 0;
    match limits::collect(config).await {
        Ok(rows) => {
            gauge_header(
                &mut out,
                "ebb_queue_waiting_tasks",
                "Tasks waiting on a destination's queue.",
            );
            for r in &rows {
                sample(
                    &mut out,
                    "ebb_queue_waiting_tasks",
                    &r.destination,
                    r.queue.pending + r.queue.scheduled,
                );
            }
            gauge_header(
                &mut out,
                "ebb_queue_running_tasks",
                "Tasks fetched by live workers.",
            );
            for r in &rows {
                sample(
                    &mut out,
                    "ebb_queue_running_tasks",
                    &r.destination,
                    r.queue.in_flight,
                );
            }
            gauge_header(
                &mut out,
                "ebb_queue_live_workers",
                "Workers alive on a destination's queue.",
            );
            for r in &rows {
                sample(
                    &mut out,
                    "ebb_queue_live_workers",
                    &r.destination,
                    r.queue.live_workers,
                );
            }
            gauge_header(
                &mut out,
                "ebb_limiter_in_flight",
                "Requests holding a concurrency lease.",
            );
            for r in &rows {
                sample(
                    &mut out,
                    "ebb_limiter_in_flight",
                    &r.destination,
                    r.now.in_flight,
                );
            }
            gauge_header(
                &mut out,
                "ebb_limiter_max_concurrency",
                "The destination's max_concurrency.",
            );
            for r in &rows {
                sample(
                    &mut out,
                    "ebb_limiter_max_concurrency",
                    &r.destination,
                    u64::from(r.max_concurrency),
                );
            }
            gauge_header(
                &mut out,
                "ebb_limiter_paused_milliseconds",
                "Pause left after a 429, for every worker.",
            );
            for r in &rows {
                sample(
                    &mut out,
                    "ebb_limiter_paused_milliseconds",
                    &r.destination,
                    r.now.paused_for_ms,
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the queues and limiters");
            errors += 1;
        }
    }
    match by_sync(pool).await {
        Ok(rows) => {
            gauge_header(
                &mut out,
                "ebb_runs_active",
                "Runs planning or running, per sync.",
            );
            for (sync, active, _) in &rows {
                labelled(&mut out, "ebb_runs_active", "sync", sync, *active as u64);
            }
            gauge_header(
                &mut out,
                "ebb_dlq_open_entries",
                "Open dead-letter entries, per sync.",
            );
            for (sync, _, open) in &rows {
                labelled(&mut out, "ebb_dlq_open_entries", "sync", sync, *open as u64);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the state database");
            errors += 1;
        }
    }
    gauge_header(
        &mut out,
        "ebb_metrics_errors",
        "Metric groups that could not be read.",
    );
    let _ = writeln!(out, "ebb_metrics_errors {errors}");
    out
}

/// `(sync, active runs, open DLQ entries)` for every sync with either.
async fn by_sync(pool: &PgPool) -> Result<Vec<(String, i64, i64)>, PlannerError> {
    let rows = sqlx::query_as(
        "SELECT sync_name, sum(active)::bigint, sum(open)::bigint FROM ( \
             SELECT sync_name, count(*) AS active, 0 AS open FROM ebb_runs \
             WHERE state IN ('planning', 'running') GROUP BY sync_name \
             UNION ALL \
             SELECT sync_name, 0, count(*) FROM ebb_dlq WHERE status = 'open' GROUP BY sync_name \
         ) t GROUP BY sync_name ORDER BY sync_name",
    )
    .fetch_all(pool)
    .await
    .map_err(ebb_shared::StateError::query("reading metrics"))?;
    Ok(rows)
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn sample(out: &mut String, name: &str, destination: &str, value: u64) {
    labelled(out, name, "destination", destination, value);
}

fn labelled(out: &mut String, name: &str, label: &str, value_of_label: &str, value: u64) {
    let escaped = value_of_label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let _ = writeln!(out, "{name}{{{label}=\"{escaped}\"}} {value}");
}
