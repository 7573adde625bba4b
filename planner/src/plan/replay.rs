//! Planning a DLQ replay: the open entries of one sync become the records of a
//! `replay` run. An entry whose record has since been delivered in a newer
//! version is closed as superseded instead of being re-sent, so a replay never
//! overwrites newer data.

use ebb_shared::StateError;
use ebb_shared::config::{Config, SyncConfig};
use ebb_shared::state::runs::{self, NewRun};
use sqlx::PgPool;

use super::{PlanCounts, PlanReport, PlannedRun, mark_planned};
use crate::error::PlannerError;

/// Replays the open destination-stage DLQ entries of `sync` (only `ids`, when given).
pub async fn plan_replay(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    ids: Option<&[i64]>,
) -> Result<PlannedRun, PlannerError> {
    let batch_size = super::batch_size(config, sync)?;
    let run_id = runs::start(
        pool,
        NewRun {
            sync: &sync.name,
            destination: &sync.destination,
            kind: "replay",
            trigger: "dlq-replay",
            mode: sync.mode.as_str(),
            full_resync: false,
        },
    )
    .await?;
    match plan(pool, sync, ids, run_id, batch_size).await {
        Ok(planned) => Ok(planned),
        Err(e) => {
            let _ = runs::fail(pool, run_id, &e.to_string()).await;
            Err(e.into())
        }
    }
}

async fn plan(
    pool: &PgPool,
    sync: &SyncConfig,
    ids: Option<&[i64]>,
    run_id: i64,
    batch_size: usize,
) -> Result<PlannedRun, StateError> {
    let q = StateError::query;
    let mut tx = pool.begin().await.map_err(q("starting the replay plan"))?;
    let superseded = sqlx::query(
        "UPDATE ebb_dlq d SET status = 'superseded', resolved_at = now(), \
             resolution = 'not replayed: run ' || l.delivered_run_id || ' delivered a newer version' \
         FROM ebb_ledger l \
         WHERE d.status = 'open' AND d.stage = 'destination' AND d.sync_name = $1 \
           AND ($2::bigint[] IS NULL OR d.id = ANY($2)) \
           AND l.sync_name = d.sync_name AND l.record_key = d.record_key \
           AND l.snapshot_run_id > d.snapshot_run_id",
    )
    .bind(&sync.name)
    .bind(ids)
    .execute(&mut *tx)
    .await
    .map_err(q("closing superseded DLQ entries"))?
    .rows_affected() as i64;
    let to_send = sqlx::query(
        "INSERT INTO ebb_run_records (run_id, batch_no, record_key, op, content_hash, snapshot_run_id, payload) \
         SELECT $3, ((row_number() OVER (ORDER BY d.id)) - 1) / $4, d.record_key, d.op, d.content_hash, d.snapshot_run_id, d.payload \
         FROM ebb_dlq d \
         WHERE d.status = 'open' AND d.stage = 'destination' AND d.sync_name = $1 \
           AND ($2::bigint[] IS NULL OR d.id = ANY($2)) AND d.record_key IS NOT NULL",
    )
    .bind(&sync.name)
    .bind(ids)
    .bind(run_id)
    .bind(batch_size as i64)
    .execute(&mut *tx)
    .await
    .map_err(q("writing the replay's records"))?
    .rows_affected() as i64;
    let batches = sqlx::query_scalar::<_, i32>(
        "INSERT INTO ebb_batches (run_id, batch_no, record_count) \
         SELECT $1, batch_no, count(*) FROM ebb_run_records WHERE run_id = $1 GROUP BY batch_no RETURNING batch_no",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(q("writing the replay's batches"))?;
    let counts = PlanCounts {
        to_send,
        ..PlanCounts::default()
    };
    mark_planned(&mut tx, run_id, &counts, batches.len()).await?;
    sqlx::query("UPDATE ebb_runs SET superseded = $2 WHERE id = $1")
        .bind(run_id)
        .bind(superseded)
        .execute(&mut *tx)
        .await
        .map_err(q("recording superseded entries"))?;
    tx.commit().await.map_err(q("committing the replay plan"))?;
    Ok(PlannedRun {
        run_id,
        batches,
        report: PlanReport {
            sync: sync.name.clone(),
            destination: sync.destination.clone(),
            mode: sync.mode.as_str().to_owned(),
            full_resync: false,
            counts,
            rejections: Vec::new(),
        },
    })
}
