//! Guardrails: a run whose plan crosses a sync's limits is held before
//! anything is sent, until an operator approves it (CLI or API) or cancels
//! it; the next good run then proceeds. A held run opens an alert until it
//! is approved.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ebb_tests::{TestEnv, create_replica, seed_customers, serve_emulator};
use serde_json::Value;

const CONFIG: &str = r#"
{HEADER}

[api]
tokens = [
  { name = "ops", token = "ops-token-0123456789abcdef", role = "operator" },
  { name = "grafana", token = "viewer-token-0123456789abcdef", role = "viewer" },
]

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 50

[syncs.customers]
source = "warehouse"
model_file = "models/customers.sql"
primary_key = "id"
destination = "replica"
mode = "mirror"

[syncs.customers.guardrails]
max_remove_pct = 20
max_change_pct = 50
max_row_drop_pct = 40

[alerts.oncall]
webhook_url = "{HOOK_URL}/hook"

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
"#;

const MODEL: &str = "SELECT id, email, first_name, plan, ltv FROM analytics.customers";

async fn delivered(env: &TestEnv) -> i64 {
    TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await
}

/// The alert messages a webhook received.
type Hooked = Arc<Mutex<Vec<Value>>>;

async fn hook(State(hooked): State<Hooked>, Json(body): Json<Value>) -> StatusCode {
    hooked.lock().expect("lock").push(body);
    StatusCode::OK
}

async fn env() -> TestEnv {
    env_with_alerts().await.0
}

async fn env_with_alerts() -> (TestEnv, Hooked) {
    let hooked = Hooked::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(hooked.clone());
    let hooks = serve_emulator(app, "127.0.0.1:0").await;
    let mut env = TestEnv::new(CONFIG, &[("{HOOK_URL}", format!("http://{hooks}"))]).await;
    env.write_file("models/customers.sql", MODEL);
    seed_customers(&env.warehouse, 200).await;
    create_replica(&env.app).await;
    env.start_worker(2);
    let first = env.run_sync("customers", &[]).await;
    assert_eq!(first["delivered"], 200, "{first}");
    (env, hooked)
}

