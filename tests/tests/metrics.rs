//! Counters and histograms: what `/metrics` of `ebb serve` and of each
//! `ebb-worker --listen` says moves by exactly what a run did.

use std::time::Duration;

use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, eventually, exec, free_port, seed_customers};

const OPS: &str = "ops-token-0123456789abcdef";

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
requeue_after_secs = 20

[api]
tokens = [{ name = "ops", token = "ops-token-0123456789abcdef", role = "operator" }]

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 10

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "crm"
"#;

/// The samples of a Prometheus text page whose name is `name` and whose
/// labels include every one of `labels`, summed.
fn sum(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name && labels.iter().all(|l| series.contains(l)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

async fn page(url: &str) -> String {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(OPS)
        .send()
        .await
        .expect("GET /metrics");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.text().await.expect("metrics text")
}

#[tokio::test]
async fn counters_move_by_exactly_what_a_run_did() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::new(CONFIG, &[("{RECEIVER_URL}", receiver.url())]).await;
    seed_customers(&env.warehouse, 100).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'nope' WHERE id IN (5, 55)",
    )
    .await;
    // Three requests answered 429 before the receiver takes any.
    receiver.with(|s| s.throttle_left = 3);
    let workers: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    for listen in &workers {
        env.start_worker_with(2, &[("EBB_WORKER_LISTEN", listen.as_str())]);
    }
    let port = free_port();
    let _daemon = env.serve(port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(30), "ebb serve up", || async {
        reqwest::get(format!("{base}/healthz"))
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;

    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/syncs/contacts/runs"))
        .bearer_auth(OPS)
        .send()
        .await
        .expect("trigger");
    let run: serde_json::Value = response.json().await.expect("run");
    let id = run["id"].as_i64().expect("run id");
    let run = eventually(Duration::from_secs(120), "the run to end", || async {
        let run = env.ebb_json(&["runs"]).await;
        run.as_array()
            .and_then(|runs| runs.iter().find(|r| r["id"] == id).cloned())
            .filter(|r| r["state"] == "succeeded" || r["state"] == "failed")
    })
    .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        (run["delivered"].as_i64(), run["rejected"].as_i64()),
        (Some(98), Some(2))
    );

    // Summed over both workers: what the run did, exactly.
    let mut pages = Vec::new();
    for listen in &workers {
        pages.push(page(&format!("http://{listen}/metrics")).await);
    }
    let total =
        |name: &str, labels: &[&str]| -> f64 { pages.iter().map(|p| sum(p, name, labels)).sum() };
    let sync = "sync=\"contacts\"";
    assert_eq!(
        total("ebb_records_total", &[sync, "outcome=\"delivered\""]),
        98.0
    );
    assert_eq!(
        total("ebb_records_total", &[sync, "outcome=\"rejected\""]),
        2.0
    );
    assert_eq!(
        total("ebb_records_total", &[sync, "outcome=\"failed\""]),
        0.0
    );
    assert_eq!(
        total(
            "ebb_destination_requests_total",
            &["destination=\"crm\"", "class=\"throttled\""]
        ),
        3.0,
        "the three 429s"
    );
    // The receiver counts every request it got, the three 429s included.
    let accepted = receiver.with(|s| s.requests) - 3;
    let answered: f64 = ["applied", "rejected", "per_record", "transient", "fatal"]
        .iter()
        .map(|class| {
            total(
                "ebb_destination_requests_total",
                &[&format!("class=\"{class}\"")],
            )
        })
        .sum();
    assert_eq!(
        answered,
        f64::from(accepted),
        "every other request, by its answer"
    );
    assert_eq!(
        total("ebb_batch_duration_seconds_count", &[sync]),
        10.0,
        "one duration per batch"
    );
    assert_eq!(
        total("ebb_runs_total", &[sync, "state=\"succeeded\""]),
        1.0,
        "the worker that ended it"
    );
    assert!(
        pages
            .iter()
            .all(|p| p.contains("# TYPE ebb_limiter_wait_seconds_total counter")),
        "limiter wait is a counter of seconds"
    );

    // The planner counts its planning.
    let planner = page(&format!("{base}/metrics")).await;
    assert_eq!(
        sum(&planner, "ebb_planning_duration_seconds_count", &[sync]),
        1.0,
        "{planner}"
    );
    assert!(
        planner.contains("# TYPE ebb_planning_duration_seconds histogram"),
        "{planner}"
    );
}
