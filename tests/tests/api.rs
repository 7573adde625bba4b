//! `ebb serve`'s API (`/api/v1`), through the real `ebb serve`, real
//! workers, Postgres and Redis: auth, triggering a run and reading it back
//! with its records, trigger idempotency, cancelling a run mid-way,
//! pausing a schedule across a restart, and the DLQ.

use std::time::Duration;

use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, create_replica, eventually, exec, free_port, seed_customers};
use reqwest::StatusCode;
use serde_json::{Value, json};

const OPS: &str = "ops-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
requeue_after_secs = 20

[api]
tokens = [
  { name = "ops", token = "ops-token-0123456789abcdef", role = "operator" },
  { name = "grafana", token = "viewer-token-0123456789abcdef", role = "viewer" },
]
protect_metrics = true

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 50

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 10
max_concurrency = 1
adaptive_concurrency = false

[syncs.customers]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "replica"
mode = "mirror"
{SCHEDULE}

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "crm"
"#;

/// A test environment with `ebb serve` running.
struct Served {
    env: TestEnv,
    receiver: Receiver,
    base: String,
    daemon: tokio::process::Child,
    port: u16,
}

impl Served {
    async fn start(schedule: &str, rows: i64) -> Served {
        let receiver = Receiver::start().await;
        let env = TestEnv::new(
            CONFIG,
            &[
                ("{RECEIVER_URL}", receiver.url()),
                ("{SCHEDULE}", schedule.to_owned()),
            ],
        )
        .await;
        seed_customers(&env.warehouse, rows).await;
        create_replica(&env.app).await;
        let port = free_port();
        let daemon = env.serve(port, &[]);
        let served = Served {
            env,
            receiver,
            base: format!("http://127.0.0.1:{port}"),
            daemon,
            port,
        };
        served.wait_until_up().await;
        served
    }

