//! Delivering a batch: send, retry transient failures at the granularity
//! of the record, and split a refused request in halves until the records
//! at fault are found, so one bad record does not take its 99 neighbours to
//! the DLQ.
//!
//! A send that answers for each record on its own (a vendor turning a
//! batch into several requests: a `PUT` per member, a lookup before a
//! create, a bulk job's results) can leave some records unapplied; only
//! those are sent again, each with its own count of failures, so the
//! records a destination acknowledged are settled as delivered whatever
//! happens to their neighbours.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::adaptive::Response;
use super::limiter::Limiter;
use super::outcome::{Attempt, RecordAnswer, RecordOutcome, Unapplied, truncate_message};
use super::retry::RetryPolicy;
use crate::destinations::Destination;
use crate::destinations::record::{BatchContext, OutboundRecord};

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
    /// Requests by how the destination answered them.
    pub answers: AnswerCounts,
}

/// Requests by how the destination answered, as the metrics name them.
#[derive(Debug, Default, Clone, Copy)]
pub struct AnswerCounts {
    /// Applied whole.
    pub applied: u32,
    /// Answered record by record (a batch API's multi-status answer).
    pub per_record: u32,
    /// The content was refused.
    pub rejected: u32,
    /// 429: back-pressure.
    pub throttled: u32,
    /// 5xx, timeouts, lost connections.
    pub transient: u32,
    /// Credentials, permissions, configuration.
    pub fatal: u32,
}

/// How a request was answered, as spans and metrics name it.
fn answer_class(attempt: &Attempt) -> &'static str {
    match attempt {
        Attempt::Delivered => "applied",
        Attempt::Answered(_) => "per_record",
        Attempt::Rejected(_) => "rejected",
        Attempt::Throttled { .. } => "throttled",
        Attempt::Transient { .. } => "transient",
        Attempt::Fatal(_) => "fatal",
    }
}

impl AnswerCounts {
    fn count(&mut self, attempt: &Attempt) {
        let counter = match attempt {
            Attempt::Delivered => &mut self.applied,
            Attempt::Answered(_) => &mut self.per_record,
            Attempt::Rejected(_) => &mut self.rejected,
            Attempt::Throttled { .. } => &mut self.throttled,
            Attempt::Transient { .. } => &mut self.transient,
            Attempt::Fatal(_) => &mut self.fatal,
        };
        *counter += 1;
    }

    /// `(class, requests)` for each class, as the metrics label them.
    pub fn by_class(&self) -> [(&'static str, u32); 6] {
        [
            ("applied", self.applied),
            ("per_record", self.per_record),
            ("rejected", self.rejected),
            ("throttled", self.throttled),
            ("transient", self.transient),
            ("fatal", self.fatal),
        ]
    }

    fn add(&mut self, other: &AnswerCounts) {
        self.applied += other.applied;
        self.per_record += other.per_record;
        self.rejected += other.rejected;
        self.throttled += other.throttled;
        self.transient += other.transient;
        self.fatal += other.fatal;
    }
}

/// Back-pressure is waited out without spending retries, but not forever.
const MAX_THROTTLED: Duration = Duration::from_secs(15 * 60);

/// How a set of records (positions in the batch) came out of
/// [`send_with_retry`]: each settled one has its outcome; these are what
/// is left.
enum Unsettled {
    /// Nothing: every record has its outcome.
    None,
    /// `refused` were refused as one request: split them to find the
    /// records at fault. `retry` are records of the same send that failed
    /// transiently, to be sent again.
    Refused {
        refused: Vec<usize>,
        reason: String,
        retry: Vec<usize>,
    },
    /// Nothing in the batch can succeed (credentials, a missing table).
    Fatal(String),
}

/// The records to send again after an attempt, and what to wait for first.
#[derive(Default)]
struct NextAttempt {
    positions: Vec<usize>,
    /// A 429: pause the destination, for every worker, this long (None: as
    /// long as the backoff says).
    throttled: Option<Option<Duration>>,
    /// A transient failure: back off by the highest retry number among the
    /// records, honouring the longest `Retry-After`.
    backoff: Option<(u32, Option<Duration>)>,
}

impl NextAttempt {
    /// Sent again, without spending a retry (it was never sent).
    fn resend(&mut self, position: usize) {
        self.positions.push(position);
    }

