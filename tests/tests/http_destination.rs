//! End-to-end syncs into the generic `http` destination, against the receiver
//! emulator in `ebb_tests::receiver`.

use std::time::Duration;

use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
headers = { Authorization = "Bearer ${EBB_TEST_CRM_TOKEN}", X-Api-Key = "${EBB_TEST_CRM_TOKEN}" }
batch_size = {BATCH}
max_retries = 4

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "crm"
mode = "mirror"
"#;

async fn env(receiver: &Receiver, rows: i64, batch: usize) -> TestEnv {
    // SAFETY: tests in this binary set the same value; no test reads a different one.
    unsafe { std::env::set_var("EBB_TEST_CRM_TOKEN", "tok-secret-42") };
    let env = TestEnv::new(
        CONFIG,
        &[
            ("{RECEIVER_URL}", receiver.url()),
            ("{BATCH}", batch.to_string()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, rows).await;
    env
}

#[tokio::test]
async fn bad_records_are_isolated_and_the_rest_delivered_with_headers() {
    let receiver = Receiver::start().await;
    let mut env = env(&receiver, 1000, 100).await;
    sqlx::query("UPDATE analytics.customers SET email = 'nope' WHERE id IN (17, 450, 999)")
        .execute(&env.warehouse)
        .await
        .unwrap();
    env.start_worker(4);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 997);
    assert_eq!(run["rejected"], 3);
    receiver.with(|s| {
        assert_eq!(s.records.len(), 997);
        assert!(
            !s.records.contains_key("17")
                && !s.records.contains_key("450")
                && !s.records.contains_key("999")
        );
        assert_eq!(s.records["18"]["email"], "user18@example.com");
        assert!(
            s.applied.values().all(|&n| n == 1),
            "no record applied twice"
        );
        assert_eq!(s.last_auth.as_deref(), Some("Bearer tok-secret-42"));
        // 10 batches + bisection of 3 of them: far fewer than one request per record.
        assert!(s.requests < 60, "requests: {}", s.requests);
    });
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let reasons: Vec<&str> = dlq
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("422") && r.contains("invalid email address")),
        "{reasons:?}"
    );

    // Once the run ended, its records keep no payload (the DLQ keeps those
    // of the refused ones).
    assert_eq!(payloads_held(&env).await, (0, 3));

    // Mirror deletes reach the receiver as `op: delete`.
    sqlx::query("DELETE FROM analytics.customers WHERE id <= 5")
        .execute(&env.warehouse)
        .await
        .unwrap();
    sqlx::query("UPDATE analytics.customers SET plan = 'enterprise' WHERE id = 6")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 6, "{run}");
    assert_eq!(run["rejected"], 3, "refused again: {run}");
    receiver.with(|s| {
        assert_eq!(s.records.len(), 992);
        assert_eq!(s.records["6"]["plan"], "enterprise");
    });
    assert_eq!(payloads_held(&env).await, (0, 3));

    // Fixed in the warehouse, the refused records are delivered, and a run
    // with nothing refused leaves no payload either.
    sqlx::query("UPDATE analytics.customers SET email = 'fixed' || id || '@example.com' WHERE email = 'nope'")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 3, "{run}");
    assert_eq!(run["rejected"], 0, "{run}");
    receiver.with(|s| assert_eq!(s.records.len(), 995));
    assert_eq!(payloads_held(&env).await, (0, 0));
    // Secrets stay out of logs.
    assert!(!env.worker_log(0).contains("tok-secret-42"));
}

/// Payloads still held: by the runs' records, by the open DLQ entries.
async fn payloads_held(env: &TestEnv) -> (i64, i64) {
    let records: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ebb_run_records WHERE payload IS NOT NULL")
            .fetch_one(&env.state)
            .await
            .expect("run records");
    let dead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ebb_dlq WHERE status = 'open' AND payload IS NOT NULL",
    )
    .fetch_one(&env.state)
    .await
    .expect("DLQ entries");
    (records, dead)
}

