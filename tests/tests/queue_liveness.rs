//! The queue under the conditions that stalled runs: batches that wait a
//! long time inside their worker slot (a shared rate limit, minutes of
//! 429s), runs with more batches than Redis unpacks into one command, and
//! tasks lost from the queue while other runs keep it busy. Each test
//! checks that every record is delivered exactly once, that no worker is
//! declared dead while alive, and what the run reports.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, create_replica, eventually, seed_customers};

const HTTP: &str = r#"
{HEADER}

[worker]
heartbeat_secs = {HEARTBEAT}
missed_heartbeats = 2
poll_interval_ms = 200
requeue_after_secs = 5

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 5
max_retries = 2
{LIMITS}

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "crm"
"#;

async fn http_env(receiver: &Receiver, rows: i64, heartbeat_secs: u64, limits: &str) -> TestEnv {
    let env = TestEnv::new(
        HTTP,
        &[
            ("{RECEIVER_URL}", receiver.url()),
            ("{HEARTBEAT}", heartbeat_secs.to_string()),
            ("{LIMITS}", limits.to_owned()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, rows).await;
    env
}

/// Lines of the worker logs that show a worker was declared dead or
/// restarted, or lost a claim.
fn liveness_trouble(env: &TestEnv) -> Vec<String> {
    (0..env.worker_count())
        .flat_map(|i| {
            env.worker_log(i)
                .lines()
                .filter(|l| {
                    l.contains("restarting after a backoff")
                        || l.contains("not registered")
                        || l.contains("lost its claim")
                        || l.contains("stopped renewing")
                })
                .map(|l| format!("worker {i}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Each record applied once by the receiver (no duplicates, none missing).
fn assert_each_applied_once(receiver: &Receiver, rows: usize) {
    receiver.with(|s| {
        assert_eq!(s.records.len(), rows, "records at the receiver");
        let twice: Vec<_> = s.applied.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            twice.is_empty(),
            "records applied more than once: {twice:?}"
        );
        assert_eq!(s.duplicates_dropped, 0, "no record was even sent twice");
    });
}

/// The stall seen in `limits.rs`, reduced to its mechanism. Eight slots
/// share 2 requests/s, so each batch waits seconds for its turn, longer
/// than the 2 s after which a silent worker is taken for dead. A worker
/// that fetched tasks ahead of its free slots used to stop heartbeating
/// until they started; the other worker then declared it dead and requeued
/// its tasks, its next heartbeat failed, apalis cancelled its in-flight
/// batches, and their duplicates, finding the batch locked, were
/// acknowledged as done: the run stalled with batches nobody had.
#[tokio::test]
async fn workers_whose_batches_wait_on_a_shared_rate_limit_stay_alive_and_lose_nothing() {
    let receiver = Receiver::start().await;
    let limits = "max_concurrency = 8\nrate_limit = { requests = 2, per_seconds = 1 }";
    let mut env = http_env(&receiver, 150, 1, limits).await;
    env.start_worker(4);
    env.start_worker(4);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 150, "{run}");
    assert_eq!(
        run["redeliveries"], 0,
        "no batch was delivered twice: {run}"
    );
    assert_each_applied_once(&receiver, 150);
    let trouble = liveness_trouble(&env);
    assert!(trouble.is_empty(), "{trouble:#?}");
    let events = run_events(&env, &run).await;
    assert!(events.is_empty(), "nothing had to be recovered: {events:?}");
}

/// A destination that answers 429 with `Retry-After: 20` for a minute:
/// every batch waits in its slot, paused, for a minute, with workers that
/// are taken for dead after 4 s of silence. No worker is declared dead, no
/// batch is delivered twice, and every record arrives once.
#[tokio::test]
async fn a_minute_of_429s_orphans_no_worker_and_redelivers_no_batch() {
    let receiver = Receiver::start().await;
    receiver.with(|s| {
        s.throttle_until = Some((Instant::now() + Duration::from_secs(60), 20));
    });
    let mut env = http_env(&receiver, 100, 2, "").await;
    env.start_worker(4);
    env.start_worker(4);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 100, "{run}");
    assert_eq!(run["retries"], 0, "429s are not retries: {run}");
    assert!(run["throttled"].as_i64() >= Some(2), "{run}");
    assert!(
        receiver.with(|s| s.throttled_answers) >= 2,
        "the destination throttled for a minute"
    );
    assert_eq!(
        run["redeliveries"], 0,
        "no batch was delivered twice: {run}"
    );
    assert_each_applied_once(&receiver, 100);
    let trouble = liveness_trouble(&env);
    assert!(trouble.is_empty(), "{trouble:#?}");
}

const POSTGRES: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
poll_interval_ms = 200

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 1

[syncs.customers]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "replica"

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
"#;

/// A run of 10,500 batches (one record each). apalis-redis promotes all
/// due tasks with a single `unpack`, which Redis refuses beyond about 8,000
/// values, so every fetch used to fail with "too many results to unpack"
/// and the run never finished.
#[tokio::test]
async fn a_run_of_more_than_ten_thousand_batches_is_delivered_once() {
    const ROWS: i64 = 10_500;
    let mut env = TestEnv::new(POSTGRES, &[]).await;
    seed_customers(&env.warehouse, ROWS).await;
    create_replica(&env.app).await;
    // Planned and enqueued before any worker runs, so all 10,500 tasks are
    // due at once when the workers start.
    let mut run = env.ebb_command(&["run", "customers", "--json"]);
    run.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let run = run.spawn().expect("spawn ebb run");
    eventually(
        Duration::from_secs(120),
        "every task on the queue",
        || async { (env.queued_tasks().await == ROWS).then_some(()) },
    )
    .await;
    env.start_worker(8);
    env.start_worker(8);
    let out = tokio::time::timeout(Duration::from_secs(600), run.wait_with_output())
        .await
        .expect("the run finishes")
        .expect("run output");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run JSON");
    let run = &summary["run"];
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["batches_total"], ROWS, "{run}");
    assert_eq!(run["delivered"], ROWS, "{run}");
    assert_eq!(run["redeliveries"], 0, "{run}");
    let replicated =
        TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM public.customers_synced").await;
    assert_eq!(replicated, ROWS);
    for i in 0..env.worker_count() {
        let errors: Vec<_> = env
            .worker_log(i)
            .lines()
            .filter(|l| l.contains(" ERROR ") || l.contains("unpack"))
            .map(str::to_owned)
            .collect();
        assert!(errors.is_empty(), "worker {i} logged errors: {errors:#?}");
    }
    assert_eq!(env.queued_tasks().await, 0, "nothing is left on the queue");
}

const TWO_SYNCS: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
poll_interval_ms = 200
requeue_after_secs = 3

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 10
rate_limit = { requests = 2, per_seconds = 1 }

[syncs.big]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers WHERE id > 100"
primary_key = "id"
destination = "crm"

[syncs.small]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers WHERE id <= 100"
primary_key = "id"
destination = "crm"
"#;

/// A task lost from the queue (here deleted from Redis, as a crash of
/// Redis's state or an apalis dead-letter would lose it) is found and
/// re-enqueued while another run keeps the same queue busy, and the run
/// says so. (The old rule re-enqueued only once the whole destination
/// queue had been empty for two minutes: here, only after the busy run.)
#[tokio::test]
async fn a_lost_task_is_requeued_while_another_run_keeps_the_queue_busy() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::new(TWO_SYNCS, &[("{RECEIVER_URL}", receiver.url())]).await;
    seed_customers(&env.warehouse, 700).await;
    let spawn_run = |env: &TestEnv, sync: &str| {
        let mut run = env.ebb_command(&["run", sync, "--json"]);
        run.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        run.spawn().expect("spawn ebb run")
    };
    let enqueued = |sync: &'static str| {
        let state = env.state.clone();
        move || {
            let state = state.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT id FROM ebb_runs WHERE sync_name = $1 AND enqueued_at IS NOT NULL",
                )
                .bind(sync)
                .fetch_optional(&state)
                .await
                .ok()
                .flatten()
            }
        }
    };
    let small = spawn_run(&env, "small");
    let small_id = eventually(
        Duration::from_secs(60),
        "the small run to be enqueued",
        enqueued("small"),
    )
    .await;
    assert!(
        env.drop_task(small_id, 3).await,
        "the task of batch 3 was on the queue"
    );
    // 60 batches at 2 requests/s, behind the small run's: about 30 s of work.
    let big = spawn_run(&env, "big");
    let big_id = eventually(
        Duration::from_secs(60),
        "the big run to be enqueued",
        enqueued("big"),
    )
    .await;
    env.start_worker(4);
    env.start_worker(4);

    let finished = |out: std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).expect("run JSON")
    };
    let small = tokio::time::timeout(Duration::from_secs(300), small.wait_with_output())
        .await
        .expect("the small run finishes")
        .expect("small run output");
    let small = finished(small);
    assert_eq!(small["run"]["state"], "succeeded", "{small}");
    assert_eq!(small["run"]["delivered"], 100, "{small}");
    let big = tokio::time::timeout(Duration::from_secs(300), big.wait_with_output())
        .await
        .expect("the big run finishes")
        .expect("big run output");
    let big = finished(big);
    assert_eq!(big["run"]["delivered"], 600, "{big}");
    assert_eq!(big["run"]["id"], big_id, "{big}");
    assert_each_applied_once(&receiver, 700);

    let events = small["run"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let requeued = events
        .iter()
        .find(|e| {
            e["kind"] == "requeued"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("lost from the queue") && m.contains("batches 3;"))
        })
        .unwrap_or_else(|| panic!("the run says a lost task was re-enqueued: {small}"));
    let at = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
    };
    assert!(
        at(&requeued["at"]) < at(&big["run"]["finished_at"]),
        "the lost task was re-enqueued while the busy run still filled the queue: {requeued} vs {big}"
    );
}