    /// Sent again after the destination's pause; not a retry.
    fn throttled(&mut self, position: usize, retry_after: Option<Duration>) {
        self.positions.push(position);
        let longest = match self.throttled {
            Some(Some(seen)) => Some(retry_after.map_or(seen, |r| r.max(seen))),
            _ => retry_after,
        };
        self.throttled = Some(longest);
    }

    /// Counts a transient failure against the record: it is sent again
    /// while it has retries left, and fails when they are spent.
    fn failed(
        &mut self,
        progress: &mut Progress,
        position: usize,
        message: &str,
        retry_after: Option<Duration>,
        max_retries: u32,
    ) {
        let attempts = progress.failures.entry(position).or_default();
        *attempts += 1;
        if *attempts > max_retries {
            progress.outcomes[position] = Some(exhausted(*attempts, message));
            return;
        }
        let retry = *attempts;
        self.positions.push(position);
        let (seen_retry, seen_after) = self.backoff.unwrap_or((0, None));
        let after = match (seen_after, retry_after) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.backoff = Some((seen_retry.max(retry), after));
    }
}

/// The records at `positions`, borrowed when they are one run of the batch.
fn gather<'a>(records: &'a [OutboundRecord], positions: &[usize]) -> Cow<'a, [OutboundRecord]> {
    match (positions.first(), positions.last()) {
        (Some(&first), Some(&last)) if last + 1 - first == positions.len() => {
            Cow::Borrowed(&records[first..=last])
        }
        _ => Cow::Owned(positions.iter().map(|&i| records[i].clone()).collect()),
    }
}

fn exhausted(attempts: u32, message: &str) -> RecordOutcome {
    RecordOutcome::Failed(truncate_message(
        &format!("retries exhausted after {attempts} attempts; last error: {message}"),
        MAX_REASON_CHARS,
    ))
}