    async fn wait_until_up(&self) {
        let url = format!("{}/healthz", self.base);
        eventually(Duration::from_secs(30), "ebb serve up", || async {
            reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
    }

    async fn restart(&mut self) {
        self.daemon.kill().await.expect("stop ebb serve");
        self.daemon = self.env.serve(self.port, &[]);
        self.wait_until_up().await;
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(60));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("API call");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .call(reqwest::Method::GET, path, Some(token), None, &[])
            .await;
        (status, body)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self
            .call(reqwest::Method::POST, path, Some(token), Some(body), &[])
            .await;
        (status, body)
    }

    /// Triggers a run of `customers` and waits for it to end.
    async fn trigger_and_wait(&self) -> Value {
        let (status, run) = self
            .post("/api/v1/syncs/customers/runs", OPS, json!({}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{run}");
        let id = run["id"].as_i64().expect("run id");
        self.finished_run(id).await
    }

    /// The run, once it has ended.
    async fn finished_run(&self, id: i64) -> Value {
        eventually(Duration::from_secs(120), "the run to end", || async {
            let (status, run) = self.get(&format!("/api/v1/runs/{id}"), VIEWER).await;
            (status == StatusCode::OK
                && ["succeeded", "failed", "cancelled"]
                    .contains(&run["state"].as_str().unwrap_or("")))
            .then_some(run)
        })
        .await
    }
}

fn problem(headers: &reqwest::header::HeaderMap, body: &Value, status: u16) {
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:ebb:problem:"))
            && body["title"].is_string()
            && body["detail"].is_string(),
        "an RFC 9457 problem document: {body}"
    );
}

#[tokio::test]
async fn every_route_needs_a_token_and_operator_routes_an_operators() {
    let served = Served::start("", 20).await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let (status, headers, body) = served
        .call(get.clone(), "/api/v1/syncs", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    problem(&headers, &body, 401);
    assert_eq!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"ebb\"")
    );
    let (status, headers, body) = served
        .call(
            get.clone(),
            "/api/v1/runs",
            Some("not-a-known-token-at-all"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    problem(&headers, &body, 401);

    // A viewer reads...
    let (status, syncs) = served.get("/api/v1/syncs", VIEWER).await;
    assert_eq!(status, StatusCode::OK, "{syncs}");
    let names: Vec<&str> = syncs["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["contacts", "customers"]);
    assert_eq!(syncs["items"][1]["health"], "never_run");
    assert_eq!(syncs["items"][1]["destination_type"], "postgres");
    let (status, destinations) = served.get("/api/v1/destinations", VIEWER).await;
    assert_eq!(status, StatusCode::OK, "{destinations}");
    assert_eq!(destinations["items"][0]["destination"], "crm");
    assert_eq!(destinations["items"][0]["max_concurrency"], 1);

    // ...but changes nothing.
    for (path, body) in [
        ("/api/v1/syncs/customers/runs", json!({})),
        ("/api/v1/syncs/customers/pause", json!({})),
        ("/api/v1/runs/1/cancel", json!({})),
        ("/api/v1/dlq/replay", json!({"sync": "customers"})),
        ("/api/v1/dlq/dismiss", json!({"ids": [1]})),
    ] {
        let (status, headers, body) = served
            .call(post.clone(), path, Some(VIEWER), Some(body), &[])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        problem(&headers, &body, 403);
    }
    let (status, runs) = served.get("/api/v1/runs", OPS).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs["items"], json!([]), "a viewer started nothing");

    // Unknown things are problems too.
    let (status, headers, body) = served
        .call(get.clone(), "/api/v1/syncs/nope", Some(VIEWER), None, &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    problem(&headers, &body, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("contacts, customers"),
        "{body}"
    );
    let (status, headers, body) = served
        .call(get.clone(), "/api/v1/runs?limit=0", Some(VIEWER), None, &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    problem(&headers, &body, 400);

    // The OpenAPI document, and /metrics behind a token.
    let (status, doc) = served.get("/api/v1/openapi.json", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for path in [
        "/api/v1/syncs/{name}/runs",
        "/api/v1/runs/{id}/records",
        "/api/v1/runs/{id}/cancel",
        "/api/v1/dlq/replay",
        "/api/v1/destinations",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    let (status, _, _) = served.call(get.clone(), "/metrics", None, None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "protect_metrics");
    let (status, _, metrics) = served.call(get, "/metrics", Some(VIEWER), None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.as_str().unwrap_or("").contains("ebb_runs_active"));
}

#[tokio::test]
async fn a_triggered_run_is_read_back_with_its_records_and_a_retried_trigger_returns_it() {
    let mut served = Served::start("", 100).await;
    exec(
        &served.env.warehouse,
        "UPDATE analytics.customers SET email = 'nope' WHERE id = 7",
    )
    .await;
    served.env.start_worker(2);

    let key = [("Idempotency-Key", "nightly-2026-12-02")];
    let (status, headers, run) = served
        .call(
            reqwest::Method::POST,
            "/api/v1/syncs/customers/runs",
            Some(OPS),
            None,
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_i64().expect("run id");
    assert_eq!(run["trigger"], "api:ops");
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/runs/{id}").as_str())
    );
    let (status, headers, again) = served
        .call(
            reqwest::Method::POST,
            "/api/v1/syncs/customers/runs",
            Some(OPS),
            Some(json!({})),
            &key,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["id"], id, "a retried trigger returns the same run");
    assert_eq!(
        headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );

    let run = served.finished_run(id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        (run["delivered"].as_i64(), run["rejected"].as_i64()),
        (Some(99), Some(1))
    );
    let (_, list) = served
        .get("/api/v1/runs?sync=customers&state=succeeded", VIEWER)
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // Its records, searchable by key, the rejected one with its reason.
    let (status, seven) = served
        .get(&format!("/api/v1/runs/{id}/records?key=7"), VIEWER)
        .await;
    assert_eq!(status, StatusCode::OK, "{seven}");
    assert_eq!(seven["items"][0]["outcome"], "rejected", "{seven}");
    assert!(
        seven["items"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("email")),
        "{seven}"
    );
    // Paged by cursor, in key order, every record once.
    let mut keys = Vec::new();
    let mut path = format!("/api/v1/runs/{id}/records?outcome=delivered&limit=40");
    loop {
        let (status, page) = served.get(&path, VIEWER).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        keys.extend(
            page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["record_key"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path =
                    format!("/api/v1/runs/{id}/records?outcome=delivered&limit=40&cursor={cursor}")
            }
            None => break,
        }
    }
    let mut expected: Vec<String> = (1..=100)
        .filter(|i| *i != 7)
        .map(|i| i.to_string())
        .collect();
    expected.sort();
    assert_eq!(
        keys, expected,
        "the delivered records, each once, in key order"
    );

    // The sync's state says so too.
    let (_, sync) = served.get("/api/v1/syncs/customers", VIEWER).await;
    assert_eq!(sync["health"], "healthy", "{sync}");
    assert_eq!(sync["last_run"]["id"], id);
    assert_eq!(sync["open_dlq"], 1);

    // A dry run plans without a run.
    let (status, plan) = served
        .post(
            "/api/v1/syncs/customers/runs",
            OPS,
            json!({"dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["unchanged"], 99, "{plan}");
    assert_eq!(
        plan["budget"]["requests"], 0,
        "a database takes statements, not API requests: {plan}"
    );
    let (_, list) = served.get("/api/v1/runs?sync=customers", VIEWER).await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(1),
        "a dry run records no run"
    );
}

/// The pages of a run's records, in key order, when its batches' keys
/// interleave: a mirror run numbers its upserts into batches in key order
/// and its removals after them, so a removed key sorts between the keys
/// of an earlier batch.
#[tokio::test]
async fn a_runs_records_are_paged_in_key_order_across_interleaved_batches() {
    let mut served = Served::start("", 100).await;
    served.env.start_worker(2);
    let first = served.trigger_and_wait().await;
    assert_eq!(first["delivered"], 100, "{first}");
    exec(
        &served.env.warehouse,
        "DELETE FROM analytics.customers WHERE id <= 5",
    )
    .await;
    exec(
        &served.env.warehouse,
        "UPDATE analytics.customers SET email = 'new-' || email WHERE id > 40",
    )
    .await;
    let run = served.trigger_and_wait().await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 65, "60 changed, 5 removed: {run}");
    let id = run["id"].as_i64().expect("run id");

    let mut listed: Vec<(String, i64, String)> = Vec::new();
    let mut path = format!("/api/v1/runs/{id}/records?limit=7");
    loop {
        let (status, page) = served.get(&path, VIEWER).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for record in page["items"].as_array().into_iter().flatten() {
            listed.push((
                record["record_key"].as_str().unwrap_or_default().to_owned(),
                record["batch_no"].as_i64().unwrap_or(-1),
                record["op"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/runs/{id}/records?limit=7&cursor={cursor}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = (41..=100).map(|i| i.to_string()).collect();
    expected.extend((1..=5).map(|i| i.to_string()));
    expected.sort();
    let keys: Vec<&str> = listed.iter().map(|(key, _, _)| key.as_str()).collect();
    assert_eq!(keys, expected, "every record of the run once, in key order");
    let batches: Vec<i64> = listed.iter().map(|(_, batch, _)| *batch).collect();
    assert!(
        batches.windows(2).any(|w| w[0] > w[1]),
        "the run's batches interleave in key order (else this proves nothing): {listed:?}"
    );
    let removed: Vec<&str> = listed
        .iter()
        .filter(|(_, _, op)| op == "delete")
        .map(|(key, _, _)| key.as_str())
        .collect();
    assert_eq!(removed, ["1", "2", "3", "4", "5"]);

    // A key is found in whichever batch holds it.
    for key in ["3", "100", "99"] {
        let (status, found) = served
            .get(&format!("/api/v1/runs/{id}/records?key={key}"), VIEWER)
            .await;
        assert_eq!(status, StatusCode::OK, "{found}");
        let items = found["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "{found}");
        assert_eq!(items[0]["record_key"], key, "{found}");
        assert_eq!(items[0]["outcome"], "delivered", "{found}");
    }
    let (_, none) = served
        .get(&format!("/api/v1/runs/{id}/records?key=20"), VIEWER)
        .await;
    assert_eq!(
        none["items"],
        json!([]),
        "an unchanged key is not in the run: {none}"
    );
}

#[tokio::test]
async fn a_cancelled_run_sends_nothing_more_and_loses_nothing() {
    let mut served = Served::start("", 200).await;
    served
        .receiver
        .with(|s| s.latency = Duration::from_millis(300));
    served.env.start_worker(1);
    let (status, run) = served
        .post("/api/v1/syncs/contacts/runs", OPS, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_i64().expect("run id");
    eventually(
        Duration::from_secs(60),
        "a few batches delivered",
        || async {
            let (_, run) = served.get(&format!("/api/v1/runs/{id}"), VIEWER).await;
            (run["batches_settled"].as_i64() >= Some(3)).then_some(())
        },
    )
    .await;
    let (status, conflict) = served
        .post("/api/v1/syncs/contacts/runs", OPS, json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one active run per sync: {conflict}"
    );

    let (status, cancelled) = served
        .post(&format!("/api/v1/runs/{id}/cancel"), OPS, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert!(
        cancelled["error"]
            .as_str()
            .is_some_and(|e| e.contains("cancelled by api:ops")),
        "{cancelled}"
    );
    let (status, again) = served
        .post(&format!("/api/v1/runs/{id}/cancel"), OPS, json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    // The batch in flight settles; nothing after it is sent.
    let received = eventually(Duration::from_secs(30), "deliveries to stop", || async {
        let before = served.receiver.with(|s| s.records.len());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = served.receiver.with(|s| s.records.len());
        (before == after).then_some(after)
    })
    .await;
    assert!(
        received < 200,
        "the run was cancelled mid-way: {received} received"
    );
    let ledger = TestEnv::scalar_i64(
        &served.env.state,
        "SELECT count(*) FROM ebb_ledger WHERE sync_name = 'contacts'",
    )
    .await;
    assert_eq!(
        ledger, received as i64,
        "what was sent is in the ledger, and nothing else"
    );
    let run = served.get(&format!("/api/v1/runs/{id}"), VIEWER).await.1;
    assert_eq!(
        run["state"], "cancelled",
        "a settling batch does not end it otherwise: {run}"
    );

    // The next run sends the rest, and nothing twice.
    served.receiver.with(|s| s.latency = Duration::ZERO);
    let (status, next) = served
        .post("/api/v1/syncs/contacts/runs", OPS, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{next}");
    let next = served
        .finished_run(next["id"].as_i64().expect("run id"))
        .await;
    assert_eq!(next["state"], "succeeded", "{next}");
    assert_eq!(
        next["delivered"].as_i64(),
        Some(200 - received as i64),
        "{next}"
    );
    served.receiver.with(|s| {
        assert_eq!(s.records.len(), 200);
        assert!(
            s.applied.values().all(|n| *n == 1),
            "every record applied once"
        );
    });
}

#[tokio::test]
async fn a_paused_schedule_stays_paused_across_a_restart() {
    // Every second (6-field cron); paused from the CLI before serve starts.
    let paused = TestEnv::new(
        CONFIG,
        &[
            ("{RECEIVER_URL}", "http://127.0.0.1:9/unused".to_owned()),
            ("{SCHEDULE}", "schedule = \"* * * * * *\"".to_owned()),
        ],
    )
    .await;
    seed_customers(&paused.warehouse, 20).await;
    create_replica(&paused.app).await;
    let out = paused
        .ebb(&["pause", "customers", "--note", "migration"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let mut served = Served {
        daemon: paused.serve(port, &[]),
        env: paused,
        receiver: Receiver::start().await,
        base: format!("http://127.0.0.1:{port}"),
        port,
    };
    served.wait_until_up().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, sync) = served.get("/api/v1/syncs/customers", VIEWER).await;
    assert_eq!(sync["paused"], true, "{sync}");
    assert_eq!(sync["pause"]["changed_by"], "cli");
    assert_eq!(sync["pause"]["note"], "migration");
    assert_eq!(sync["next_run_at"], Value::Null, "{sync}");

    served.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, runs) = served.get("/api/v1/runs", VIEWER).await;
    assert_eq!(runs["items"], json!([]), "no tick fired while paused");

    let (status, resumed) = served
        .post(
            "/api/v1/syncs/customers/resume",
            OPS,
            json!({"note": "done"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["pause"]["changed_by"], "api:ops");
    let run = eventually(Duration::from_secs(30), "a scheduled run", || async {
        let (_, runs) = served.get("/api/v1/runs", VIEWER).await;
        runs["items"].as_array().and_then(|r| r.first().cloned())
    })
    .await;
    assert_eq!(run["trigger"], "schedule", "{run}");
}

#[tokio::test]
async fn dlq_entries_are_listed_replayed_dismissed_and_resolved() {
    let mut served = Served::start("", 50).await;
    exec(
        &served.env.warehouse,
        "UPDATE analytics.customers SET email = 'bad-' || id WHERE id IN (7, 8, 9)",
    )
    .await;
    served.env.start_worker(2);
    let run = served.env.run_sync("customers", &[]).await;
    assert_eq!(run["rejected"], 3, "{run}");

    let (status, open) = served
        .get("/api/v1/dlq?sync=customers&limit=2", VIEWER)
        .await;
    assert_eq!(status, StatusCode::OK, "{open}");
    assert_eq!(open["items"].as_array().map(Vec::len), Some(2));
    let cursor = open["next_cursor"].as_str().expect("a second page");
    let (_, rest) = served
        .get(
            &format!("/api/v1/dlq?sync=customers&limit=2&cursor={cursor}"),
            VIEWER,
        )
        .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null);
    let (_, by_reason) = served
        .get("/api/v1/dlq?reason=CHECK%20CONSTRAINT", VIEWER)
        .await;
    assert_eq!(
        by_reason["items"].as_array().map(Vec::len),
        Some(3),
        "{by_reason}"
    );
    let id_of = |key: &str| -> i64 {
        open["items"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(rest["items"].as_array().into_iter().flatten())
            .find(|e| e["record_key"] == key)
            .and_then(|e| e["id"].as_i64())
            .unwrap_or_else(|| panic!("no entry for {key}"))
    };
    let (seven, eight) = (id_of("7"), id_of("8"));

    // The destination accepts them now: replay one.
    exec(
        &served.env.app,
        "ALTER TABLE public.customers_synced DROP CONSTRAINT customers_synced_email_check",
    )
    .await;
    let (status, replayed) = served
        .post("/api/v1/dlq/replay", OPS, json!({"ids": [seven]}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    let replay = served
        .finished_run(replayed["runs"][0]["id"].as_i64().expect("replay run"))
        .await;
    assert_eq!(replay["state"], "succeeded", "{replay}");
    assert_eq!(replay["kind"], "replay");
    assert_eq!(replay["trigger"], "dlq-replay:api:ops", "{replay}");
    assert_eq!(replay["delivered"], 1);
    let (_, entry) = served.get(&format!("/api/v1/dlq/{seven}"), VIEWER).await;
    assert_eq!(entry["status"], "resolved", "{entry}");

    let (status, closed) = served
        .post(
            "/api/v1/dlq/dismiss",
            OPS,
            json!({"ids": [eight], "note": "test data"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["ids"], json!([eight]));
    let (_, entry) = served.get(&format!("/api/v1/dlq/{eight}"), VIEWER).await;
    assert_eq!(entry["status"], "discarded");
    assert_eq!(entry["resolution"], "dismissed by api:ops: test data");

    let (status, none) = served
        .post(
            "/api/v1/dlq/resolve",
            OPS,
            json!({"sync": "customers", "reason": "no such reason", "note": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no entry matches: {none}");
    let (status, closed) = served
        .post(
            "/api/v1/dlq/resolve",
            OPS,
            json!({"sync": "customers", "reason": "CHECK constraint", "note": "fixed by hand"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(
        closed["ids"].as_array().map(Vec::len),
        Some(1),
        "only #9 was still open"
    );
    let (_, open) = served.get("/api/v1/dlq", VIEWER).await;
    assert_eq!(open["items"], json!([]));

    let (status, conflict) = served
        .post("/api/v1/dlq/replay", OPS, json!({"ids": [eight]}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a closed entry is not replayed: {conflict}"
    );
    let (status, both) = served
        .post(
            "/api/v1/dlq/dismiss",
            OPS,
            json!({"ids": [eight], "sync": "customers"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "ids or a sync, not both: {both}"
    );
}
