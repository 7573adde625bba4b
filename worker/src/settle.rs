//! Settling a batch: record outcomes, advance the ledger for what the
//! destination acknowledged, dead-letter what it refused, add to the run's
//! totals, and mark the run done when its last batch settles. Runs in one
//! short transaction after the delivery (see `handler`), and only while the
//! worker still holds its claim on the batch (see `claim`), so all of it
//! commits or none, and only once. The statements are in
//! `ebb_shared::state`, one module per table.

use ebb_shared::destinations::record::BatchContext;
use ebb_shared::destinations::util::delivery::DeliveryStats;
use ebb_shared::destinations::util::outcome::RecordOutcome;
use ebb_shared::state::dlq::{self, DeadRecord};
use ebb_shared::state::runs::{self, BatchTotals, RunState};
use ebb_shared::state::{batches, intents, ledger, records};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::WorkerError;

#[derive(Debug, Default)]
pub struct Settled {
    pub delivered: i64,
    pub rejected: i64,
    pub failed: i64,
    pub superseded: i64,
    /// The run's final state, when this batch was its last.
    pub run_finished: Option<RunState>,
}

/// What a batch's delivery left to settle.
pub struct Delivery<'a> {
    /// Each record's outcome, by key.
    pub outcomes: &'a [(String, RecordOutcome)],
    /// The field digest of each upsert, by key (destinations that take
    /// partial updates).
    pub digests: &'a [(&'a str, &'a [u8])],
    pub stats: &'a DeliveryStats,
    /// Some delete was sent: the ledger may have keys to remove.
    pub deletes_sent: bool,
}

pub async fn settle(
    tx: &mut PgConnection,
    ctx: &BatchContext,
    claim_token: Uuid,
    delivery: &Delivery<'_>,
) -> Result<Settled, WorkerError> {
    let (run_id, batch_no, sync) = (ctx.run_id, ctx.batch_no, ctx.sync.as_str());
    let outcomes = delivery.outcomes;
    if !batches::lock_claimed(tx, run_id, batch_no, claim_token).await? {
        return Err(WorkerError::ClaimLost { run_id, batch_no });
    }
    let labelled: Vec<(&str, records::Outcome)> = outcomes
        .iter()
        .map(|(key, outcome)| (key.as_str(), outcome.outcome()))
        .collect();
    records::set_outcomes(tx, run_id, batch_no, &labelled).await?;
    ledger::advance(
        tx,
        run_id,
        batch_no,
        sync,
        delivery.digests,
        ctx.new_keys_only,
    )
    .await?;
    ledger::set_destination_ids(tx, sync, &destination_ids(outcomes)).await?;
    intents::clear_answered(tx, sync, &answered(outcomes)).await?;
    // Most batches send no delete; the statement's join would still walk
    // the batch's records (or, planned on a stale row estimate, the ledger).
    if delivery.deletes_sent {
        ledger::remove_deleted(tx, run_id, batch_no, sync).await?;
    }
    dlq::resolve_settled(tx, run_id, batch_no, sync).await?;
    dlq::dead_letter(
        tx,
        run_id,
        batch_no,
        sync,
        &ctx.destination,
        &dead(outcomes),
    )
    .await?;
    batches::mark_settled(tx, run_id, batch_no).await?;

    let settled = count(outcomes);
    let totals = BatchTotals {
        delivered: settled.delivered,
        rejected: settled.rejected,
        failed: settled.failed,
        superseded: settled.superseded,
        retries: i64::from(delivery.stats.retries),
        throttled: i64::from(delivery.stats.throttled),
        limiter_wait_ms: delivery.stats.limiter_wait.as_millis() as i64,
        lookups_before_create: i64::from(delivery.stats.lookups_before_create),
    };
    let run_finished = if runs::add_settled_batch(tx, run_id, &totals).await? {
        runs::finish(tx, run_id).await?
    } else {
        None
    };
    Ok(Settled {
        run_finished,
        ..settled
    })
}

/// The destination's ids of the records it applied.
fn destination_ids(outcomes: &[(String, RecordOutcome)]) -> Vec<(&str, &str)> {
    outcomes
        .iter()
        .filter_map(|(key, outcome)| match outcome {
            RecordOutcome::Delivered {
                destination_id: Some(id),
            } => Some((key.as_str(), id.as_str())),
            _ => None,
        })
        .collect()
}

/// Records whose create intent is answered: applied (their id is in the
/// ledger now) or refused (nothing was created). A failed record keeps its
/// intent: its create may have happened.
fn answered(outcomes: &[(String, RecordOutcome)]) -> Vec<&str> {
    outcomes
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                RecordOutcome::Delivered { .. } | RecordOutcome::Rejected(_)
            )
        })
        .map(|(key, _)| key.as_str())
        .collect()
}

/// Records for the DLQ: rejected by the destination, or failed.
fn dead(outcomes: &[(String, RecordOutcome)]) -> Vec<DeadRecord<'_>> {
    outcomes
        .iter()
        .filter_map(|(key, outcome)| {
            let kind = match outcome {
                RecordOutcome::Failed(_) => "failed",
                _ => "rejected",
            };
            outcome.reason().map(|reason| DeadRecord {
                key: key.as_str(),
                kind,
                reason,
            })
        })
        .collect()
}

fn count(outcomes: &[(String, RecordOutcome)]) -> Settled {
    let mut settled = Settled::default();
    for (_, outcome) in outcomes {
        match outcome {
            RecordOutcome::Delivered { .. } => settled.delivered += 1,
            RecordOutcome::Rejected(_) => settled.rejected += 1,
            RecordOutcome::Failed(_) => settled.failed += 1,
            RecordOutcome::Superseded => settled.superseded += 1,
        }
    }
    settled
}
