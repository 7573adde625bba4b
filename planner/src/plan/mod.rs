//! Planning a run: snapshot the model, diff it against the ledger, and write
//! the run, its records and its batches to Postgres in one transaction. Only
//! after that commit do tasks go to Redis (see [`crate::enqueue`]).

pub mod budget;
pub mod diff;
pub mod merge;
pub mod replay;
pub mod snapshot;

use serde::Serialize;

use ebb_shared::StateError;
use ebb_shared::config::{Config, SyncConfig};
use ebb_shared::sources::Source;
use ebb_shared::sources::source::resolve_mapping;
use ebb_shared::state::runs::{self, NewRun};
use ebb_shared::telemetry::metrics;
use sqlx::PgPool;
use tracing::Instrument;

use crate::error::PlannerError;
pub use budget::Budget;
pub use diff::{Diffed, PlanCounts, PlanRejection, SendRule};

/// COPY data goes to the state database in chunks of about this size.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// How often a run being planned says it is alive (the stale-run timeout
/// is minutes).
const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How many planning rejections, and flapping records, a report lists by
/// key.
const REJECTION_SAMPLE: i64 = 20;

/// What `ebb plan` prints, and what a run records before sending.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanReport {
    pub sync: String,
    pub destination: String,
    pub mode: String,
    pub full_resync: bool,
    #[serde(flatten)]
    pub counts: PlanCounts,
    pub rejections: Vec<PlanRejection>,
    /// Why the run is held for an operator (a guardrail crossed); the dry
    /// run says so too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The requests it takes at the destination, and what share of the
    /// destination's limits that is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Keys of flapping records (the first 20; `flapping` counts them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flapping_keys: Vec<String>,
}

/// A run whose plan is committed.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub run_id: i64,
    pub batches: Vec<i32>,
    pub report: PlanReport,
    /// The run's root span (`ebb.run`): enqueueing, and waiting in `ebb
    /// run`, happen in it; its workers' batches join it through
    /// `traceparent`.
    pub span: tracing::Span,
    pub traceparent: Option<String>,
}

/// The root span of a run's trace, with its `traceparent` recorded on the
/// run (so re-enqueued tasks carry it too).
pub(crate) async fn run_span(
    pool: &PgPool,
    sync: &SyncConfig,
    run_id: i64,
) -> (tracing::Span, Option<String>) {
    let span = tracing::info_span!("ebb.run", run_id, sync = %sync.name, destination = %sync.destination, trace_id = tracing::field::Empty);
    ebb_shared::telemetry::record_trace_id(&span);
    let traceparent = ebb_shared::telemetry::traceparent(&span);
    if let Some(traceparent) = &traceparent
        && let Err(e) = runs::set_traceparent(pool, run_id, traceparent).await
    {
        tracing::warn!(run_id, error = %e, "cannot record the run's trace; its re-enqueued batches will start traces of their own");
    }
    (span, traceparent)
}

pub(crate) async fn open_source(
    config: &Config,
    sync: &SyncConfig,
) -> Result<Box<dyn Source>, PlannerError> {
    let source = config.source(&sync.source).ok_or_else(|| {
        PlannerError::Usage(format!(
            "sync `{}` names unknown source `{}`",
            sync.name, sync.source
        ))
    })?;
    Ok(source.connect(&sync.source).await?)
}

pub(crate) fn batch_size(config: &Config, sync: &SyncConfig) -> Result<usize, PlannerError> {
    config
        .destination(&sync.destination)
        .map(|d| d.delivery().batch_size)
        .ok_or_else(|| {
            PlannerError::Usage(format!(
                "sync `{}` names unknown destination `{}`",
                sync.name, sync.destination
            ))
        })
}