#[tokio::test]
async fn an_emptied_model_is_held_and_sends_its_deletes_only_once_approved() {
    let env = env().await;
    // A broken model: mirror mode would delete every record.
    env.write_file("models/customers.sql", &format!("{MODEL} WHERE false"));

    let plan = env.ebb(&["plan", "customers"]).await;
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(text.contains("a run would be held: it would remove 200 of 200 delivered records (100.0%), over max_remove_pct = 20"), "{text}");

    let out = env.ebb(&["run", "customers", "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "held runs exit 3");
    let held: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let run_id = held["run"]["id"].as_i64().expect("run id");
    assert_eq!(held["run"]["state"], "held", "{held}");
    assert_eq!(held["run"]["planned_removed"], 200, "{held}");
    let reason = held["held"].as_str().expect("reason");
    assert!(reason.contains("remove 200 of 200"), "{reason}");
    assert!(
        reason.contains(&format!("ebb approve {run_id}")),
        "{reason}"
    );
    // Nothing was sent: `ebb run` returned without putting a task on the
    // queue, so no worker can deliver anything. And the held run keeps
    // newer runs from planning around it.
    assert_eq!(env.queued_tasks().await, 0);
    assert_eq!(delivered(&env).await, 200);
    let blocked = env.ebb(&["run", "customers"]).await;
    assert_ne!(blocked.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&blocked.stderr).contains(&format!("#{run_id}")));

    // The operator looked and approves: the deletes go out.
    let approve = env.ebb(&["approve", &run_id.to_string()]).await;
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    ebb_tests::eventually(
        std::time::Duration::from_secs(30),
        "the approved run to finish",
        || async {
            let runs = env.ebb_json(&["runs"]).await;
            let run = runs.as_array()?.iter().find(|r| r["id"] == run_id)?.clone();
            (run["state"] == "succeeded").then_some(run)
        },
    )
    .await;
    assert_eq!(delivered(&env).await, 0);
    // Approving twice is a conflict.
    let again = env.ebb(&["approve", &run_id.to_string()]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not held"));
}

#[tokio::test]
async fn a_cancelled_held_run_sends_nothing_and_the_next_good_run_proceeds() {
    let env = env().await;
    // Half the plans change: over max_change_pct = 50? 120 of 200 is.
    sqlx::query("UPDATE analytics.customers SET plan = 'enterprise' WHERE id <= 120")
        .execute(&env.warehouse)
        .await
        .expect("update");
    let held = env.ebb_json(&["run", "customers"]).await;
    assert_eq!(held["run"]["state"], "held", "{held}");
    assert!(
        held["held"]
            .as_str()
            .unwrap_or("")
            .contains("change 120 of 200"),
        "{held}"
    );
    let run_id = held["run"]["id"].as_i64().expect("run id");

    let cancel = env.ebb(&["cancel", &run_id.to_string()]).await;
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    let enterprise = TestEnv::scalar_i64(
        &env.app,
        "SELECT count(*) FROM customers_synced WHERE plan = 'enterprise'",
    )
    .await;
    assert_eq!(enterprise, 0, "a cancelled held run sent nothing");

    // The model is fixed to change only 30: under the limit, it runs.
    sqlx::query(
        "UPDATE analytics.customers SET plan = CASE WHEN id % 2 = 0 THEN 'free' ELSE 'pro' END \
         WHERE id > 30 AND id <= 120",
    )
    .execute(&env.warehouse)
    .await
    .expect("fix");
    let next = env.run_sync("customers", &[]).await;
    assert_eq!(next["state"], "succeeded", "{next}");
    assert_eq!(next["planned_changed"], 30, "{next}");
    let enterprise = TestEnv::scalar_i64(
        &env.app,
        "SELECT count(*) FROM customers_synced WHERE plan = 'enterprise'",
    )
    .await;
    assert_eq!(enterprise, 30);
}

#[tokio::test]
async fn the_api_approves_a_held_run_for_operators_only_and_its_alert_resolves() {
    let (env, hooked) = env_with_alerts().await;
    env.write_file("models/customers.sql", &format!("{MODEL} WHERE id > 100"));
    let held = env.ebb_json(&["run", "customers"]).await;
    assert_eq!(held["run"]["state"], "held", "{held}");
    let run_id = held["run"]["id"].as_i64().expect("run id");
    // Every limit crossed is said: removals, and rows read against the last
    // successful run's.
    let reason = held["held"].as_str().unwrap_or_default();
    assert!(
        reason.contains("remove 100 of 200 delivered records (50.0%), over max_remove_pct = 20")
            && reason.contains(
                "the model has 100 rows, 50.0% fewer than the 200 of the last successful run, over max_row_drop_pct = 40"
            ),
        "{reason}"
    );
    let messages = |n: usize| {
        let hooked = hooked.clone();
        async move {
            let hooked = hooked.lock().expect("lock");
            (hooked.len() >= n).then(|| hooked.clone())
        }
    };
    let port = ebb_tests::free_port();
    let _serve = env.serve(port, &[]);
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let approve = |token: &'static str| {
        client
            .post(format!("{base}/runs/{run_id}/approve"))
            .bearer_auth(token)
            .send()
    };
    ebb_tests::eventually(std::time::Duration::from_secs(20), "the API", || async {
        client
            .get(format!("{base}/runs"))
            .bearer_auth("viewer-token-0123456789abcdef")
            .send()
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
    let firing = ebb_tests::eventually(
        std::time::Duration::from_secs(30),
        "the run_held alert",
        || messages(1),
    )
    .await;
    assert_eq!(
        (firing[0]["status"].as_str(), firing[0]["kind"].as_str()),
        (Some("firing"), Some("run_held")),
        "{firing:?}"
    );
    assert_eq!(firing[0]["run_id"], run_id);
    assert!(
        firing[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("50.0% fewer") && d.contains("ebb approve")),
        "{firing:?}"
    );
    let refused = approve("viewer-token-0123456789abcdef")
        .await
        .expect("POST");
    assert_eq!(refused.status().as_u16(), 403);
    let approved = approve("ops-token-0123456789abcdef").await.expect("POST");
    assert_eq!(approved.status().as_u16(), 200);
    let run: serde_json::Value = approved.json().await.expect("run");
    assert_eq!(run["state"], "running", "{run}");
    ebb_tests::eventually(
        std::time::Duration::from_secs(30),
        "the deletes",
        || async { (delivered(&env).await == 100).then_some(()) },
    )
    .await;
    let again = approve("ops-token-0123456789abcdef").await.expect("POST");
    assert_eq!(again.status().as_u16(), 409);
    let resolved = ebb_tests::eventually(
        std::time::Duration::from_secs(30),
        "the run_held alert resolved",
        || messages(2),
    )
    .await;
    assert_eq!(
        (resolved[1]["status"].as_str(), resolved[1]["kind"].as_str()),
        (Some("resolved"), Some("run_held")),
        "{resolved:?}"
    );
    assert_eq!(resolved.len(), 2, "one message each way: {resolved:?}");
}

#[tokio::test]
async fn records_changed_back_to_a_delivered_version_are_reported_flapping() {
    let env = env().await;
    let original: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, plan FROM analytics.customers WHERE id <= 10 ORDER BY id")
            .fetch_all(&env.warehouse)
            .await
            .expect("plans");
    sqlx::query("UPDATE analytics.customers SET plan = 'enterprise' WHERE id <= 10")
        .execute(&env.warehouse)
        .await
        .expect("update");
    let second = env.run_sync("customers", &[]).await;
    assert_eq!(
        (&second["planned_changed"], &second["flapping"]),
        (&serde_json::json!(10), &serde_json::json!(0)),
        "a first change is no flap: {second}"
    );

    // Back to what the first run delivered, plus 5 changed for the first time.
    for (id, plan) in &original {
        sqlx::query("UPDATE analytics.customers SET plan = $2 WHERE id = $1")
            .bind(id)
            .bind(plan)
            .execute(&env.warehouse)
            .await
            .expect("revert");
    }
    sqlx::query("UPDATE analytics.customers SET plan = 'team' WHERE id BETWEEN 11 AND 15")
        .execute(&env.warehouse)
        .await
        .expect("update");
    let plan = env.ebb_json(&["plan", "customers"]).await;
    assert_eq!(plan["changed"], 15, "{plan}");
    assert_eq!(plan["flapping"], 10, "{plan}");
    let mut expected: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    expected.sort();
    assert_eq!(plan["flapping_keys"], serde_json::json!(expected), "{plan}");
    let text = String::from_utf8_lossy(&env.ebb(&["plan", "customers"]).await.stdout).into_owned();
    assert!(
        text.contains("flapping")
            && text.contains("changed back to a version a recent run delivered"),
        "{text}"
    );

    // Reported, never held: the run sends the 15 and records the 10.
    let third = env.run_sync("customers", &[]).await;
    assert_eq!(third["state"], "succeeded", "{third}");
    assert_eq!(third["delivered"], 15, "{third}");
    assert_eq!(third["flapping"], 10, "{third}");
}
