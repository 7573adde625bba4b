//! A worker's claim on a batch: who delivers it, for how long.
//!
//! A claim is a row update in `ebb_batches` (token, holder, lease expiry),
//! committed on its own, then renewed in the background every third of the
//! lease while the batch is delivered outside any transaction. Settling
//! checks, in its own short transaction, that the claim is still this
//! worker's. So:
//! - a second copy of the task (normal with apalis-redis) finds the batch
//!   claimed and waits until it is settled, or until the claim runs out and
//!   it can take over: it never drops the batch while its holder may still
//!   die with it;
//! - a worker that crashes stops renewing; its claim runs out after one
//!   lease and the batch's next task takes over;
//! - a worker that cannot renew (cut off from Postgres) stops delivering
//!   before its lease can run out, so two workers never deliver one batch
//!   at the same time.

use std::time::{Duration, Instant};

use ebb_shared::StateError;
use ebb_shared::queue::WriteBatchTask;
use ebb_shared::state::BatchState;
use ebb_shared::state::batches;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

/// How one attempt to claim a batch ended.
pub enum ClaimAttempt {
    /// This worker holds the batch now.
    Held(Claim),
    /// Nothing to deliver: the batch is settled, its run is not running, or
    /// the batch does not exist.
    Nothing(&'static str),
    /// Another worker holds a live claim; try again after `retry_in`.
    HeldElsewhere { holder: String, retry_in: Duration },
}

/// The worker that held a batch before this one and let its claim run out.
#[derive(Debug, Clone)]
pub struct TakeOver {
    pub from: String,
    /// How long ago its claim ran out.
    pub expired_for: Duration,
}

pub struct Claim {
    pub run_id: i64,
    pub batch_no: i32,
    pub token: Uuid,
    /// Set when the previous claim ran out instead of being released.
    pub took_over: Option<TakeOver>,
    lost: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

/// Claims a batch for `lease`. The delivery is counted when it starts (see
/// [`Claim::count_delivery`]), not here: a batch that waits, claimed, for
/// a suspect neighbour to run alone is not charged for that neighbour's
/// crash.
pub async fn claim(
    pool: &PgPool,
    task: &WriteBatchTask,
    holder: &str,
    lease: Duration,
) -> Result<ClaimAttempt, StateError> {
    let token = Uuid::now_v7();
    let claimed = batches::claim(pool, task.run_id, task.batch_no, token, holder, lease).await?;
    if let Some(claimed) = claimed {
        let took_over = claimed.took_over.then(|| TakeOver {
            from: claimed
                .previous_holder
                .unwrap_or_else(|| "an unknown worker".into()),
            expired_for: Duration::from_secs_f64(claimed.expired_for_secs.unwrap_or(0.0).max(0.0)),
        });
        let (lost_tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep(
            pool.clone(),
            task.run_id,
            task.batch_no,
            token,
            lease,
            lost_tx,
        ));
        return Ok(ClaimAttempt::Held(Claim {
            run_id: task.run_id,
            batch_no: task.batch_no,
            token,
            took_over,
            lost,
            keeper,
        }));
    }
    let standing = batches::standing(pool, task.run_id, task.batch_no).await?;
    Ok(match standing {
        None => ClaimAttempt::Nothing("no such batch"),
        Some(s) if s.batch == BatchState::Settled => ClaimAttempt::Nothing("already settled"),
        Some(s) if !s.run_running => ClaimAttempt::Nothing("its run is not running"),
        Some(s) => ClaimAttempt::HeldElsewhere {
            holder: s.claimed_by.unwrap_or_default(),
            // Look again a little after the claim would run out, and at
            // least every third of a lease (it may be settled sooner).
            retry_in: (s.live_for + Duration::from_millis(50))
                .min(lease / 3)
                .max(Duration::from_millis(50)),
        },
    })
}

/// Renews a claim every third of its lease until dropped; reports it lost
/// when another worker holds the batch, or when renewals kept failing for
/// long enough that the lease may run out before the next one.
async fn keep(
    pool: PgPool,
    run_id: i64,
    batch_no: i32,
    token: Uuid,
    lease: Duration,
    lost: watch::Sender<bool>,
) {
    let every = lease / 3;
    // The lease in Postgres runs from Postgres's `now()` at the renewal,
    // which is before this worker saw the answer: stop with a margin.
    let give_up_after = lease.mul_f64(0.8);
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let renewal = batches::renew(&pool, run_id, batch_no, token, lease);
        match tokio::time::timeout(every, renewal).await {
            Ok(Ok(true)) => renewed = Instant::now(),
            Ok(Ok(false)) => {
                tracing::warn!(
                    run_id,
                    batch = batch_no,
                    "another worker holds this batch now; stopping its delivery here"
                );
                let _ = lost.send(true);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(run_id, batch = batch_no, error = %e, "cannot renew the claim on a batch")
            }
            Err(_) => tracing::warn!(
                run_id,
                batch = batch_no,
                "renewing the claim on a batch timed out"
            ),
        }
        if renewed.elapsed() >= give_up_after {
            tracing::warn!(
                run_id,
                batch = batch_no,
                "the claim on this batch could not be renewed in time; stopping its delivery so that no other worker delivers it at the same time"
            );
            let _ = lost.send(true);
            return;
        }
    }
}

impl Claim {
    /// Counts a delivery of the batch as it starts, and returns the
    /// deliveries so far, this one included (`None`: the claim was lost
    /// meanwhile). Committed on its own, outside any later transaction: a
    /// batch that crashes its worker must still be counted, or it would
    /// loop forever (see `[worker].max_deliveries`).
    pub async fn count_delivery(&self, pool: &PgPool) -> Result<Option<i32>, StateError> {
        batches::count_delivery(pool, self.run_id, self.batch_no, self.token).await
    }

    /// Resolves when the claim is lost; pending for as long as it is held.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        if lost.wait_for(|lost| *lost).await.is_err() {
            // The keeper ended without reporting a loss: never resolve.
            std::future::pending::<()>().await;
        }
    }

    /// Gives the batch back without settling it (an error before the
    /// settle), so its next task can claim it at once.
    pub async fn release(self, pool: &PgPool) {
        self.keeper.abort();
        let released = batches::release(pool, self.run_id, self.batch_no, self.token).await;
        if let Err(e) = released {
            tracing::warn!(run_id = self.run_id, batch = self.batch_no, error = %e, "cannot release the claim on a batch; it runs out by itself");
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Dropped without settling or releasing (a panic, a cancelled
        // task): the lease runs out and another worker takes over.
        self.keeper.abort();
    }
}
