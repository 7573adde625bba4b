//! Limits benchmark (not a test): for several rate limits and worker
//! counts, syncs enough records through the `http` destination to keep the
//! limit busy for several seconds, against the receiver emulator enforcing
//! the same limit, and reports the allowed rate next to the achieved one,
//! with violations (requests over the limit, which the receiver answers 429).
//!
//! Run it with `scripts/bench-limits.sh` (release build); see
//! docs/benchmarks.md.

use std::time::{Duration, Instant};

use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
poll_interval_ms = 200

[destinations.api]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 10
max_concurrency = 8
rate_limit = { requests = {REQUESTS}, per_seconds = {PER} }

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "api"
"#;

struct Case {
    requests: u32,
    per: Duration,
    workers: usize,
    /// How long the limit is kept busy.
    busy: Duration,
}

struct Measured {
    allowed: f64,
    achieved: f64,
    requests: usize,
    violations: u32,
    run_seconds: f64,
}

async fn measure(case: &Case) -> Measured {
    let receiver = Receiver::start().await;
    receiver.with(|s| {
        s.latency = Duration::from_millis(20);
        s.count_only = true;
        s.rate_window = Some((case.requests as usize, case.per));
    });
    let allowed = f64::from(case.requests) / case.per.as_secs_f64();
    let requests = (allowed * case.busy.as_secs_f64()).ceil() as i64;
    let config = CONFIG
        .replace("{REQUESTS}", &case.requests.to_string())
        .replace("{PER}", &case.per.as_secs_f64().to_string());
    let mut env = TestEnv::new(&config, &[("{RECEIVER_URL}", receiver.url())]).await;
    seed_customers(&env.warehouse, requests * 10).await;
    for _ in 0..case.workers {
        env.start_worker(8);
    }
    let started = Instant::now();
    let run = env.run_sync("contacts", &[]).await;
    let run_seconds = started.elapsed().as_secs_f64();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], requests * 10, "{run}");
    let (achieved, accepted, violations) = receiver.with(|s| {
        let rate = match (s.arrivals.first(), s.arrivals.last()) {
            (Some(first), Some(last)) if s.arrivals.len() > 1 => {
                (s.arrivals.len() - 1) as f64 / last.duration_since(*first).as_secs_f64()
            }
            _ => 0.0,
        };
        (rate, s.arrivals.len(), s.violations)
    });
    for i in 0..case.workers {
        env.terminate_worker(i).await;
    }
    Measured {
        allowed,
        achieved,
        requests: accepted,
        violations,
        run_seconds,
    }
}

#[tokio::main]
async fn main() {
    let cases = [(10, 1, 1), (10, 1, 3), (50, 1, 1), (50, 1, 3), (100, 10, 3)].map(
        |(requests, per_secs, workers)| Case {
            requests,
            per: Duration::from_secs(per_secs),
            workers,
            busy: Duration::from_secs(if per_secs > 1 { 20 } else { 6 }),
        },
    );
    println!(
        "| limit | workers × concurrency | requests | allowed (req/s) | achieved (req/s) | achieved / allowed | violations | run (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for case in &cases {
        eprintln!(
            "measuring {} per {:?} with {} worker(s)…",
            case.requests, case.per, case.workers
        );
        let m = measure(case).await;
        println!(
            "| {} per {} s | {} × 8 | {} | {:.2} | {:.2} | {:.1}% | {} | {:.1} |",
            case.requests,
            case.per.as_secs(),
            case.workers,
            m.requests,
            m.allowed,
            m.achieved,
            100.0 * m.achieved / m.allowed,
            m.violations,
            m.run_seconds
        );
    }
}