/// The settle that ends a run announces it (`NOTIFY ebb_run_ended` with the
/// run's id, sent at its commit): `ebb run` waits on that rather than on its
/// next poll.
#[tokio::test]
async fn a_run_ended_by_its_last_settle_is_announced() {
    let receiver = Receiver::start().await;
    let mut env = env(&receiver, 300, 100).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&env.state)
        .await
        .expect("listener on the state database");
    listener
        .listen("ebb_run_ended")
        .await
        .expect("LISTEN ebb_run_ended");
    env.start_worker(2);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 300, "{run}");
    let announced = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("an announcement within 10 s of the run's end")
        .expect("a notification");
    assert_eq!(announced.payload(), run["id"].to_string());
    // A no-change run ends at planning, with no settle: nothing more.
    let unchanged = env.run_sync("contacts", &[]).await;
    assert_eq!(unchanged["to_send"], 0, "{unchanged}");
    // A round trip on the listener's connection reads every notification
    // sent before it.
    sqlx::query("SELECT 1")
        .execute(&mut listener)
        .await
        .expect("a round trip on the listener's connection");
    let more = listener.next_buffered();
    assert!(more.is_none(), "one announcement per run: {more:?}");
}

#[tokio::test]
async fn unavailable_destination_is_retried_honouring_retry_after() {
    let receiver = Receiver::start().await;
    let mut env = env(&receiver, 50, 50).await;
    receiver.with(|s| s.unavailable_left = 2);
    env.start_worker(1);
    let started = std::time::Instant::now();
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 50);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two Retry-After: 1 answers were waited out"
    );
    receiver.with(|s| assert_eq!(s.requests, 3));
}

/// "The destination applied it, the connection dropped": the retry carries
/// the same idempotency keys, so the receiver drops the repeats and no
/// record takes effect twice.
#[tokio::test]
async fn lost_responses_are_retried_with_the_same_idempotency_keys() {
    let receiver = Receiver::start().await;
    let mut env = env(&receiver, 300, 100).await;
    receiver.with(|s| s.drop_after_apply_left = 2);
    env.start_worker(2);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 300);
    receiver.with(|s| {
        assert_eq!(s.drop_after_apply_left, 0, "both drops happened");
        assert_eq!(s.records.len(), 300);
        assert_eq!(
            s.duplicates_dropped, 200,
            "the two applied-then-dropped batches were resent with unchanged keys"
        );
        assert!(
            s.applied.values().all(|&n| n == 1),
            "no record applied twice"
        );
        assert_eq!(
            s.requests_without_key, 0,
            "every request has Idempotency-Key"
        );
    });

    // A new version of a record gets a new key and is applied.
    sqlx::query("UPDATE analytics.customers SET plan = 'enterprise' WHERE id = 7")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 1, "{run}");
    receiver.with(|s| {
        assert_eq!(s.applied["7"], 2);
        assert_eq!(s.records["7"]["plan"], "enterprise");
    });
}

