//! A destination's limits hold across every worker process: several
//! workers, each with a high local concurrency, against a receiver that
//! enforces a concurrency cap and a rolling-window rate and counts every
//! request over them.

use std::time::{Duration, Instant};

use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, eventually_every, seed_customers};

/// How long a step may take to start, and how often the tests look.
const SOON: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(50);

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
poll_interval_ms = 200

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 10
max_retries = {MAX_RETRIES}
{LIMITS}

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "crm"
mode = "upsert"
"#;

async fn env(receiver: &Receiver, rows: i64, limits: &str, max_retries: u32) -> TestEnv {
    let env = TestEnv::new(
        CONFIG,
        &[
            ("{RECEIVER_URL}", receiver.url()),
            ("{LIMITS}", limits.to_owned()),
            ("{MAX_RETRIES}", max_retries.to_string()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, rows).await;
    env
}

/// Requests per second between the first and the last arrival.
fn achieved_rate(arrivals: &[Instant]) -> f64 {
    let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
        return 0.0;
    };
    (arrivals.len() - 1) as f64 / last.duration_since(*first).as_secs_f64()
}

/// How much of the allowed rate a run uses is a throughput figure, measured
/// by `scripts/bench-limits.sh` (docs/benchmarks.md), not asserted here: a
/// loaded machine uses less of it, and that is not a defect.
#[tokio::test]
async fn a_rate_limit_holds_across_three_workers() {
    let receiver = Receiver::start().await;
    receiver.with(|s| {
        s.latency = Duration::from_millis(40);
        s.concurrency_cap = Some(4);
        s.rate_window = Some((20, Duration::from_secs(1)));
    });
    let limits = "max_concurrency = 4\nrate_limit = { requests = 20, per_seconds = 1 }";
    let mut env = env(&receiver, 2000, limits, 4).await;
    for _ in 0..3 {
        env.start_worker(8);
    }
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 2000, "{run}");
    receiver.with(|s| {
        assert_eq!(s.violations, 0, "requests over the limits");
        assert!(s.max_in_flight <= 4, "{} in flight", s.max_in_flight);
        let rate = achieved_rate(&s.arrivals);
        assert!(rate <= 20.0, "{rate:.1} requests/s is over the limit");
    });
    assert_eq!(run["throttled"], 0, "{run}");
    assert!(run["limiter_wait_ms"].as_i64() > Some(0), "{run}");
    let limits = env.ebb_json(&["limits"]).await;
    assert_eq!(
        limits[0]["rate_limit"],
        serde_json::json!([20, 1.0]),
        "{limits}"
    );
    assert_eq!(limits[0]["now"]["in_flight"], 0, "{limits}");
}

#[tokio::test]
async fn a_concurrency_cap_holds_across_three_workers_and_is_reached() {
    let receiver = Receiver::start().await;
    receiver.with(|s| {
        s.latency = Duration::from_millis(150);
        s.concurrency_cap = Some(3);
    });
    // A fixed share per worker, so the cap alone decides (adaptive
    // concurrency has its own test below).
    let limits = "max_concurrency = 3\nadaptive_concurrency = false";
    let mut env = env(&receiver, 600, limits, 4).await;
    for _ in 0..3 {
        env.start_worker(8);
    }
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 600, "{run}");
    receiver.with(|s| {
        assert_eq!(s.violations, 0, "requests over the cap");
        assert_eq!(s.max_in_flight, 3, "the whole allowance was used");
    });
}

/// A 429 is back-pressure, not a failure: with `max_retries = 0`, three
/// 429 answers must neither fail records nor count as retries.
#[tokio::test]
async fn a_429_slows_every_worker_down_without_spending_retries() {
    let receiver = Receiver::start().await;
    receiver.with(|s| s.throttle_left = 3);
    let mut env = env(&receiver, 100, "", 0).await;
    env.start_worker(4);
    env.start_worker(4);
    let started = Instant::now();
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 100, "{run}");
    assert_eq!(run["retries"], 0, "{run}");
    assert_eq!(run["throttled"], 3, "{run}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    receiver.with(|s| {
        assert_eq!(s.records.len(), 100);
        assert_eq!(s.violations, 0);
    });
}

const TWO_DESTINATIONS: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
poll_interval_ms = 200

[destinations.slow]
type = "http"
url = "{SLOW_URL}"
batch_size = 10
rate_limit = { requests = 1, per_seconds = 1 }

[destinations.fast]
type = "http"
url = "{FAST_URL}"
batch_size = 10

[syncs.to_slow]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers WHERE id <= 120"
primary_key = "id"
destination = "slow"

[syncs.to_fast]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "fast"
"#;

