//! Planning a DLQ replay: the open entries of one sync become the records of a
//! `replay` run. An entry whose record has since been delivered in a newer
//! version is closed as superseded instead of being re-sent, so a replay never
//! overwrites newer data.

use ebb_shared::StateError;
use ebb_shared::config::{Config, SyncConfig};
use ebb_shared::state::runs::{self, NewRun};
use ebb_shared::state::{batches, dlq, records};
use sqlx::PgPool;

use super::{PlanCounts, PlanReport, PlannedRun};
use crate::error::PlannerError;

/// Replays the open destination-stage DLQ entries of `sync` (only `ids`,
/// when given), as asked by `by` (`cli`, `api:<token>`, `ui:<token>`): the
/// run's trigger is `dlq-replay:<by>`.
pub async fn plan_replay(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    ids: Option<&[i64]>,
    by: &str,
) -> Result<PlannedRun, PlannerError> {
    let trigger = format!("dlq-replay:{by}");
    let batch_size = super::batch_size(config, sync)?;
    let run_id = runs::start(
        pool,
        NewRun {
            sync: &sync.name,
            destination: &sync.destination,
            kind: "replay",
            trigger: &trigger,
            mode: sync.mode.as_str(),
            full_resync: false,
        },
    )
    .await?;
    match plan(pool, sync, ids, run_id, batch_size).await {
        Ok(planned) => Ok(planned),
        Err(e) => {
            let _ = runs::fail(pool, run_id, &e.to_string()).await;
            Err(e)
        }
    }
}

async fn plan(
    pool: &PgPool,
    sync: &SyncConfig,
    ids: Option<&[i64]>,
    run_id: i64,
    batch_size: usize,
) -> Result<PlannedRun, PlannerError> {
    let q = StateError::query;
    let mut tx = pool.begin().await.map_err(q("starting the replay plan"))?;
    let superseded = dlq::supersede_outdated(&mut tx, &sync.name, ids).await?;
    let to_send = records::replay_from_dlq(&mut tx, run_id, &sync.name, ids, batch_size).await?;
    let batches = batches::create_for_run(&mut tx, run_id).await?;
    let counts = PlanCounts {
        to_send,
        ..PlanCounts::default()
    };
    let totals = runs::PlannedTotals {
        rows_read: None,
        ..counts.totals(batches.len())
    };
    if !runs::mark_planned(&mut tx, run_id, &totals, None).await? {
        return Err(PlannerError::CancelledWhilePlanning(run_id));
    }
    runs::set_superseded(&mut tx, run_id, superseded).await?;
    tx.commit().await.map_err(q("committing the replay plan"))?;
    let (span, traceparent) = super::run_span(pool, sync, run_id).await;
    Ok(PlannedRun {
        run_id,
        batches,
        span,
        traceparent,
        report: PlanReport {
            sync: sync.name.clone(),
            destination: sync.destination.clone(),
            mode: sync.mode.as_str().to_owned(),
            full_resync: false,
            counts,
            rejections: Vec::new(),
            held: None,
            budget: None,
            flapping_keys: Vec::new(),
        },
    })
}