/// `ebb plan`: everything a run would do up to sending, then rolled back.
pub async fn dry_run(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    full_resync: bool,
) -> Result<PlanReport, PlannerError> {
    let source = open_source(config, sync).await?;
    let mapping = resolve_mapping(source.as_ref(), sync).await?;
    let batch_size = batch_size(config, sync)?;
    let rule = SendRule {
        mode: sync.mode,
        full_resync,
    };
    let mut tx = pool
        .begin()
        .await
        .map_err(StateError::query("starting the plan"))?;
    let diffed = diff_model(
        &mut tx,
        pool,
        source.as_ref(),
        sync,
        &mapping,
        rule,
        batch_size,
        None,
    )
    .await?;
    tx.rollback()
        .await
        .map_err(StateError::query("ending the dry run"))?;
    let previous_rows = runs::last_succeeded_rows_read(pool, &sync.name).await?;
    let held = guardrail_crossed(sync, &diffed.counts, previous_rows)
        .map(|why| format!("a run would be held: {why}"));
    let mut report = report(sync, full_resync, diffed.counts, diffed.rejections);
    report.held = held;
    report.budget = budget::estimate(config, sync, &diffed.writes);
    report.flapping_keys = diffed.flapping_keys;
    Ok(report)
}

/// Diffs the model against the ledger and, for run `run_id`, writes the
/// records it sends, its batches and its planning rejections: by a merge
/// of the key-ordered model and ledger where the source can sort,
/// otherwise through a snapshot of the model.
#[allow(clippy::too_many_arguments)]
async fn diff_model(
    tx: &mut sqlx::PgConnection,
    pool: &PgPool,
    source: &dyn Source,
    sync: &SyncConfig,
    mapping: &[ebb_shared::config::FieldMapping],
    rule: SendRule,
    batch_size: usize,
    run_id: Option<i64>,
) -> Result<Diffed, PlannerError> {
    if let Some(model) = source.stream_in_key_order(sync, mapping) {
        let run = run_id.map(|run_id| merge::RunPlan { run_id, pool });
        let span = tracing::info_span!("ebb.plan.merge", rows = tracing::field::Empty);
        let diffed = merge::merge(tx, pool, model, source.name(), sync, rule, batch_size, run)
            .instrument(span.clone())
            .await?;
        span.record("rows", diffed.counts.rows_read);
        return Ok(diffed);
    }
    let heartbeat = run_id.map(|run_id| (pool, run_id));
    let (counts, rejections, flapping_keys) =
        snapshot_and_diff(tx, source, sync, mapping, rule, heartbeat).await?;
    let (batches, writes) = match run_id {
        None if counts.to_send == 0 => (Vec::new(), Vec::new()),
        None => (
            Vec::new(),
            diff::planned_writes(tx, &sync.name, rule, batch_size).await?,
        ),
        Some(run_id) => {
            diff::record_rejections(
                tx,
                run_id,
                &sync.name,
                &sync.destination,
                &sync.primary_key,
                counts.rejected,
            )
            .await?;
            // A plan that sends nothing skips the second pass over the diff.
            if counts.to_send == 0 {
                (Vec::new(), Vec::new())
            } else {
                let batches = diff::write_batches(tx, run_id, &sync.name, rule, batch_size).await?;
                (batches, diff::written_writes(tx, run_id, &sync.name).await?)
            }
        }
    };
    Ok(Diffed {
        counts,
        rejections,
        flapping_keys,
        writes,
        batches,
    })
}

fn report(
    sync: &SyncConfig,
    full_resync: bool,
    counts: PlanCounts,
    rejections: Vec<PlanRejection>,
) -> PlanReport {
    PlanReport {
        sync: sync.name.clone(),
        destination: sync.destination.clone(),
        mode: sync.mode.as_str().to_owned(),
        full_resync,
        counts,
        rejections,
        held: None,
        budget: None,
        flapping_keys: Vec::new(),
    }
}