/// Sends the records at `positions` until each is settled, refused as part
/// of a request, or the batch is found hopeless. A record is sent again
/// only while it is unapplied, and fails once its own retries are spent.
async fn send_with_retry(
    target: Target<'_>,
    ctx: &BatchContext,
    records: &[OutboundRecord],
    positions: Vec<usize>,
    policy: RetryPolicy,
    progress: &mut Progress,
) -> Unsettled {
    let max_retries = policy.max_retries;
    let mut remaining = positions;
    let mut throttles = 0;
    let mut throttled_for = Duration::ZERO;
    // Which time these records go out: 0 the first, then each resend (a
    // retry, or a wait after a 429).
    let mut resend = 0u32;
    loop {
        let chunk = gather(records, &remaining);
        // One span per request: a trace shows each retry on its own.
        let span = tracing::info_span!(
            "ebb.destination.request",
            destination = %ctx.destination,
            records = chunk.len(),
            resend,
            limiter_wait_ms = tracing::field::Empty,
            answer = tracing::field::Empty,
        );
        let waiting = Instant::now();
        let slot = target.limiter.local_slot().instrument(span.clone()).await;
        let permit = target.limiter.acquire().instrument(span.clone()).await;
        let waited = waiting.elapsed();
        span.record("limiter_wait_ms", waited.as_millis() as u64);
        progress.stats.limiter_wait += waited;
        progress.stats.requests += 1;
        let attempt = target
            .destination
            .send(ctx, &chunk)
            .instrument(span.clone())
            .await;
        span.record("answer", answer_class(&attempt));
        drop(span);
        resend += 1;
        progress.stats.answers.count(&attempt);
        permit.release().await;
        drop(chunk);
        if let Some(slot) = slot {
            slot.done(if back_pressure(&attempt) {
                Response::BackPressure
            } else {
                Response::Ok
            });
        }
        let mut next = NextAttempt::default();
        match attempt {
            Attempt::Delivered => {
                for &position in &remaining {
                    progress.outcomes[position] = Some(RecordOutcome::delivered());
                }
                return Unsettled::None;
            }
            Attempt::Answered(answers) if answers.len() == remaining.len() => {
                let mut refused: Option<(Vec<usize>, String)> = None;
                for (&position, answer) in remaining.iter().zip(answers) {
                    match answer {
                        RecordAnswer::Applied {
                            destination_id,
                            looked_up,
                        } => {
                            progress.stats.lookups_before_create += u32::from(looked_up);
                            progress.outcomes[position] =
                                Some(RecordOutcome::Delivered { destination_id });
                        }
                        RecordAnswer::Rejected(reason) => {
                            progress.outcomes[position] = Some(RecordOutcome::Rejected(
                                truncate_message(&reason, MAX_REASON_CHARS),
                            ));
                        }
                        RecordAnswer::Unapplied(Unapplied::Transient {
                            message,
                            retry_after,
                        }) => next.failed(progress, position, &message, retry_after, max_retries),
                        RecordAnswer::Unapplied(Unapplied::Throttled { retry_after }) => {
                            next.throttled(position, retry_after);
                        }
                        RecordAnswer::Unapplied(Unapplied::Refused(reason)) => {
                            refused
                                .get_or_insert_with(|| (Vec::new(), reason))
                                .0
                                .push(position);
                        }
                        RecordAnswer::Unapplied(Unapplied::NotSent) => next.resend(position),
                    }
                }
                if next.positions.len() == remaining.len()
                    && next.throttled.is_none()
                    && next.backoff.is_none()
                {
                    // A send that neither applied nor tried any record would
                    // otherwise be repeated forever.
                    next = NextAttempt::default();
                    for &position in &remaining {
                        let message = "internal error: the destination sent none of the records";
                        next.failed(progress, position, message, None, max_retries);
                    }
                }
                if let Some((refused, reason)) = refused {
                    return Unsettled::Refused {
                        refused,
                        reason,
                        retry: next.positions,
                    };
                }
            }
            Attempt::Answered(answers) => {
                return Unsettled::Fatal(format!(
                    "internal error: the destination answered for {} of {} records",
                    answers.len(),
                    remaining.len()
                ));
            }
            Attempt::Throttled { retry_after } => {
                for &position in &remaining {
                    next.throttled(position, retry_after);
                }
            }
            Attempt::Rejected(reason) => {
                return Unsettled::Refused {
                    refused: remaining,
                    reason,
                    retry: Vec::new(),
                };
            }
            Attempt::Fatal(reason) => return Unsettled::Fatal(reason),
            Attempt::Transient {
                message,
                retry_after,
            } => {
                for &position in &remaining {
                    next.failed(progress, position, &message, retry_after, max_retries);
                }
            }
        }
        if next.positions.is_empty() {
            return Unsettled::None;
        }
        remaining = next.positions;
        if let Some(retry_after) = next.throttled {
            throttles += 1;
            progress.stats.throttled += 1;
            let pause = retry_after
                .unwrap_or_else(|| policy.backoff(throttles, None))
                .min(Duration::from_secs(300));
            throttled_for += pause;
            if throttled_for > MAX_THROTTLED {
                let reason = format!(
                    "the destination kept answering 429 (throttled) for over {} minutes",
                    MAX_THROTTLED.as_secs() / 60
                );
                for &position in &remaining {
                    progress.outcomes[position] = Some(RecordOutcome::Failed(reason.clone()));
                }
                return Unsettled::None;
            }
            tracing::info!(
                sync = %ctx.sync, destination = %ctx.destination, run_id = ctx.run_id, batch = ctx.batch_no,
                wait_ms = pause.as_millis() as u64,
                "destination throttled (429); pausing it for every worker"
            );
            // The next acquire waits out the pause, here and in every
            // other worker.
            target.limiter.pause(pause).await;
        } else if let Some((retry, retry_after)) = next.backoff {
            progress.stats.retries += 1;
            let pause = policy.backoff(retry, retry_after);
            tracing::warn!(
                sync = %ctx.sync, run_id = ctx.run_id, batch = ctx.batch_no, records = remaining.len(),
                retry, wait_ms = pause.as_millis() as u64,
                "transient destination error; retrying the records it did not apply"
            );
            tokio::time::sleep(pause).await;
        }
    }
}