#[tokio::test]
async fn exhausted_retries_fail_the_run_and_dead_letter_with_the_last_error() {
    let receiver = Receiver::start().await;
    let mut env = env(&receiver, 10, 10).await;
    receiver.with(|s| s.unavailable_left = 1000);
    env.start_worker(1);
    let out = env.ebb(&["run", "contacts", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "a failed run exits 1");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["run"]["state"], "failed");
    assert_eq!(summary["run"]["failed"], 10);
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let entries = dlq.as_array().unwrap();
    assert_eq!(entries.len(), 10);
    for e in entries {
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.contains("retries exhausted after 5 attempts") && reason.contains("503"),
            "{reason}"
        );
        assert_eq!(e["kind"], "failed");
    }
    assert_eq!(
        TestEnv::scalar_i64(&env.state, "SELECT count(*) FROM ebb_ledger").await,
        0,
        "nothing marked delivered"
    );
    // Once the destination recovers, the next run delivers them.
    receiver.with(|s| s.unavailable_left = 0);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 10, "{run}");
    assert_eq!(
        env.ebb_json(&["dlq", "list"])
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn worker_sigterm_mid_run_loses_nothing() {
    let receiver = Receiver::start().await;
    let mut env = env(&receiver, 3000, 30).await;
    receiver.with(|s| s.latency = Duration::from_millis(40));
    env.start_worker(2);
    env.start_worker(2);
    let run = {
        let env_ref = &env;
        let run = tokio::spawn({
            let config = env_ref.config_path();
            async move {
                tokio::process::Command::new(ebb_tests::bin("ebb"))
                    .arg("--config")
                    .arg(config)
                    .args(["run", "contacts", "--json"])
                    .env("RUST_LOG", "warn")
                    .output()
                    .await
                    .unwrap()
            }
        });
        // Wait until delivery is under way, then stop one worker.
        for _ in 0..100 {
            if receiver.with(|s| s.records.len()) > 300 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let in_flight_before = receiver.with(|s| s.records.len());
        assert!(
            in_flight_before < 3000,
            "the run finished before SIGTERM; make it slower"
        );
        let clean = env.terminate_worker(0).await;
        assert!(clean, "worker exits 0 on SIGTERM");
        tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .unwrap()
            .unwrap()
    };
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["run"]["state"], "succeeded", "{summary}");
    assert_eq!(summary["run"]["delivered"], 3000);
    receiver.with(|s| {
        assert_eq!(s.records.len(), 3000);
    });
    assert_eq!(
        TestEnv::scalar_i64(&env.state, "SELECT count(*) FROM ebb_ledger").await,
        3000
    );
    assert!(
        env.worker_log(0).contains("worker stopped cleanly"),
        "{}",
        env.worker_log(0)
    );
}

/// A receiver that moved answers with a redirect to another host. Ebb
/// follows none: a 301/302/303 would turn the `POST` into a `GET` whose 200
/// counted as delivered, and any redirect would carry the `X-Api-Key`
/// header to the other host. Every record fails with a reason naming the
/// new location; nothing reaches the other host; nothing is in the ledger.
#[tokio::test]
async fn redirects_are_not_followed_and_nothing_is_marked_delivered() {
    let moved = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    let mut env = env(&moved, 20, 10).await;
    env.start_worker(2);
    for status in [301, 302, 303, 307, 308] {
        let location = format!("http://localhost:{}/elsewhere", elsewhere.addr.port());
        moved.with(|s| s.redirect = Some((status, location.clone())));
        let out = env.ebb(&["run", "contacts", "--json"]).await;
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run JSON");
        let run = &summary["run"];
        assert_eq!(run["state"], "failed", "{status}: {run}");
        assert_eq!(run["delivered"], 0, "{status}: {run}");
        assert_eq!(run["failed"], 20, "{status}: {run}");
        assert_eq!(run["retries"], 0, "a redirect is not retried: {run}");
        let dlq = env.ebb_json(&["dlq", "list"]).await;
        let reason = ebb_tests::dlq_reason(&dlq, "1");
        assert!(
            reason.contains(&format!("HTTP {status}"))
                && reason.contains(&format!("redirects to {location}")),
            "{reason}"
        );
    }
    elsewhere.with(|s| {
        assert!(
            s.elsewhere.is_empty(),
            "requests reached the other host: {:?}",
            s.elsewhere
        )
    });
    let ledger = TestEnv::scalar_i64(&env.state, "SELECT count(*) FROM ebb_ledger").await;
    assert_eq!(ledger, 0, "nothing is recorded as delivered");
}

/// A receiver that echoes the request's headers in its error body: the DLQ
/// keeps the receiver's error without the token.
#[tokio::test]
async fn a_token_echoed_in_an_error_body_stays_out_of_the_dlq() {
    let receiver = Receiver::start().await;
    receiver.with(|s| s.echo_headers = true);
    let mut env = env(&receiver, 10, 10).await;
    sqlx::query("UPDATE analytics.customers SET email = 'nope' WHERE id = 3")
        .execute(&env.warehouse)
        .await
        .unwrap();
    env.start_worker(1);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["rejected"], 1, "{run}");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let reason = ebb_tests::dlq_reason(&dlq, "3");
    assert!(reason.contains("invalid email address"), "{reason}");
    assert!(reason.contains("x-api-key"), "the echo is kept: {reason}");
    assert!(
        !reason.contains("tok-secret-42"),
        "the token leaked into the DLQ: {reason}"
    );
    assert!(reason.contains("[redacted]"), "{reason}");
}
