//! Delivering a batch: send, retry transient failures, and split a rejected
//! chunk in halves until the records at fault are found, so one bad record
//! does not take its 99 neighbours to the DLQ.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::adaptive::Response;
use super::limiter::Limiter;
use super::outcome::{Attempt, RecordAnswer, RecordOutcome, truncate_message};
use super::retry::RetryPolicy;
use crate::batch::{BatchContext, OutboundRecord};
use crate::destinations::Destination;

const MAX_REASON_CHARS: usize = 2000;

/// Counts of what delivering one batch cost, for logs and the run report.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeliveryStats {
    pub requests: u32,
    pub retries: u32,
    pub splits: u32,
    /// Requests the destination answered with 429.
    pub throttled: u32,
    /// Time spent waiting for the destination's limits (slots, rate, pauses).
    pub limiter_wait: Duration,
    /// Records searched for by match key before a create, because an
    /// earlier create of theirs had an unknown outcome.
    pub lookups_before_create: u32,
}

/// Back-pressure is waited out without spending retries, but not forever.
const MAX_THROTTLED: Duration = Duration::from_secs(15 * 60);

enum ChunkResult {
    Delivered,
    Answered(Vec<RecordAnswer>),
    Rejected(String),
    Failed(String),
    Fatal(String),
}