/// The events of a finished run, from `ebb runs --json`.
async fn run_events(env: &TestEnv, run: &serde_json::Value) -> Vec<serde_json::Value> {
    let runs = env.ebb_json(&["runs"]).await;
    let by_id: HashMap<i64, &serde_json::Value> = runs
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| Some((r["id"].as_i64()?, r)))
        .collect();
    by_id
        .get(&run["id"].as_i64().expect("run id"))
        .and_then(|r| r["events"].as_array().cloned())
        .expect("the run's events in `ebb runs --json`")
}

/// A delivery that takes seconds (here a receiver answering after 4 s)
/// holds no transaction and no lock in the state database while it waits:
/// the batch is claimed, delivered outside any transaction, then settled
/// in a short one. (The whole delivery used to run inside one transaction
/// holding an advisory lock, for up to 30 minutes with a Salesforce bulk
/// job, which held back vacuum on the hottest tables.)
#[tokio::test]
async fn a_long_delivery_holds_no_transaction_open() {
    let receiver = Receiver::start().await;
    receiver.with(|s| s.latency = Duration::from_secs(4));
    let mut env = http_env(&receiver, 10, 2, "").await;
    env.start_worker(2);
    let mut run = env.ebb_command(&["run", "contacts", "--json"]);
    run.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let run = run.spawn().expect("spawn ebb run");
    eventually(Duration::from_secs(60), "a request in flight", || async {
        (receiver.with(|s| s.in_flight) >= 1).then_some(())
    })
    .await;
    // Well into the 4 s answer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.with(|s| s.in_flight) >= 1, "still delivering");
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&env.state)
        .await
        .expect("database name");
    let (open, advisory): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() \
                 AND xact_start < now() - interval '1 second'), \
                (SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                 WHERE d.datname = $1 AND l.locktype = 'advisory')",
    )
    .bind(&database)
    .fetch_one(&env.state)
    .await
    .expect("pg_stat_activity");
    assert_eq!(
        open, 0,
        "transactions open for over a second during the delivery"
    );
    assert_eq!(advisory, 0, "advisory locks held during the delivery");
    let claimed = TestEnv::scalar_i64(
        &env.state,
        "SELECT count(*) FROM ebb_batches WHERE lease_expires_at > now()",
    )
    .await;
    assert!(claimed >= 1, "the batch in flight is claimed instead");
    let out = tokio::time::timeout(Duration::from_secs(120), run.wait_with_output())
        .await
        .expect("the run finishes")
        .expect("run output");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run JSON");
    assert_eq!(summary["run"]["delivered"], 10, "{summary}");
}

