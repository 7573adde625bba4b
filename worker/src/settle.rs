//! Settling a batch: record outcomes, advance the ledger for what the
//! destination acknowledged, dead-letter what it refused, add to the run's
//! totals, and mark the run done when its last batch settles. Runs in one
//! short transaction after the delivery (see `handler`), and only while the
//! worker still holds its claim on the batch (see `claim`), so all of it
//! commits or none, and only once.

use ebb_shared::StateError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::WorkerError;
use ebb_shared::destinations::record::BatchContext;
use ebb_shared::destinations::util::delivery::DeliveryStats;
use ebb_shared::destinations::util::outcome::RecordOutcome;

#[derive(Debug, Default)]
pub struct Settled {
    pub delivered: i64,
    pub rejected: i64,
    pub failed: i64,
    pub superseded: i64,
    /// The run's final state, when this batch was its last.
    pub run_finished: Option<String>,
}

pub async fn settle(
    tx: &mut PgConnection,
    ctx: &BatchContext,
    claim_token: Uuid,
    outcomes: &[(String, RecordOutcome)],
    stats: &DeliveryStats,
) -> Result<Settled, WorkerError> {
    let q = StateError::query;
    // The row lock makes a second settle of the batch wait, then find the
    // batch settled and the claim gone.
    let ours: Option<bool> = sqlx::query_scalar(
        "SELECT claim_token IS NOT DISTINCT FROM $3 AND state = 'pending' FROM ebb_batches \
         WHERE run_id = $1 AND batch_no = $2 FOR UPDATE",
    )
    .bind(ctx.run_id)
    .bind(ctx.batch_no)
    .bind(claim_token)
    .fetch_optional(&mut *tx)
    .await
    .map_err(q("checking the claim on a batch"))?;
    if ours != Some(true) {
        return Err(WorkerError::ClaimLost {
            run_id: ctx.run_id,
            batch_no: ctx.batch_no,
        });
    }
    // One statement per outcome (usually one), each an index lookup by
    // `record_key = ANY(…)`. A join on UNNEST looked the same but, once
    // Postgres switched the prepared statement to a generic plan, scanned
    // the whole run: 10× slower settles mid-run.
    let mut by_outcome: Vec<(&str, Vec<&str>)> = Vec::new();
    for (key, outcome) in outcomes {
        let label = outcome.label();
        match by_outcome.iter_mut().find(|(l, _)| *l == label) {
            Some((_, keys)) => keys.push(key.as_str()),
            None => by_outcome.push((label, vec![key.as_str()])),
        }
    }
    for (label, keys) in &by_outcome {
        sqlx::query(
            "UPDATE ebb_run_records SET outcome = $3 \
             WHERE run_id = $1 AND batch_no = $2 AND record_key = ANY($4) AND outcome IS NULL",
        )
        .bind(ctx.run_id)
        .bind(ctx.batch_no)
        .bind(label)
        .bind(keys)
        .execute(&mut *tx)
        .await
        .map_err(q("recording record outcomes"))?;
    }

    // The ledger only moves forward: an older snapshot never overwrites a newer one.
    sqlx::query(
        "INSERT INTO ebb_ledger (sync_name, record_key, content_hash, snapshot_run_id, delivered_run_id) \
         SELECT $3, rr.record_key, rr.content_hash, rr.snapshot_run_id, $1 FROM ebb_run_records rr \
         WHERE rr.run_id = $1 AND rr.batch_no = $2 AND rr.outcome = 'delivered' AND rr.op = 'upsert' \
         ON CONFLICT (sync_name, record_key) DO UPDATE SET content_hash = EXCLUDED.content_hash, \
             snapshot_run_id = EXCLUDED.snapshot_run_id, delivered_run_id = EXCLUDED.delivered_run_id, delivered_at = now() \
         WHERE ebb_ledger.snapshot_run_id <= EXCLUDED.snapshot_run_id",
    )
    .bind(ctx.run_id)
    .bind(ctx.batch_no)
    .bind(&ctx.sync)
    .execute(&mut *tx)
    .await
    .map_err(q("advancing the ledger"))?;
    let (id_keys, ids): (Vec<&str>, Vec<&str>) = outcomes
        .iter()
        .filter_map(|(key, outcome)| match outcome {
            RecordOutcome::Delivered {
                destination_id: Some(id),
            } => Some((key.as_str(), id.as_str())),
            _ => None,
        })
        .unzip();
    if !id_keys.is_empty() {
        sqlx::query(
            "UPDATE ebb_ledger l SET destination_id = x.id \
             FROM UNNEST($2::text[], $3::text[]) AS x(record_key, id) \
             WHERE l.sync_name = $1 AND l.record_key = x.record_key",
        )
        .bind(&ctx.sync)
        .bind(&id_keys)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(q("recording destination ids"))?;
    }
    // A create intent is answered once its record was applied (its id is in
    // the ledger now) or refused (nothing was created). A failed record keeps
    // its intent: its create may have happened.
    let answered: Vec<&str> = outcomes
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                RecordOutcome::Delivered { .. } | RecordOutcome::Rejected(_)
            )
        })
        .map(|(key, _)| key.as_str())
        .collect();
    sqlx::query("DELETE FROM ebb_intents WHERE sync_name = $1 AND record_key = ANY($2)")
        .bind(&ctx.sync)
        .bind(&answered)
        .execute(&mut *tx)
        .await
        .map_err(q("clearing answered create intents"))?;
    sqlx::query(
        "DELETE FROM ebb_ledger l USING ebb_run_records rr \
         WHERE rr.run_id = $1 AND rr.batch_no = $2 AND rr.outcome = 'delivered' AND rr.op = 'delete' \
           AND l.sync_name = $3 AND l.record_key = rr.record_key AND l.snapshot_run_id <= rr.snapshot_run_id",
    )
    .bind(ctx.run_id)
    .bind(ctx.batch_no)
    .bind(&ctx.sync)
    .execute(&mut *tx)
    .await
    .map_err(q("removing deleted records from the ledger"))?;

    // A delivered (or superseded) version closes open DLQ entries of the same
    // record that are not newer than it.
    sqlx::query(
        "UPDATE ebb_dlq d SET \
             status = CASE rr.outcome WHEN 'delivered' THEN 'resolved' ELSE 'superseded' END, \
             resolved_at = now(), \
             resolution = CASE rr.outcome WHEN 'delivered' THEN 'delivered by run ' || $1 \
                          ELSE 'not sent by run ' || $1 || ': a newer version was already delivered' END \
         FROM ebb_run_records rr \
         WHERE rr.run_id = $1 AND rr.batch_no = $2 AND rr.outcome IN ('delivered', 'superseded') \
           AND d.sync_name = $3 AND d.record_key = rr.record_key AND d.status = 'open' \
           AND d.stage = 'destination' AND d.snapshot_run_id <= rr.snapshot_run_id",
    )
    .bind(ctx.run_id)
    .bind(ctx.batch_no)
    .bind(&ctx.sync)
    .execute(&mut *tx)
    .await
    .map_err(q("resolving DLQ entries"))?;

    let mut dead_keys = Vec::new();
    let mut dead_kinds = Vec::new();
    let mut dead_reasons = Vec::new();
    for (key, outcome) in outcomes {
        if let Some(reason) = outcome.reason() {
            dead_keys.push(key.as_str());
            dead_kinds.push(if matches!(outcome, RecordOutcome::Failed(_)) {
                "failed"
            } else {
                "rejected"
            });
            dead_reasons.push(reason);
        }
    }
    if !dead_keys.is_empty() {
        sqlx::query(
            "INSERT INTO ebb_dlq (sync_name, destination, stage, kind, record_key, op, content_hash, \
                                  snapshot_run_id, first_run_id, last_run_id, payload, reason) \
             SELECT $3, $4, 'destination', x.kind, rr.record_key, rr.op, rr.content_hash, rr.snapshot_run_id, $1, $1, rr.payload, x.reason \
             FROM UNNEST($5::text[], $6::text[], $7::text[]) AS x(record_key, kind, reason) \
             JOIN ebb_run_records rr ON rr.run_id = $1 AND rr.batch_no = $2 AND rr.record_key = x.record_key \
             ON CONFLICT (sync_name, record_key) WHERE status = 'open' AND stage = 'destination' DO UPDATE SET \
                 kind = EXCLUDED.kind, reason = EXCLUDED.reason, attempts = ebb_dlq.attempts + 1, \
                 last_run_id = EXCLUDED.last_run_id, last_failed_at = now(), op = EXCLUDED.op, \
                 payload = EXCLUDED.payload, content_hash = EXCLUDED.content_hash, snapshot_run_id = EXCLUDED.snapshot_run_id",
        )
        .bind(ctx.run_id)
        .bind(ctx.batch_no)
        .bind(&ctx.sync)
        .bind(&ctx.destination)
        .bind(&dead_keys)
        .bind(&dead_kinds)
        .bind(&dead_reasons)
        .execute(&mut *tx)
        .await
        .map_err(q("dead-lettering records"))?;
    }

    let mut settled = Settled::default();
    for (_, outcome) in outcomes {
        match outcome {
            RecordOutcome::Delivered { .. } => settled.delivered += 1,
            RecordOutcome::Rejected(_) => settled.rejected += 1,
            RecordOutcome::Failed(_) => settled.failed += 1,
            RecordOutcome::Superseded => settled.superseded += 1,
        }
    }
    sqlx::query(
        "UPDATE ebb_batches SET state = 'settled', settled_at = clock_timestamp(), \
             claim_token = NULL, lease_expires_at = NULL WHERE run_id = $1 AND batch_no = $2",
    )
    .bind(ctx.run_id)
    .bind(ctx.batch_no)
    .execute(&mut *tx)
    .await
    .map_err(q("settling a batch"))?;
    let (batches_settled, batches_total): (i32, i32) = sqlx::query_as(
        "UPDATE ebb_runs SET batches_settled = batches_settled + 1, delivered = delivered + $2, \
             rejected = rejected + $3, failed = failed + $4, superseded = superseded + $5, retries = retries + $6, \
             throttled = throttled + $7, limiter_wait_ms = limiter_wait_ms + $8, \
             lookups_before_create = lookups_before_create + $9, progress_at = clock_timestamp() \
         WHERE id = $1 RETURNING batches_settled, batches_total",
    )
    .bind(ctx.run_id)
    .bind(settled.delivered)
    .bind(settled.rejected)
    .bind(settled.failed)
    .bind(settled.superseded)
    .bind(i64::from(stats.retries))
    .bind(i64::from(stats.throttled))
    .bind(stats.limiter_wait.as_millis() as i64)
    .bind(i64::from(stats.lookups_before_create))
    .fetch_one(&mut *tx)
    .await
    .map_err(q("adding to the run's totals"))?;
    if batches_settled >= batches_total {
        let state: String = sqlx::query_scalar(
            "UPDATE ebb_runs SET finished_at = clock_timestamp(), \
                 state = CASE WHEN failed > 0 THEN 'failed' ELSE 'succeeded' END, \
                 error = CASE WHEN failed > 0 THEN failed || ' record(s) could not be delivered (see `ebb dlq list`)' END \
             WHERE id = $1 RETURNING state",
        )
        .bind(ctx.run_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(q("finishing the run"))?;
        settled.run_finished = Some(state);
    }
    Ok(settled)
}
