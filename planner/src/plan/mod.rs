//! Planning a run: snapshot the model, diff it against the ledger, and write
//! the run, its records and its batches to Postgres in one transaction. Only
//! after that commit do tasks go to Redis (see [`crate::enqueue`]).

pub mod diff;
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
pub use diff::{PlanCounts, PlanRejection, SendRule};

/// How many planning rejections a report lists by key.
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

async fn open_source(config: &Config, sync: &SyncConfig) -> Result<Box<dyn Source>, PlannerError> {
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
    let rule = SendRule {
        mode: sync.mode,
        full_resync,
    };
    let mut tx = pool
        .begin()
        .await
        .map_err(StateError::query("starting the plan"))?;
    let (counts, rejections) =
        snapshot_and_diff(&mut tx, source.as_ref(), sync, &mapping, rule, None).await?;
    tx.rollback()
        .await
        .map_err(StateError::query("ending the dry run"))?;
    Ok(report(sync, full_resync, counts, rejections))
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
) -> Result<(PlanCounts, Vec<PlanRejection>), PlannerError> {
    let rows = snapshot::snapshot(tx, source, sync, mapping, heartbeat)
        .instrument(tracing::info_span!(
            "ebb.plan.snapshot",
            rows = tracing::field::Empty
        ))
        .await?;
    tracing::Span::current().record("rows", rows);
    async {
        diff::find_duplicates(tx).await?;
        let mut counts = diff::count(tx, &sync.name, rule).await?;
        counts.rows_read = rows;
        let rejections = diff::sample_rejections(tx, &sync.primary_key, REJECTION_SAMPLE).await?;
        Ok((counts, rejections))
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
    let (counts, rejections) = snapshot_and_diff(
        &mut tx,
        source.as_ref(),
        sync,
        &mapping,
        rule,
        Some((pool, run_id)),
    )
    .await?;
    let batches = async {
        diff::record_rejections(
            &mut tx,
            run_id,
            &sync.name,
            &sync.destination,
            &sync.primary_key,
        )
        .await?;
        let batches = diff::write_batches(&mut tx, run_id, &sync.name, rule, batch_size).await?;
        if !runs::mark_planned(&mut tx, run_id, &counts.totals(batches.len())).await? {
            return Err(PlannerError::CancelledWhilePlanning(run_id));
        }
        tx.commit()
            .await
            .map_err(StateError::query("committing the plan"))?;
        Ok(batches)
    }
    .instrument(tracing::info_span!("ebb.plan.commit"))
    .await?;
    Ok((batches, report(sync, full_resync, counts, rejections)))
}
