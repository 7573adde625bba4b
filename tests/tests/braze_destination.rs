//! End-to-end syncs into the `braze` destination, through the real planner,
//! queue and workers, against the Braze emulator in `ebb_tests::braze`
//! (which follows Braze's public API docs). What every destination does
//! (first sync, no-change re-sync, updates, mirror removals, lost answers)
//! is in `conformance.rs`.

use std::time::Duration;

use ebb_tests::braze::{API_KEY, Braze};
use ebb_tests::{TestEnv, dlq_reason, exec, replacing, seed_customers};
use serde_json::{Value, json};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.engagement]
type = "braze"
api_key = "{API_KEY}"
rest_endpoint = "{BRAZE_URL}"
batch_size = {BATCH}
max_retries = 3
{EXTRA}

[syncs.profiles]
source = "warehouse"
model = "SELECT id, email, first_name, plan FROM analytics.customers"
primary_key = "id"
destination = "engagement"
mode = "mirror"

[syncs.profiles.mapping]
{MAPPING}
email = "email"
first_name = "first_name"
plan = "plan"
"#;

fn placeholders(
    braze: &Braze,
    batch: usize,
    extra: &str,
    mapping: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("{BRAZE_URL}", braze.url()),
        ("{API_KEY}", API_KEY.to_owned()),
        ("{BATCH}", batch.to_string()),
        ("{EXTRA}", extra.to_owned()),
        ("{MAPPING}", mapping.to_owned()),
    ]
}

async fn env(braze: &Braze, batch: usize, extra: &str, mapping: &str, rows: i64) -> TestEnv {
    let env = TestEnv::new(CONFIG, &placeholders(braze, batch, extra, mapping)).await;
    seed_customers(&env.warehouse, rows).await;
    env
}

#[tokio::test]
async fn objects_braze_skips_go_to_the_dlq_with_its_message_and_the_rest_of_the_request_is_delivered()
 {
    let braze = Braze::start().await;
    // The workspace refuses one value, as Braze reports it: in the 201
    // answer's `errors`, by index.
    braze.with(|s| {
        s.refusals.push((
            "email".into(),
            json!("user13@example.com"),
            "Email address is on the workspace's blocklist".into(),
        ))
    });
    let mut env = env(&braze, 75, "", "external_id = \"id\"", 150).await;
    env.start_worker(2);
    let run = env.run_sync("profiles", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        (run["delivered"].as_i64(), run["rejected"].as_i64()),
        (Some(149), Some(1)),
        "{run}"
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert_eq!(
        dlq_reason(&dlq, "13"),
        "Braze: Email address is on the workspace's blocklist"
    );
    braze.with(|s| {
        assert_eq!(s.profiles.len(), 149);
        // A partial success is not split and sent again: one request per
        // 75 objects.
        assert_eq!(s.track_bodies.len(), 2, "{:?}", s.requests);
        let first = &s.track_bodies[0]["attributes"][0];
        assert!(
            first["external_id"].is_string(),
            "external ids are strings: {first}"
        );
        assert_eq!(first["_update_existing_only"], false);
        let p = s.by_external_id("42").expect("profile 42");
        assert_eq!(
            (p.text("email"), p.text("first_name")),
            ("user42@example.com".into(), "Name42".into())
        );
    });

    // Fixed in Braze: the replay delivers it.
    braze.with(|s| s.refusals.clear());
    let replay = env.ebb_json(&["dlq", "replay", "--sync", "profiles"]).await;
    assert_eq!(replay[0]["run"]["delivered"], 1, "{replay}");
    assert!(braze.with(|s| s.by_external_id("13").is_some()));
}

#[tokio::test]
async fn profiles_matched_by_alias_are_created_then_deleted_fifty_a_request_in_mirror_mode() {
    let braze = Braze::start().await;
    let mut env = env(
        &braze,
        75,
        "match_by = \"user_alias\"\nalias_label = \"warehouse_id\"",
        "alias_name = \"id\"",
        120,
    )
    .await;
    env.start_worker(2);
    let run = env.run_sync("profiles", &[]).await;
    assert_eq!(run["delivered"], 120, "{run}");
    braze.with(|s| {
        assert_eq!(s.profiles.len(), 120);
        let object = &s.track_bodies[0]["attributes"][0];
        assert_eq!(
            object["user_alias"]["alias_label"], "warehouse_id",
            "{object}"
        );
        // Braze creates alias-only profiles only when told to.
        assert_eq!(object["_update_existing_only"], false, "{object}");
        assert!(
            object.get("alias_name").is_none(),
            "the alias is not an attribute: {object}"
        );
    });

    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id > 60",
    )
    .await;
    let run = env.run_sync("profiles", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["planned_removed"], 60, "{run}");
    assert_eq!(run["delivered"], 60, "{run}");
    braze.with(|s| {
        assert_eq!(s.profiles.len(), 60);
        let sizes: Vec<usize> = s
            .delete_bodies
            .iter()
            .map(|b| b["user_aliases"].as_array().map_or(0, Vec::len))
            .collect();
        let mut sorted = sizes.clone();
        sorted.sort_unstable();
        // 60 removals in batches of 75 split by the 50-identifier cap of
        // /users/delete (the emulator answers 400 above it).
        assert_eq!(sorted, vec![10, 50], "{sizes:?}");
        let alias: &Value = &s.delete_bodies[0]["user_aliases"][0];
        assert_eq!(alias["alias_label"], "warehouse_id", "{alias}");
    });
}

#[tokio::test]
async fn the_workspace_rate_limit_is_held_and_its_429s_are_waited_out() {
    let braze = Braze::start().await;
    braze.with(|s| s.rate.limit = Some((5, Duration::from_secs(1))));
    // Two workers, each free to send as fast as it can: only the shared
    // limiter keeps them within Braze's 5 requests a second.
    let mut env = env(
        &braze,
        10,
        "rate_limit = { requests = 5, per_seconds = 1 }",
        "external_id = \"id\"",
        160,
    )
    .await;
    env.start_worker(4);
    env.start_worker(4);
    let run = env.run_sync("profiles", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(160)),
        "{run}"
    );
    assert_eq!(
        braze.with(|s| s.rate.violations),
        0,
        "no request over Braze's limit"
    );

    // Braze answers 429 with X-RateLimit-Reset anyway (another client of the
    // workspace used the budget): waited out, not counted as failures.
    braze.with(|s| s.throttle_next = 2);
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise' WHERE id <= 30",
    )
    .await;
    let run = env.run_sync("profiles", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(30)),
        "{run}"
    );
    assert!(run["throttled"].as_i64() >= Some(1), "{run}");
    assert_eq!(run["failed"], 0, "{run}");
    assert_eq!(
        braze.with(|s| s.by_external_id("30").map(|p| p.text("plan"))),
        Some("enterprise".into())
    );
}

#[tokio::test]
async fn check_connect_tells_a_good_key_from_a_bad_one_and_writes_nothing() {
    let braze = Braze::start().await;
    let env = env(&braze, 75, "", "external_id = \"id\"", 5).await;
    let (code, stdout, stderr) = env.check_connect().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout
            .contains("accepts the key for sync `profiles`; profiles are matched by `external_id`"),
        "{stdout}"
    );

    let base = placeholders(&braze, 75, "", "external_id = \"id\"");
    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{API_KEY}", "revoked-key-9999"))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("bad credentials: Braze 401: Invalid API key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("revoked-key-9999"),
        "the key stays out of messages"
    );
    assert!(
        braze.with(|s| s.profiles.is_empty()),
        "checks write nothing"
    );
}