/// A worker loses its claim while a delivery is in flight (here another
/// claim token is written over its own, as a takeover would): its renewal
/// notices, it stops the delivery and settles nothing, and the batch is
/// delivered once the claim it lost runs out. The run records the loss;
/// the receiver, deduplicating by idempotency key, has every record once.
#[tokio::test]
async fn a_worker_that_loses_its_claim_stops_and_the_batch_is_delivered_once() {
    let receiver = Receiver::start().await;
    receiver.with(|s| s.latency = Duration::from_secs(3));
    let mut env = http_env(&receiver, 5, 1, "").await;
    env.start_worker(1);
    let mut run = env.ebb_command(&["run", "contacts", "--json"]);
    run.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let run = run.spawn().expect("spawn ebb run");
    eventually(Duration::from_secs(60), "a request in flight", || async {
        (receiver.with(|s| s.in_flight) >= 1).then_some(())
    })
    .await;
    receiver.with(|s| s.latency = Duration::ZERO);
    let stolen = sqlx::query(
        "UPDATE ebb_batches SET claim_token = gen_random_uuid(), claimed_by = 'someone else' \
         WHERE lease_expires_at > now()",
    )
    .execute(&env.state)
    .await
    .expect("take the claim away");
    assert_eq!(stolen.rows_affected(), 1, "one batch was claimed");
    let out = tokio::time::timeout(Duration::from_secs(120), run.wait_with_output())
        .await
        .expect("the run finishes")
        .expect("run output");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run JSON");
    let run = &summary["run"];
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 5, "{run}");
    let events = run["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["kind"] == "claim_lost"),
        "the run records the lost claim: {run}"
    );
    receiver.with(|s| {
        assert_eq!(s.records.len(), 5);
        assert!(s.applied.values().all(|n| *n == 1), "{:?}", s.applied);
    });
}