/// A throttled destination (1 request/s, 12 batches queued: 12 s of work)
/// shares the workers with a fast one. Each destination has its own queue
/// and its own worker slots, so a run of the fast one goes through while
/// the slow one is still far from done. (Were slots shared, the slow
/// batches, queued first, would hold all four of them, and the fast run
/// would wait for the slow one to finish.) How long the fast run takes is
/// not compared: that is a timing, and a loaded machine stretches it.
#[tokio::test]
async fn a_throttled_destination_does_not_starve_a_fast_one() {
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    fast.with(|s| s.latency = Duration::from_millis(20));
    slow.with(|s| s.rate_window = Some((1, Duration::from_secs(1))));
    let mut env = TestEnv::new(
        TWO_DESTINATIONS,
        &[("{SLOW_URL}", slow.url()), ("{FAST_URL}", fast.url())],
    )
    .await;
    seed_customers(&env.warehouse, 300).await;
    env.start_worker(2);
    env.start_worker(2);

    let alone = env.run_sync("to_fast", &[]).await;
    assert_eq!(alone["delivered"], 300, "{alone}");

    let mut slow_run = env.ebb_command(&["run", "to_slow", "--json"]);
    slow_run
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let slow_run = slow_run.spawn().expect("spawn the slow run");
    eventually_every(SOON, TICK, "the slow run to start", || async {
        (slow.with(|s| s.requests) >= 2).then_some(())
    })
    .await;
    let shared = env.run_sync("to_fast", &["--full-resync"]).await;
    assert_eq!(shared["delivered"], 300, "{shared}");
    let slow_sent = slow.with(|s| s.requests);
    assert!(
        slow_sent < 12,
        "the fast run finished while the slow one was still going ({slow_sent} of its 12 requests sent)"
    );

    let out = tokio::time::timeout(Duration::from_secs(120), slow_run.wait_with_output())
        .await
        .expect("the slow run finishes")
        .expect("slow run output");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["run"]["delivered"], 120, "{summary}");
    slow.with(|s| assert_eq!(s.violations, 0));
}

/// A worker SIGKILLed while holding both concurrency slots of a destination
/// cannot release them; its leases stop being renewed and expire, so the
/// capacity returns after the lease TTL (10 s) — and not before, which
/// shows the slots really were held across processes. (The upper bound is
/// generous: a new worker's start-up on a loaded machine is not the point.)
#[tokio::test]
async fn slots_of_a_killed_worker_come_back_within_the_lease_ttl() {
    let receiver = Receiver::start().await;
    // Requests hang: the first worker holds both slots when it dies.
    receiver.with(|s| s.latency = Duration::from_secs(60));
    let config = CONFIG.replace("heartbeat_secs = 2", "heartbeat_secs = 1");
    let mut env = TestEnv::new(
        &config,
        &[
            ("{RECEIVER_URL}", receiver.url()),
            // A fixed share: the one worker must take both slots at once.
            (
                "{LIMITS}",
                "max_concurrency = 2\nadaptive_concurrency = false".into(),
            ),
            ("{MAX_RETRIES}", "3".into()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, 40).await;
    env.start_worker(4);
    let mut run = env.ebb_command(&["run", "contacts", "--json"]);
    run.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let run = run.spawn().expect("spawn ebb run");
    eventually_every(SOON, TICK, "two requests", || async {
        (receiver.with(|s| s.requests) >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.with(|s| s.requests), 2, "the cap of 2 held");
    // Operators see the held slots.
    let limits = env.ebb_json(&["limits"]).await;
    assert_eq!(limits[0]["destination"], "crm", "{limits}");
    assert_eq!(limits[0]["max_concurrency"], 2, "{limits}");
    assert_eq!(limits[0]["now"]["in_flight"], 2, "{limits}");
    assert_eq!(limits[0]["queue"]["live_workers"], 1, "{limits}");

    env.kill_worker(0).await;
    let killed = Instant::now();
    receiver.with(|s| s.latency = Duration::ZERO);
    env.start_worker(4);
    eventually_every(
        Duration::from_secs(45),
        TICK,
        "capacity to come back",
        || async { (receiver.with(|s| s.requests) >= 3).then_some(()) },
    )
    .await;
    let back_after = killed.elapsed();
    assert!(
        back_after <= Duration::from_secs(40),
        "slots came back after {back_after:?}, long after the 10 s lease TTL"
    );
    assert!(
        back_after >= Duration::from_secs(5),
        "slots came back after {back_after:?}: the dead worker's leases were not honoured"
    );
    let out = tokio::time::timeout(Duration::from_secs(60), run.wait_with_output())
        .await
        .expect("the run finishes")
        .expect("run output");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["run"]["delivered"], 40, "{summary}");
}

/// A struggling destination (503 as soon as more than 2 requests are in
/// flight) behind a generous cap of 16, once with a fixed share and once
/// with adaptive concurrency. Adapting keeps the load near what the
/// destination can take: it probes above it now and then, instead of
/// hammering it, so it draws several times fewer overload answers.
#[tokio::test]
async fn adaptive_concurrency_backs_off_from_a_struggling_destination() {
    let mut overloads = Vec::new();
    for adaptive in [false, true] {
        let receiver = Receiver::start().await;
        receiver.with(|s| {
            s.latency = Duration::from_millis(50);
            s.overloaded_above = Some(2);
        });
        let limits = format!("max_concurrency = 16\nadaptive_concurrency = {adaptive}");
        let mut env = env(&receiver, 600, &limits, 30).await;
        env.start_worker(16);
        let run = env.run_sync("contacts", &[]).await;
        assert_eq!(run["delivered"], 600, "adaptive = {adaptive}: {run}");
        overloads.push(receiver.with(|s| s.overloaded_answers));
    }
    let (fixed, adaptive) = (overloads[0], overloads[1]);
    eprintln!("overload answers: {fixed} with a fixed share, {adaptive} adaptive");
    assert!(
        adaptive * 3 <= fixed,
        "adaptive {adaptive} vs fixed {fixed} overload answers"
    );
}