/// The steps a dry run and a real run share: snapshot the model into the
/// transaction's temp table, find duplicate keys, count the diff and sample
/// the planning rejections.
async fn snapshot_and_diff(
    tx: &mut sqlx::PgConnection,
    source: &dyn Source,
    sync: &SyncConfig,
    mapping: &[ebb_shared::config::FieldMapping],
    rule: SendRule,
    heartbeat: Option<(&PgPool, i64)>,
) -> Result<(PlanCounts, Vec<PlanRejection>, Vec<String>), PlannerError> {
    let rows = snapshot::snapshot(tx, source, sync, mapping, heartbeat)
        .instrument(tracing::info_span!(
            "ebb.plan.snapshot",
            rows = tracing::field::Empty
        ))
        .await?;
    tracing::Span::current().record("rows", rows);
    async {
        diff::find_duplicates(tx).await?;
        let versions = sync.guardrails.flapping_versions;
        let mut counts = diff::count(tx, &sync.name, rule, versions).await?;
        counts.rows_read = rows;
        let rejections = if counts.rejected > 0 {
            diff::sample_rejections(tx, &sync.primary_key, REJECTION_SAMPLE).await?
        } else {
            Vec::new()
        };
        let flapping_keys = if counts.flapping > 0 {
            diff::flapping_keys(tx, &sync.name, versions, REJECTION_SAMPLE).await?
        } else {
            Vec::new()
        };
        Ok((counts, rejections, flapping_keys))
    }
    .instrument(tracing::info_span!("ebb.plan.diff"))
    .await
}

/// Creates a run and commits its plan. On any error the run is marked failed
/// with the error, and nothing has been sent.
pub async fn plan_run(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    full_resync: bool,
    trigger: &str,
) -> Result<PlannedRun, PlannerError> {
    let run_id = start_run(pool, sync, full_resync, trigger).await?;
    plan_started(config, pool, sync, full_resync, run_id).await
}

/// Creates a run of `sync` in state `planning`, under the one-active-run
/// lock; `trigger` says who or what started it (`cli`, `schedule`,
/// `api:<token name>`, …).
pub async fn start_run(
    pool: &PgPool,
    sync: &SyncConfig,
    full_resync: bool,
    trigger: &str,
) -> Result<i64, PlannerError> {
    Ok(runs::start(
        pool,
        NewRun {
            sync: &sync.name,
            destination: &sync.destination,
            kind: "sync",
            trigger,
            mode: sync.mode.as_str(),
            full_resync,
        },
    )
    .await?)
}

/// Plans a run [`start_run`] created. On any error the run is marked failed
/// with the error, and nothing has been sent.
pub async fn plan_started(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    full_resync: bool,
    run_id: i64,
) -> Result<PlannedRun, PlannerError> {
    let started = std::time::Instant::now();
    let (span, traceparent) = run_span(pool, sync, run_id).await;
    let planned = plan_committed(config, pool, sync, full_resync, run_id)
        .instrument(tracing::info_span!(parent: &span, "ebb.plan"))
        .await;
    match planned {
        Ok((batches, report)) => {
            metrics::planned(&sync.name, started.elapsed());
            if batches.is_empty() {
                // Nothing to send: the run ended with its plan.
                metrics::run_ended(&sync.name, "succeeded", Some(started.elapsed()));
            }
            Ok(PlannedRun {
                run_id,
                batches,
                report,
                span,
                traceparent,
            })
        }
        Err(e) => {
            if let Err(fail_error) = runs::fail(pool, run_id, &e.to_string()).await {
                tracing::error!(run_id, error = %fail_error, "could not mark the run failed");
            }
            // A run cancelled while planning was counted by whoever
            // cancelled it.
            if !matches!(e, PlannerError::CancelledWhilePlanning(_)) {
                metrics::run_ended(&sync.name, "failed", Some(started.elapsed()));
            }
            Err(e)
        }
    }
}