/// apalis wakes an idle worker with its heartbeat timer; a timer that fired
/// while a fetch was in flight used to be lost when the fetch came back
/// empty, and the worker then slept for good while its process looked
/// healthy (two CI runs hung this way). With every Redis answer 80 ms late
/// and a 100 ms poll interval, most timers fire during a fetch.
#[tokio::test]
async fn an_idle_worker_on_a_slow_redis_link_keeps_fetching() {
    let redis = "127.0.0.1:6379".parse().expect("redis address");
    let slow = ebb_tests::slow_link::start(redis, Duration::from_millis(80)).await;
    let receiver = Receiver::start().await;
    let env = TestEnv::new_on_redis(
        &HTTP.replace("poll_interval_ms = 200", "poll_interval_ms = 100"),
        &[
            ("{RECEIVER_URL}", receiver.url()),
            ("{HEARTBEAT}", "5".to_owned()),
            ("{LIMITS}", String::new()),
        ],
        &format!("redis://{slow}"),
    )
    .await;
    seed_customers(&env.warehouse, 10).await;
    let mut env = env;
    env.start_worker(2);
    for round in 0..3 {
        // Idle long enough for dozens of heartbeats to race their fetches.
        tokio::time::sleep(Duration::from_secs(4)).await;
        if round > 0 {
            ebb_tests::exec(
                &env.warehouse,
                "UPDATE analytics.customers SET plan = plan || '+'",
            )
            .await;
        }
        // A parked worker never fetches the run's task, which waits in the
        // queue where no watchdog takes it for lost: the run would not end.
        let run = env.run_sync("contacts", &[]).await;
        assert_eq!(run["state"], "succeeded", "round {round}: {run}");
        assert_eq!(run["delivered"], 10, "round {round}: {run}");
    }
}
