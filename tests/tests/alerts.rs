//! Alerts, through the real `ebb serve`, workers and runs, against a local
//! webhook receiver and a Slack-style incoming webhook: one message when an
//! incident opens (not one per run while it stays open), one when it is
//! resolved, delivered again when the receiver failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ebb_tests::receiver::Receiver;
use ebb_tests::{TestEnv, eventually, exec, free_port, seed_customers, serve_emulator};
use serde_json::Value;

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
requeue_after_secs = 20

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 10
max_retries = 0

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, plan FROM analytics.customers"
primary_key = "id"
destination = "crm"

[alerts.oncall]
webhook_url = "{HOOK_URL}/hook"
rejections_over = 2

[alerts.chat]
slack_webhook_url = "{HOOK_URL}/slack"
run_failed = false
not_succeeded_for = "3s"
"#;

/// What the alert receivers got; the first `fail_first` requests to
/// `/hook` are answered 503.
#[derive(Default)]
struct Received {
    hook: Vec<Value>,
    slack: Vec<Value>,
    hook_attempts: usize,
    fail_first: usize,
}

async fn hook(State(state): State<Arc<Mutex<Received>>>, Json(body): Json<Value>) -> StatusCode {
    let mut received = state.lock().expect("lock");
    received.hook_attempts += 1;
    if received.hook_attempts <= received.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    received.hook.push(body);
    StatusCode::OK
}

async fn slack(State(state): State<Arc<Mutex<Received>>>, Json(body): Json<Value>) -> &'static str {
    state.lock().expect("lock").slack.push(body);
    "ok"
}

#[tokio::test]
async fn one_message_per_incident_and_one_when_it_is_resolved() {
    let received = Arc::new(Mutex::new(Received {
        fail_first: 1,
        ..Received::default()
    }));
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/slack", post(slack))
        .with_state(received.clone());
    let hooks = serve_emulator(app, "127.0.0.1:0").await;
    let receiver = Receiver::start().await;
    let mut env = TestEnv::new(
        CONFIG,
        &[
            ("{RECEIVER_URL}", receiver.url()),
            ("{HOOK_URL}", format!("http://{hooks}")),
        ],
    )
    .await;
    seed_customers(&env.warehouse, 50).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'nope' WHERE id IN (3, 13, 23)",
    )
    .await;
    env.start_worker(2);
    let port = free_port();
    let _daemon = env.serve(port, &[]);
    let hook_messages = |n: usize| {
        let received = received.clone();
        async move {
            let received = received.lock().expect("lock");
            (received.hook.len() >= n).then(|| received.hook.clone())
        }
    };

    // The destination is down: the run fails. One message, delivered again
    // after the receiver's 503.
    receiver.with(|s| s.unavailable_left = u32::MAX);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "failed", "{run}");
    let firing = eventually(Duration::from_secs(30), "the run_failed alert", || {
        hook_messages(1)
    })
    .await;
    assert_eq!(firing[0]["status"], "firing", "{firing:?}");
    assert_eq!(firing[0]["kind"], "run_failed");
    assert_eq!(firing[0]["sync"], "contacts");
    assert_eq!(firing[0]["run_id"], run["id"]);
    assert!(
        firing[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("could not be delivered")),
        "{firing:?}"
    );
    assert_eq!(
        received.lock().expect("lock").hook_attempts,
        2,
        "sent again after a 503"
    );

    // Broken again: still the same incident, no new message.
    let again = env.run_sync("contacts", &[]).await;
    assert_eq!(again["state"], "failed", "{again}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        received.lock().expect("lock").hook.len(),
        1,
        "one message per incident"
    );

    // Meanwhile, no success for 3 s: Slack hears of it.
    let slack_firing = eventually(Duration::from_secs(30), "the Slack alert", || {
        let received = received.clone();
        async move {
            let received = received.lock().expect("lock");
            received.slack.first().cloned()
        }
    })
    .await;
    let text = slack_firing["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(":rotating_light:")
            && text.contains("`contacts`")
            && text.contains("no successful run"),
        "{text}"
    );

    // The destination is back: the run succeeds (run_failed resolved, and
    // Slack's incident too) but rejects 3 records, more than 2.
    receiver.with(|s| s.unavailable_left = 0);
    let fixed = env.run_sync("contacts", &[]).await;
    assert_eq!(fixed["state"], "succeeded", "{fixed}");
    assert_eq!(fixed["rejected"], 3, "{fixed}");
    let messages = eventually(Duration::from_secs(30), "resolved and rejections", || {
        hook_messages(3)
    })
    .await;
    assert_eq!(
        (messages[1]["status"].as_str(), messages[1]["kind"].as_str()),
        (Some("resolved"), Some("run_failed")),
        "{messages:?}"
    );
    assert_eq!(
        (messages[2]["status"].as_str(), messages[2]["kind"].as_str()),
        (Some("firing"), Some("rejections")),
        "{messages:?}"
    );
    assert!(
        messages[2]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("rejected 3 of")),
        "{messages:?}"
    );
    let slack_resolved = eventually(Duration::from_secs(30), "Slack's resolution", || {
        let received = received.clone();
        async move {
            let received = received.lock().expect("lock");
            received.slack.get(1).cloned()
        }
    })
    .await;
    assert!(
        slack_resolved["text"]
            .as_str()
            .is_some_and(|t| t.contains(":white_check_mark:") && t.contains("recovered")),
        "{slack_resolved}"
    );

    // The rows are fixed: the rejections incident is resolved.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'user' || id || '@example.com' WHERE id IN (3, 13, 23)",
    )
    .await;
    let clean = env.run_sync("contacts", &[]).await;
    assert_eq!(
        (clean["delivered"].as_i64(), clean["rejected"].as_i64()),
        (Some(3), Some(0)),
        "{clean}"
    );
    let messages = eventually(Duration::from_secs(30), "rejections resolved", || {
        hook_messages(4)
    })
    .await;
    assert_eq!(
        (messages[3]["status"].as_str(), messages[3]["kind"].as_str()),
        (Some("resolved"), Some("rejections")),
        "{messages:?}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    {
        let received = received.lock().expect("lock");
        assert_eq!(received.hook.len(), 4, "nothing more: {:?}", received.hook);
        // Slack's alert is about time: the sync is not run again, so 3 s after
        // its last success a new incident may open. Its first incident had one
        // message opening it and one resolving it.
        assert!(
            received.slack[2..].iter().all(|m| m["text"]
                .as_str()
                .is_some_and(|t| t.contains(":rotating_light:") && t.contains("since run #"))),
            "{:?}",
            received.slack
        );
    }
    let out = env.ebb(&["alerts", "--all", "--json"]).await;
    let incidents: Value = serde_json::from_slice(&out.stdout).expect("ebb alerts --json");
    let kinds: Vec<(&str, bool)> = incidents
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| (i["kind"].as_str().unwrap_or(""), i["resolved_at"].is_null()))
        .collect();
    for kind in ["run_failed", "rejections"] {
        assert!(
            kinds.contains(&(kind, false)) && !kinds.contains(&(kind, true)),
            "the {kind} incident is resolved: {incidents}"
        );
    }
}