async fn plan_committed(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    full_resync: bool,
    run_id: i64,
) -> Result<(Vec<i32>, PlanReport), PlannerError> {
    let source = open_source(config, sync).await?;
    let mapping = resolve_mapping(source.as_ref(), sync).await?;
    let batch_size = batch_size(config, sync)?;
    let rule = SendRule {
        mode: sync.mode,
        full_resync,
    };
    let mut tx = pool
        .begin()
        .await
        .map_err(StateError::query("starting the plan"))?;
    let Diffed {
        counts,
        rejections,
        flapping_keys: flapping,
        writes,
        batches,
    } = diff_model(
        &mut tx,
        pool,
        source.as_ref(),
        sync,
        &mapping,
        rule,
        batch_size,
        Some(run_id),
    )
    .await?;
    let previous_rows = runs::last_succeeded_rows_read(pool, &sync.name).await?;
    let held = guardrail_crossed(sync, &counts, previous_rows).map(|why| {
        format!("held: {why}; nothing was sent. Approve with `ebb approve {run_id}` or discard with `ebb cancel {run_id}`")
    });
    let (batches, budget) = async {
        let budget = budget::estimate(config, sync, &writes);
        let mut totals = counts.totals(batches.len());
        totals.requests_planned = budget.as_ref().map(|b| b.requests as i64);
        if !runs::mark_planned(&mut tx, run_id, &totals, held.as_deref()).await? {
            return Err(PlannerError::CancelledWhilePlanning(run_id));
        }
        tx.commit()
            .await
            .map_err(StateError::query("committing the plan"))?;
        Ok((batches, budget))
    }
    .instrument(tracing::info_span!("ebb.plan.commit"))
    .await?;
    if !flapping.is_empty() {
        tracing::warn!(sync = %sync.name, run_id, flapping = counts.flapping, sample = ?flapping,
            "records changed back to a version a recent run delivered: the model may be unstable");
    }
    let mut report = report(sync, full_resync, counts, rejections);
    report.budget = budget;
    report.flapping_keys = flapping;
    if let Some(reason) = held {
        tracing::warn!(sync = %sync.name, run_id, %reason, "run held by a guardrail");
        report.held = Some(reason);
        // Nothing goes on the queue until an operator approves the run.
        return Ok((Vec::new(), report));
    }
    Ok((batches, report))
}

/// Why a plan with these counts must wait for an operator, when it crosses
/// any of the sync's guardrails (each one crossed, said in turn). What is delivered is what the ledger holds
/// of the model: unchanged, changed and removed records.
/// `previous_rows` is what the sync's last successful run read.
pub(crate) fn guardrail_crossed(
    sync: &SyncConfig,
    counts: &PlanCounts,
    previous_rows: Option<u64>,
) -> Option<String> {
    // A plan that sends nothing has nothing to hold back.
    if counts.to_send == 0 {
        return None;
    }
    let g = &sync.guardrails;
    let delivered = counts.unchanged + counts.changed + counts.removed;
    let pct = |n: i64| {
        if delivered == 0 {
            0.0
        } else {
            n as f64 * 100.0 / delivered as f64
        }
    };
    let mut crossed = Vec::new();
    if let Some(max) = g.max_remove.filter(|&max| counts.removed > max) {
        crossed.push(format!(
            "it would remove {} records, over max_remove = {max}",
            counts.removed
        ));
    }
    if let Some(max) = g
        .max_remove_pct
        .filter(|&max| counts.removed > 0 && pct(counts.removed) > max)
    {
        crossed.push(format!(
            "it would remove {} of {delivered} delivered records ({:.1}%), over max_remove_pct = {max}",
            counts.removed,
            pct(counts.removed)
        ));
    }
    if let Some(max) = g
        .max_change_pct
        .filter(|&max| counts.changed > 0 && pct(counts.changed) > max)
    {
        crossed.push(format!(
            "it would change {} of {delivered} delivered records ({:.1}%), over max_change_pct = {max}",
            counts.changed,
            pct(counts.changed)
        ));
    }
    if let Some(min) = g.min_rows.filter(|&min| counts.rows_read < min) {
        crossed.push(format!(
            "the model has {} rows, under min_rows = {min}",
            counts.rows_read
        ));
    }
    if let Some(max) = g.max_row_drop_pct
        && let Some(before) = previous_rows.filter(|&b| b > 0)
    {
        let drop = before.saturating_sub(counts.rows_read) as f64 * 100.0 / before as f64;
        if drop > max {
            crossed.push(format!(
                "the model has {} rows, {drop:.1}% fewer than the {before} of the last successful run, over max_row_drop_pct = {max}",
                counts.rows_read
            ));
        }
    }
    (!crossed.is_empty()).then(|| crossed.join("; "))
}

