//! Triggers beyond cron, through the real `ebb serve` and workers: a chain
//! of syncs that run after one another (`after`), and dbt: a model read
//! from a dbt manifest, started by dbt Cloud's signed webhook.

use std::time::Duration;

use ebb_tests::{TestEnv, create_replica, eventually, free_port, seed_customers};
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VIEWER: &str = "viewer-token-0123456789abcdef";
const DBT_SECRET: &str = "dbt-webhook-secret-7f3a";

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
requeue_after_secs = 20

[api]
tokens = [{ name = "grafana", token = "viewer-token-0123456789abcdef", role = "viewer" }]

[dbt]
manifest = "target/manifest.json"
webhook_secret = "dbt-webhook-secret-7f3a"
jobs = { "42" = ["customers"] }

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 50

[syncs.a_first]
source = "warehouse"
model = { dbt = "customers" }
primary_key = "id"
destination = "replica"
[syncs.a_first.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"

[syncs.b_second]
source = "warehouse"
model = "SELECT id, email, first_name FROM analytics.customers WHERE id <= 30"
primary_key = "id"
destination = "replica"
after = ["a_first"]
[syncs.b_second.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"

[syncs.c_third]
source = "warehouse"
model = "SELECT id, email, first_name FROM analytics.customers WHERE id <= 10"
primary_key = "id"
destination = "replica"
after = ["b_second"]
[syncs.c_third.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
"#;

/// A dbt manifest with one model, `customers`, built as the warehouse's
/// `analytics.customers`.
fn manifest() -> Value {
    json!({
        "metadata": {"dbt_version": "1.8.0"},
        "nodes": {
            "model.shop.customers": {
                "resource_type": "model",
                "name": "customers",
                "relation_name": "\"analytics\".\"customers\"",
                "compiled_code": "select * from raw.customers",
                "original_file_path": "models/customers.sql"
            },
            "test.shop.not_null_customers_id": {
                "resource_type": "test",
                "name": "not_null_customers_id"
            }
        }
    })
}

async fn env() -> TestEnv {
    let env = TestEnv::new(CONFIG, &[]).await;
    std::fs::create_dir_all(env.dir.join("target")).expect("target dir");
    std::fs::write(env.dir.join("target/manifest.json"), manifest().to_string()).expect("manifest");
    seed_customers(&env.warehouse, 60).await;
    create_replica(&env.app).await;
    env
}

async fn runs(base: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/runs?limit=100"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("GET /runs");
    let page: Value = response.json().await.expect("runs JSON");
    page["items"].as_array().cloned().unwrap_or_default()
}

async fn serve(env: &TestEnv) -> (tokio::process::Child, String) {
    let port = free_port();
    let daemon = env.serve(port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    let health = format!("{base}/healthz");
    eventually(Duration::from_secs(30), "ebb serve up", || async {
        reqwest::get(&health)
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    (daemon, base)
}

fn signed(body: &Value, secret: &str) -> (String, String) {
    let body = body.to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (body, signature)
}

async fn webhook(base: &str, event: &Value, secret: &str) -> (StatusCode, Value) {
    let (body, signature) = signed(event, secret);
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/webhooks/dbt"))
        .header("authorization", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST webhook");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn completed(job: &str, run: &str, status: &str) -> Value {
    json!({
        "accountId": 1,
        "eventId": format!("wev_{run}"),
        "timestamp": "2026-12-02T06:00:00Z",
        "eventType": "job.run.completed",
        "webhookName": "ebb",
        "data": {
            "jobId": job, "jobName": "nightly", "runId": run, "environmentId": "7",
            "runStatus": status, "runStatusMessage": "None",
            "runStartedAt": "2026-12-02T05:58:00Z", "runFinishedAt": "2026-12-02T05:59:59Z"
        }
    })
}

fn finished(run: &Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap_or(""))
}

#[tokio::test]
async fn a_dbt_job_starts_its_models_sync_and_the_chain_after_it_runs_in_order() {
    let mut env = env().await;
    env.start_worker(2);
    let (_daemon, base) = serve(&env).await;

    // Signed by someone else, or not at all: refused.
    let event = completed("42", "9001", "Success");
    let (status, body) = webhook(&base, &event, "not-the-secret").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["status"], 401);
    let unsigned = reqwest::Client::new()
        .post(format!("{base}/api/v1/webhooks/dbt"))
        .json(&event)
        .send()
        .await
        .expect("POST");
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert!(runs(&base).await.is_empty(), "nothing started");

    // A failed dbt run rebuilt nothing.
    let (status, body) = webhook(&base, &completed("42", "9000", "Error"), DBT_SECRET).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        body["ignored"]
            .as_str()
            .is_some_and(|why| why.contains("`Error`")),
        "{body}"
    );

    // Job 42 builds `customers`: the sync reading it starts, once, however
    // often dbt Cloud delivers the event.
    let (status, body) = webhook(&base, &event, DBT_SECRET).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["triggered"][0]["sync"], "a_first", "{body}");
    let first_run = body["triggered"][0]["run_id"].as_i64().expect("run id");
    let (_, again) = webhook(&base, &event, DBT_SECRET).await;
    assert_eq!(again["triggered"][0]["run_id"], first_run, "{again}");

    // Then b after a, and c after b.
    let all = eventually(Duration::from_secs(120), "the chain to finish", || async {
        let runs = runs(&base).await;
        (runs.len() == 3 && runs.iter().all(finished)).then_some(runs)
    })
    .await;
    let by_sync = |sync: &str| -> Value {
        all.iter()
            .find(|r| r["sync_name"] == sync)
            .cloned()
            .unwrap_or_else(|| panic!("no run of {sync}: {all:?}"))
    };
    let (a, b, c) = (by_sync("a_first"), by_sync("b_second"), by_sync("c_third"));
    assert_eq!(a["trigger"], "dbt:42");
    assert_eq!(b["trigger"], "after:a_first");
    assert_eq!(c["trigger"], "after:b_second");
    for run in [&a, &b, &c] {
        assert_eq!(run["state"], "succeeded", "{run}");
    }
    let at = |run: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(run[field].as_str().unwrap_or_default())
            .expect("a timestamp")
    };
    assert!(at(&b, "created_at") > at(&a, "finished_at"), "b after a");
    assert!(at(&c, "created_at") > at(&b, "finished_at"), "c after b");
    assert_eq!(a["delivered"], 60);
    assert_eq!(b["delivered"], 30);
    assert_eq!(c["delivered"], 10);

    // And nothing more: each ran once for a's one success.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runs(&base).await.len(), 3, "no sync ran twice");

    // A job not listed in [dbt].jobs starts every dbt-model sync.
    let (status, body) = webhook(&base, &completed("77", "9100", "Success"), DBT_SECRET).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["triggered"][0]["sync"], "a_first", "{body}");
    // Other events are ignored.
    let mut started = completed("42", "9200", "Running");
    started["eventType"] = json!("job.run.started");
    let (_, body) = webhook(&base, &started, DBT_SECRET).await;
    assert!(body["ignored"].is_string(), "{body}");
}

#[tokio::test]
async fn check_reads_dbt_models_and_warns_when_the_manifest_is_older_than_a_model() {
    let env = env().await;
    let out = env.ebb(&["check"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("sync `a_first`: model from dbt model `customers`"),
        "{stdout}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");

    // The model's file changes after the manifest was written.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::create_dir_all(env.dir.join("models")).expect("models dir");
    std::fs::write(env.dir.join("models/customers.sql"), "select 1").expect("model file");
    let out = env.ebb(&["check"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning, not a problem: {stderr}");
    assert!(
        stderr.contains("models/customers.sql changed after the dbt manifest"),
        "{stderr}"
    );
}