async fn send_with_retry(
    target: Target<'_>,
    ctx: &BatchContext,
    chunk: &[OutboundRecord],
    policy: RetryPolicy,
    stats: &mut DeliveryStats,
) -> ChunkResult {
    let mut retry = 0;
    let mut throttles = 0;
    let mut throttled_for = Duration::ZERO;
    loop {
        let waiting = Instant::now();
        let slot = target.limiter.local_slot().await;
        let permit = target.limiter.acquire().await;
        stats.limiter_wait += waiting.elapsed();
        stats.requests += 1;
        let attempt = target.destination.send(ctx, chunk).await;
        permit.release().await;
        if let Some(slot) = slot {
            slot.done(match attempt {
                Attempt::Throttled { .. } | Attempt::Transient { .. } => Response::BackPressure,
                _ => Response::Ok,
            });
        }
        match attempt {
            Attempt::Delivered => return ChunkResult::Delivered,
            Attempt::Answered(answers) if answers.len() == chunk.len() => {
                return ChunkResult::Answered(answers);
            }
            Attempt::Answered(answers) => {
                return ChunkResult::Fatal(format!(
                    "internal error: the destination answered for {} of {} records",
                    answers.len(),
                    chunk.len()
                ));
            }
            Attempt::Throttled { retry_after } => {
                throttles += 1;
                stats.throttled += 1;
                let wait = retry_after
                    .unwrap_or_else(|| policy.backoff(throttles, None))
                    .min(Duration::from_secs(300));
                throttled_for += wait;
                if throttled_for > MAX_THROTTLED {
                    return ChunkResult::Failed(format!(
                        "the destination kept answering 429 (throttled) for over {} minutes",
                        MAX_THROTTLED.as_secs() / 60
                    ));
                }
                tracing::info!(
                    sync = %ctx.sync, destination = %ctx.destination, run_id = ctx.run_id, batch = ctx.batch_no,
                    wait_ms = wait.as_millis() as u64,
                    "destination throttled (429); pausing it for every worker"
                );
                // The next acquire waits out the pause, here and in every
                // other worker.
                target.limiter.pause(wait).await;
            }
            Attempt::Rejected(reason) => return ChunkResult::Rejected(reason),
            Attempt::Fatal(reason) => return ChunkResult::Fatal(reason),
            Attempt::Transient {
                message,
                retry_after,
            } => {
                if retry >= policy.max_retries {
                    return ChunkResult::Failed(format!(
                        "retries exhausted after {} attempts; last error: {message}",
                        retry + 1
                    ));
                }
                retry += 1;
                stats.retries += 1;
                let wait = policy.backoff(retry, retry_after);
                tracing::warn!(
                    sync = %ctx.sync, run_id = ctx.run_id, batch = ctx.batch_no, records = chunk.len(),
                    retry, wait_ms = wait.as_millis() as u64, error = %message,
                    "transient destination error; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Where a batch goes: the destination and the limits it shares with every
/// other sync and worker writing to it.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub destination: &'a dyn Destination,
    pub limiter: &'a Limiter,
}

/// Delivers `records` and returns one outcome per record, in order.
///
/// Records go out in chunks of one [`Destination::request_group`] each, so
/// every request is one kind of call (one permit of the limiter, one
/// request to the destination).
pub async fn deliver(
    target: Target<'_>,
    ctx: &BatchContext,
    records: &[OutboundRecord],
    policy: RetryPolicy,
) -> (Vec<RecordOutcome>, DeliveryStats) {
    let groups: Vec<u8> = records
        .iter()
        .map(|r| target.destination.request_group(r))
        .collect();
    if groups.windows(2).all(|w| w[0] == w[1]) {
        return deliver_chunks(target, ctx, records, policy).await;
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| groups[i]);
    let grouped: Vec<OutboundRecord> = order.iter().map(|&i| records[i].clone()).collect();
    let mut stats = DeliveryStats::default();
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
    let mut start = 0;
    while start < grouped.len() {
        let group = groups[order[start]];
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| groups[i] == group)
                .count();
        let (group_outcomes, group_stats) =
            deliver_chunks(target, ctx, &grouped[start..end], policy).await;
        stats.add(&group_stats);
        for (position, outcome) in (start..end).zip(group_outcomes) {
            outcomes[order[position]] = Some(outcome);
        }
        start = end;
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(never_sent))
        .collect();
    (outcomes, stats)
}

fn never_sent() -> RecordOutcome {
    RecordOutcome::Failed("internal error: record was never sent".into())
}

impl DeliveryStats {
    fn add(&mut self, other: &DeliveryStats) {
        self.requests += other.requests;
        self.retries += other.retries;
        self.splits += other.splits;
        self.throttled += other.throttled;
        self.limiter_wait += other.limiter_wait;
        self.lookups_before_create += other.lookups_before_create;
    }
}

/// Delivers records that may share requests: sends them in one chunk,
/// splitting rejected chunks in halves until the records at fault are found.
async fn deliver_chunks(
    target: Target<'_>,
    ctx: &BatchContext,
    records: &[OutboundRecord],
    policy: RetryPolicy,
) -> (Vec<RecordOutcome>, DeliveryStats) {
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
    let mut stats = DeliveryStats::default();
    let mut pending: Vec<Range<usize>> = Vec::new();
    if !records.is_empty() {
        pending.push(0..records.len());
    }
    while let Some(range) = pending.pop() {
        let chunk = &records[range.clone()];
        let result = send_with_retry(target, ctx, chunk, policy, &mut stats).await;
        let set = |outcomes: &mut Vec<Option<RecordOutcome>>,
                   range: Range<usize>,
                   outcome: RecordOutcome| {
            for slot in &mut outcomes[range] {
                *slot = Some(outcome.clone());
            }
        };
        match result {
            ChunkResult::Delivered => set(&mut outcomes, range, RecordOutcome::delivered()),
            ChunkResult::Answered(answers) => {
                for (slot, answer) in outcomes[range].iter_mut().zip(answers) {
                    *slot = Some(match answer {
                        RecordAnswer::Applied {
                            destination_id,
                            looked_up,
                        } => {
                            stats.lookups_before_create += u32::from(looked_up);
                            RecordOutcome::Delivered { destination_id }
                        }
                        RecordAnswer::Rejected(reason) => {
                            RecordOutcome::Rejected(truncate_message(&reason, MAX_REASON_CHARS))
                        }
                    });
                }
            }
            ChunkResult::Rejected(reason) if chunk.len() == 1 => set(
                &mut outcomes,
                range,
                RecordOutcome::Rejected(truncate_message(&reason, MAX_REASON_CHARS)),
            ),
            ChunkResult::Rejected(_) => {
                stats.splits += 1;
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
            ChunkResult::Failed(reason) => set(
                &mut outcomes,
                range,
                RecordOutcome::Failed(truncate_message(&reason, MAX_REASON_CHARS)),
            ),
            ChunkResult::Fatal(reason) => {
                // Nothing in this batch can succeed; do not spend requests on the rest.
                let reason = truncate_message(&reason, MAX_REASON_CHARS);
                set(&mut outcomes, range, RecordOutcome::Failed(reason.clone()));
                for rest in pending.drain(..) {
                    set(&mut outcomes, rest, RecordOutcome::Failed(reason.clone()));
                }
            }
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(never_sent))
        .collect();
    (outcomes, stats)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::future::BoxFuture;

    use super::*;
    use crate::batch::Op;
    use crate::destinations::util::limiter::tests::local_limiter;
    use ebb_shared::config::Limits;

    /// Rejects any request containing a key in `bad`; fails transiently the
    /// first `flaky` requests.
    struct Scripted {
        bad: Vec<&'static str>,
        flaky: Mutex<u32>,
        throttle: Mutex<u32>,
        fatal: bool,
        requests: Mutex<u32>,
    }

    impl Destination for Scripted {
        fn send<'a>(
            &'a self,
            _ctx: &'a BatchContext,
            records: &'a [OutboundRecord],
        ) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                *self.requests.lock().unwrap() += 1;
                if self.fatal {
                    return Attempt::Fatal("401 Unauthorized".into());
                }
                {
                    let mut throttle = self.throttle.lock().unwrap();
                    if *throttle > 0 {
                        *throttle -= 1;
                        return Attempt::Throttled {
                            retry_after: Some(Duration::from_millis(50)),
                        };
                    }
                }
                {
                    let mut flaky = self.flaky.lock().unwrap();
                    if *flaky > 0 {
                        *flaky -= 1;
                        return Attempt::Transient {
                            message: "503".into(),
                            retry_after: None,
                        };
                    }
                }
                match records.iter().find(|r| self.bad.contains(&r.key.as_str())) {
                    Some(r) => Attempt::Rejected(format!("bad email for {}", r.key)),
                    None => Attempt::Delivered,
                }
            })
        }
    }

    fn records(n: usize) -> Vec<OutboundRecord> {
        (0..n)
            .map(|i| OutboundRecord {
                snapshot_run_id: 1,
                key: i.to_string(),
                op: Op::Upsert,
                fields: None,
                version: None,
                destination_id: None,
            })
            .collect()
    }

    fn ctx() -> BatchContext {
        BatchContext {
            sync: "s".into(),
            destination: "d".into(),
            run_id: 1,
            batch_no: 0,
        }
    }

    fn fast(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    fn scripted(bad: Vec<&'static str>, flaky: u32, fatal: bool) -> Scripted {
        Scripted {
            bad,
            flaky: Mutex::new(flaky),
            throttle: Mutex::new(0),
            fatal,
            requests: Mutex::new(0),
        }
    }

    fn unlimited() -> Limits {
        Limits {
            max_concurrency: 100,
            rate_limit: None,
            adaptive_concurrency: true,
        }
    }

    async fn deliver_to(
        dest: &Scripted,
        records: &[OutboundRecord],
        policy: RetryPolicy,
    ) -> (Vec<RecordOutcome>, DeliveryStats) {
        let limiter = local_limiter(unlimited()).await;
        let target = Target {
            destination: dest,
            limiter: &limiter,
        };
        deliver(target, &ctx(), records, policy).await
    }

    #[tokio::test]
    async fn throttling_waits_without_spending_retries() {
        let dest = scripted(vec![], 0, false);
        *dest.throttle.lock().unwrap() = 3;
        let (outcomes, stats) = deliver_to(&dest, &records(5), fast(0)).await;
        assert!(outcomes.iter().all(|o| o == &RecordOutcome::delivered()));
        assert_eq!(stats.throttled, 3);
        assert_eq!(stats.retries, 0);
        assert!(
            stats.limiter_wait >= Duration::from_millis(150),
            "three 50 ms pauses were waited out: {stats:?}"
        );
    }

    #[tokio::test]
    async fn one_bad_record_rejects_only_itself() {
        let dest = scripted(vec!["37"], 0, false);
        let (outcomes, stats) = deliver_to(&dest, &records(100), fast(0)).await;
        for (i, o) in outcomes.iter().enumerate() {
            if i == 37 {
                assert_eq!(o, &RecordOutcome::Rejected("bad email for 37".into()));
            } else {
                assert_eq!(o, &RecordOutcome::delivered(), "record {i}");
            }
        }
        assert!(
            stats.requests <= 2 * 7 + 1,
            "bisection should be logarithmic: {stats:?}"
        );
    }

    #[tokio::test]
    async fn transient_errors_are_retried_then_fail_with_reason() {
        let dest = scripted(vec![], 2, false);
        let (outcomes, stats) = deliver_to(&dest, &records(3), fast(5)).await;
        assert!(outcomes.iter().all(|o| o == &RecordOutcome::delivered()));
        assert_eq!(stats.retries, 2);

        let dest = scripted(vec![], 10, false);
        let (outcomes, _) = deliver_to(&dest, &records(3), fast(2)).await;
        for o in outcomes {
            match o {
                RecordOutcome::Failed(reason) => assert!(
                    reason.contains("retries exhausted after 3 attempts"),
                    "{reason}"
                ),
                other => panic!("expected failure, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn fatal_errors_fail_the_whole_batch_without_splitting() {
        let dest = scripted(vec![], 0, true);
        let (outcomes, stats) = deliver_to(&dest, &records(50), fast(3)).await;
        assert_eq!(stats.requests, 1);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, RecordOutcome::Failed(r) if r.contains("401")))
        );
    }

    /// Answers per record; odd and even keys are different request kinds.
    struct PerRecord {
        requests: Mutex<Vec<Vec<String>>>,
    }

    impl Destination for PerRecord {
        fn send<'a>(
            &'a self,
            _ctx: &'a BatchContext,
            records: &'a [OutboundRecord],
        ) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                self.requests
                    .lock()
                    .unwrap()
                    .push(records.iter().map(|r| r.key.clone()).collect());
                Attempt::Answered(
                    records
                        .iter()
                        .map(|r| match r.key.as_str() {
                            "3" => RecordAnswer::Rejected("bad 3".into()),
                            key => RecordAnswer::Applied {
                                destination_id: Some(format!("id-{key}")),
                                looked_up: key == "4",
                            },
                        })
                        .collect(),
                )
            })
        }

        fn request_group(&self, record: &OutboundRecord) -> u8 {
            record.key.parse::<u8>().unwrap() % 2
        }
    }

    #[tokio::test]
    async fn request_groups_never_share_a_request_and_answers_map_back_in_order() {
        let dest = PerRecord {
            requests: Mutex::new(Vec::new()),
        };
        let limiter = local_limiter(unlimited()).await;
        let target = Target {
            destination: &dest,
            limiter: &limiter,
        };
        let (outcomes, stats) = deliver(target, &ctx(), &records(6), fast(0)).await;
        let requests = dest.requests.lock().unwrap().clone();
        assert_eq!(requests, vec![vec!["0", "2", "4"], vec!["1", "3", "5"]]);
        for (i, outcome) in outcomes.iter().enumerate() {
            let expected = if i == 3 {
                RecordOutcome::Rejected("bad 3".into())
            } else {
                RecordOutcome::Delivered {
                    destination_id: Some(format!("id-{i}")),
                }
            };
            assert_eq!(outcome, &expected, "record {i}");
        }
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.lookups_before_create, 1);
    }
}