/// Parses a config of `rest` (destinations and syncs) under a state
/// database and a `wh` Postgres source, for the planner's unit tests.
#[cfg(test)]
pub(crate) fn test_config(rest: &str) -> Config {
    let text = format!(
        r#"
[state]
database_url = "postgres://x@127.0.0.1/x"
redis_url = "redis://127.0.0.1"
[sources.wh]
type = "postgres"
url = "postgres://x@127.0.0.1/x"
{rest}"#
    );
    Config::parse(std::path::Path::new("t.toml"), &text, &|_| None).expect("config")
}

/// Sync `s` of [`test_config`], from `wh` into an http destination, with
/// `settings` (TOML lines of the sync's table).
#[cfg(test)]
pub(crate) fn test_sync(settings: &str) -> SyncConfig {
    test_config(&format!(
        r#"
[destinations.sink]
type = "http"
url = "http://127.0.0.1:9/"
[syncs.s]
source = "wh"
model = "SELECT 1 AS id"
primary_key = "id"
destination = "sink"
{settings}
"#
    ))
    .sync("s")
    .expect("sync")
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(guardrails: &str) -> SyncConfig {
        test_sync(&format!(
            "mode = \"mirror\"\nguardrails = {{ {guardrails} }}"
        ))
    }

    fn counts(rows_read: u64, unchanged: i64, changed: i64, removed: i64) -> PlanCounts {
        PlanCounts {
            rows_read,
            unchanged,
            changed,
            removed,
            to_send: changed + removed,
            ..PlanCounts::default()
        }
    }

    #[test]
    fn each_guardrail_holds_past_its_limit_and_not_at_it() {
        let s = sync("max_remove = 10");
        assert_eq!(guardrail_crossed(&s, &counts(90, 90, 0, 10), None), None);
        let why = guardrail_crossed(&s, &counts(89, 89, 0, 11), None).unwrap();
        assert!(
            why.contains("remove 11 records, over max_remove = 10"),
            "{why}"
        );

        let s = sync("max_remove_pct = 10");
        assert_eq!(guardrail_crossed(&s, &counts(90, 90, 0, 10), None), None);
        let why = guardrail_crossed(&s, &counts(89, 89, 0, 11), None).unwrap();
        assert!(
            why.contains("remove 11 of 100 delivered records (11.0%)"),
            "{why}"
        );

        let s = sync("max_change_pct = 50");
        assert_eq!(guardrail_crossed(&s, &counts(100, 50, 50, 0), None), None);
        assert!(guardrail_crossed(&s, &counts(100, 49, 51, 0), None).is_some());

        let s = sync("min_rows = 100");
        assert_eq!(guardrail_crossed(&s, &counts(100, 99, 1, 0), None), None);
        // Nothing to send: nothing to hold back.
        assert_eq!(guardrail_crossed(&s, &counts(99, 99, 0, 0), None), None);
        let why = guardrail_crossed(&s, &counts(99, 98, 1, 0), None).unwrap();
        assert!(
            why.contains("the model has 99 rows, under min_rows = 100"),
            "{why}"
        );

        // Nothing delivered yet: a first sync is never held for its share.
        let s = sync("max_remove_pct = 10, max_change_pct = 10");
        assert_eq!(guardrail_crossed(&s, &counts(5, 0, 0, 0), None), None);

        let s = sync("max_row_drop_pct = 20");
        assert_eq!(
            guardrail_crossed(&s, &counts(80, 79, 1, 0), Some(100)),
            None
        );
        let why = guardrail_crossed(&s, &counts(79, 78, 1, 0), Some(100)).unwrap();
        assert!(
            why.contains("79 rows, 21.0% fewer than the 100 of the last successful run"),
            "{why}"
        );
        // No successful run yet, or more rows than before: nothing to compare.
        assert_eq!(guardrail_crossed(&s, &counts(1, 0, 1, 0), None), None);
        assert_eq!(
            guardrail_crossed(&s, &counts(150, 0, 1, 0), Some(100)),
            None
        );
    }
}
