//! Waiting for a run to finish: a progress bar on a terminal, plain lines
//! otherwise, and a watchdog that re-enqueues work Redis lost.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ebb_shared::state::runs::{self, Run};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::error::PlannerError;
use crate::watchdog::Watchdog;

const POLL: Duration = Duration::from_millis(250);
const PLAIN_LINE_EVERY: Duration = Duration::from_secs(5);
const NO_WORKER_HINT_AFTER: Duration = Duration::from_secs(15);
/// How long `ebb run` waits out an unreachable state database before giving
/// up (the run itself goes on: workers and `ebb serve` carry it).
const STATE_OUTAGE_LIMIT: Duration = Duration::from_secs(600);

pub struct Waiter<'a> {
    pub pool: &'a PgPool,
    pub watchdog: Watchdog,
    /// No progress output at all (for `--json`).
    pub quiet: bool,
}

impl Waiter<'_> {
    /// Returns the finished run.
    pub async fn wait(&mut self, run_id: i64) -> Result<Run, PlannerError> {
        let run = runs::get(self.pool, run_id).await?;
        if run.is_finished() {
            // A run with nothing to send ended at planning: no listener needed.
            return Ok(run);
        }
        // Read again once listening: a run that ended between the first
        // read and the LISTEN is seen by this read.
        let mut ended = listen_for_ends(self.pool).await;
        let mut run = runs::get(self.pool, run_id).await?;
        let bar = (!self.quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(run.to_send.max(0) as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(format!("run #{run_id} {}", run.sync_name));
            bar
        });
        let started = Instant::now();
        let mut last_line = Instant::now();
        let mut hinted = false;
        let mut outage: Option<Instant> = None;
        while !run.is_finished() {
            next_look(&mut ended, run_id).await;
            // The state database going away for a while (failover, restart)
            // is waited out; workers wait for it too.
            run = match runs::get(self.pool, run_id).await {
                Ok(run) => {
                    if outage.take().is_some() {
                        tracing::warn!(run_id, "state database reachable again");
                    }
                    run
                }
                Err(e) => {
                    let since = *outage.get_or_insert_with(|| {
                        tracing::warn!(run_id, error = %e, "state database unreachable; waiting for it");
                        Instant::now()
                    });
                    if since.elapsed() > STATE_OUTAGE_LIMIT {
                        return Err(e.into());
                    }
                    continue;
                }
            };
            let done = run.settled_records().max(0) as u64;
            match &bar {
                Some(bar) => bar.set_position(done),
                None if !self.quiet && last_line.elapsed() >= PLAIN_LINE_EVERY => {
                    eprintln!(
                        "run #{run_id} {}: {done}/{} records settled ({} delivered, {} rejected, {} failed), {}/{} batches",
                        run.sync_name,
                        run.to_send,
                        run.delivered,
                        run.rejected,
                        run.failed,
                        run.batches_settled,
                        run.batches_total
                    );
                    last_line = Instant::now();
                }
                None => {}
            }
            if run.is_finished() {
                break;
            }
            // Redis holds nothing Postgres cannot rebuild: put back what it lost.
            match self
                .watchdog
                .check(self.pool, std::slice::from_ref(&run))
                .await
            {
                Ok(check) => {
                    if check.live_workers == 0
                        && !hinted
                        && started.elapsed() > NO_WORKER_HINT_AFTER
                        && !self.quiet
                    {
                        let msg = "no ebb-worker is alive on this queue; start one with `ebb-worker --config ...`";
                        match &bar {
                            Some(bar) => bar.println(msg),
                            None => eprintln!("{msg}"),
                        }
                        hinted = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot check the queue; will retry"),
            }
        }
        if let Some(bar) = bar {
            bar.set_position(run.settled_records().max(0) as u64);
            bar.finish_and_clear();
        }
        Ok(run)
    }
}

/// A listener for runs' ends (`runs::ENDED_CHANNEL`), or `None` when the
/// state database refuses it. The waiter looks at the run every poll
/// interval regardless, so a listener that hears nothing (behind a pooler
/// in transaction mode) only costs its connection.
async fn listen_for_ends(pool: &PgPool) -> Option<PgListener> {
    let listening = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(runs::ENDED_CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match listening.await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::debug!(error = %e, "cannot listen for runs' ends; polling only");
            None
        }
    }
}

/// Waits for the next look at the run: one poll interval, or less when the
/// run's end is announced. A listener that fails is dropped for polling.
async fn next_look(ended: &mut Option<PgListener>, run_id: i64) {
    let Some(listener) = ended.as_mut() else {
        tokio::time::sleep(POLL).await;
        return;
    };
    let run_id = run_id.to_string();
    let poll = tokio::time::sleep(POLL);
    tokio::pin!(poll);
    loop {
        tokio::select! {
            () = &mut poll => return,
            notification = listener.recv() => match notification {
                Ok(n) if n.payload() == run_id => return,
                // Another run ended.
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "lost the listener for runs' ends; polling only");
                    break;
                }
            },
        }
    }
    *ended = None;
    poll.await;
}