/// Whether an answer says the destination is struggling (for adaptive
/// concurrency).
fn back_pressure(attempt: &Attempt) -> bool {
    match attempt {
        Attempt::Throttled { .. } | Attempt::Transient { .. } => true,
        Attempt::Answered(answers) => answers.iter().any(|a| {
            matches!(
                a,
                RecordAnswer::Unapplied(Unapplied::Throttled { .. } | Unapplied::Transient { .. })
            )
        }),
        _ => false,
    }
}

/// A batch's delivery so far: each record's outcome once known, and the
/// transient failures each has had.
struct Progress {
    outcomes: Vec<Option<RecordOutcome>>,
    failures: HashMap<usize, u32>,
    stats: DeliveryStats,
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
        self.answers.add(&other.answers);
    }
}

/// Delivers records that may share requests: sends them in one chunk,
/// splitting refused chunks in halves until the records at fault are found.
async fn deliver_chunks(
    target: Target<'_>,
    ctx: &BatchContext,
    records: &[OutboundRecord],
    policy: RetryPolicy,
) -> (Vec<RecordOutcome>, DeliveryStats) {
    let mut progress = Progress {
        outcomes: vec![None; records.len()],
        failures: HashMap::new(),
        stats: DeliveryStats::default(),
    };
    let mut pending: Vec<Vec<usize>> = Vec::new();
    if !records.is_empty() {
        pending.push((0..records.len()).collect());
    }
    while let Some(positions) = pending.pop() {
        match send_with_retry(target, ctx, records, positions, policy, &mut progress).await {
            Unsettled::None => {}
            Unsettled::Refused {
                refused,
                reason,
                retry,
            } => {
                if !retry.is_empty() {
                    pending.push(retry);
                }
                if let [position] = refused[..] {
                    progress.outcomes[position] = Some(RecordOutcome::Rejected(truncate_message(
                        &reason,
                        MAX_REASON_CHARS,
                    )));
                } else {
                    progress.stats.splits += 1;
                    let (first, second) = refused.split_at(refused.len() / 2);
                    pending.push(second.to_vec());
                    pending.push(first.to_vec());
                }
            }
            Unsettled::Fatal(reason) => {
                // Nothing in this batch can succeed; do not spend requests on the rest.
                let reason = truncate_message(&reason, MAX_REASON_CHARS);
                for outcome in progress.outcomes.iter_mut().filter(|o| o.is_none()) {
                    *outcome = Some(RecordOutcome::Failed(reason.clone()));
                }
                pending.clear();
            }
        }
    }
    let outcomes = progress
        .outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(never_sent))
        .collect();
    (outcomes, progress.stats)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::future::BoxFuture;

    use super::*;
    use crate::config::Limits;
    use crate::destinations::record::Op;
    use crate::destinations::util::limiter::tests::local_limiter;

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
                update_fields: None,
            })
            .collect()
    }

    fn ctx() -> BatchContext {
        BatchContext {
            sync: "s".into(),
            destination: "d".into(),
            run_id: 1,
            batch_no: 0,
            new_keys_only: false,
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

    /// Answers per record; a record fails transiently the first
    /// `flaky[key]` times it is sent, another is held back once.
    struct Flaky {
        flaky: Mutex<std::collections::HashMap<String, u32>>,
        held_back_once: Mutex<Option<String>>,
        sent: Mutex<Vec<String>>,
    }

    impl Destination for Flaky {
        fn send<'a>(
            &'a self,
            _ctx: &'a BatchContext,
            records: &'a [OutboundRecord],
        ) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                let mut flaky = self.flaky.lock().unwrap();
                let mut held = self.held_back_once.lock().unwrap();
                let answers = records
                    .iter()
                    .map(|r| {
                        if held.as_deref() == Some(r.key.as_str()) {
                            *held = None;
                            return RecordAnswer::Unapplied(Unapplied::NotSent);
                        }
                        self.sent.lock().unwrap().push(r.key.clone());
                        match flaky.get_mut(&r.key) {
                            Some(left) if *left > 0 => {
                                *left -= 1;
                                RecordAnswer::Unapplied(Unapplied::Transient {
                                    message: format!("503 for {}", r.key),
                                    retry_after: None,
                                })
                            }
                            _ => RecordAnswer::Applied {
                                destination_id: Some(format!("id-{}", r.key)),
                                looked_up: false,
                            },
                        }
                    })
                    .collect();
                Attempt::Answered(answers)
            })
        }
    }

    #[tokio::test]
    async fn only_unapplied_records_are_sent_again_each_with_its_own_retries() {
        let dest = Flaky {
            flaky: Mutex::new(
                [("2", 1), ("5", 2), ("7", 9)]
                    .into_iter()
                    .map(|(k, n)| (k.to_owned(), n))
                    .collect(),
            ),
            held_back_once: Mutex::new(Some("8".into())),
            sent: Mutex::new(Vec::new()),
        };
        let limiter = local_limiter(unlimited()).await;
        let target = Target {
            destination: &dest,
            limiter: &limiter,
        };
        let (outcomes, stats) = deliver(target, &ctx(), &records(10), fast(3)).await;
        for (i, outcome) in outcomes.iter().enumerate() {
            match i {
                7 => assert!(
                    matches!(outcome, RecordOutcome::Failed(r) if r.contains("retries exhausted after 4 attempts") && r.contains("503 for 7")),
                    "record 7: {outcome:?}"
                ),
                _ => assert_eq!(
                    outcome,
                    &RecordOutcome::Delivered {
                        destination_id: Some(format!("id-{i}"))
                    },
                    "record {i}"
                ),
            }
        }
        let sent = dest.sent.lock().unwrap().clone();
        let times = |key: &str| sent.iter().filter(|k| *k == key).count();
        assert_eq!(
            times("0"),
            1,
            "acknowledged records are not sent again: {sent:?}"
        );
        assert_eq!(times("2"), 2, "{sent:?}");
        assert_eq!(times("5"), 3, "{sent:?}");
        assert_eq!(times("7"), 4, "one attempt and its 3 retries: {sent:?}");
        assert_eq!(times("8"), 1, "held back once, then sent once: {sent:?}");
        assert_eq!(stats.retries, 3, "{stats:?}");
    }

    /// Answers per record, but refuses any request that carries key "3"
    /// as a whole, and applies the others only when "3" is not with them.
    struct RefusesWithThree {
        requests: Mutex<Vec<Vec<String>>>,
    }

    impl Destination for RefusesWithThree {
        fn send<'a>(
            &'a self,
            _ctx: &'a BatchContext,
            records: &'a [OutboundRecord],
        ) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
                self.requests.lock().unwrap().push(keys.clone());
                let with_three = keys.iter().any(|k| k == "3");
                Attempt::Answered(
                    keys.iter()
                        .map(|k| match k.as_str() {
                            "0" => RecordAnswer::Applied {
                                destination_id: None,
                                looked_up: false,
                            },
                            _ if with_three => RecordAnswer::Unapplied(Unapplied::Refused(
                                "400 for the whole request".into(),
                            )),
                            _ => RecordAnswer::Applied {
                                destination_id: None,
                                looked_up: false,
                            },
                        })
                        .collect(),
                )
            })
        }
    }

    #[tokio::test]
    async fn records_refused_together_after_others_applied_are_split_apart() {
        let dest = RefusesWithThree {
            requests: Mutex::new(Vec::new()),
        };
        let limiter = local_limiter(unlimited()).await;
        let target = Target {
            destination: &dest,
            limiter: &limiter,
        };
        let (outcomes, stats) = deliver(target, &ctx(), &records(6), fast(0)).await;
        for (i, outcome) in outcomes.iter().enumerate() {
            if i == 3 {
                assert_eq!(
                    outcome,
                    &RecordOutcome::Rejected("400 for the whole request".into())
                );
            } else {
                assert_eq!(outcome, &RecordOutcome::delivered(), "record {i}");
            }
        }
        let requests = dest.requests.lock().unwrap().clone();
        assert!(
            requests
                .iter()
                .skip(1)
                .all(|r| !r.contains(&"0".to_owned())),
            "the applied record is not split along: {requests:?}"
        );
        assert!(stats.splits >= 1, "{stats:?}");
    }
}
