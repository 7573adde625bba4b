//! End-to-end syncs into the `hubspot` destination, through the real
//! planner, queue and workers, against the HubSpot emulator in
//! `ebb_tests::hubspot` (which follows HubSpot's public API docs).

use std::process::Stdio;
use std::time::Duration;

use ebb_tests::hubspot::{HubSpot, TOKEN, TOKEN_WITHOUT_SCOPES};
use ebb_tests::{TestEnv, dlq_reason, eventually, exec, free_port, replacing, seed_customers};
use serde_json::Value;

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.hubspot_contacts]
type = "hubspot"
access_token = "{TOKEN}"
object = "contacts"
match_on = "email"
base_url = "{HUBSPOT_URL}"
batch_size = {BATCH}
max_retries = 3
{RATE_LIMIT}

[destinations.hubspot_companies]
type = "hubspot"
access_token = "{TOKEN}"
object = "companies"
match_on = "domain"
base_url = "{HUBSPOT_URL}"
batch_size = {BATCH}

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "hubspot_contacts"
mode = "mirror"

[syncs.contacts.mapping]
email = "email"
{FIRSTNAME} = "first_name"
plan = "plan"
lifetime_value = "ltv"

[syncs.companies]
source = "warehouse"
model = "SELECT id, 'Company ' || id AS name, 'co' || id || '.example.com' AS domain FROM analytics.customers WHERE id <= 60"
primary_key = "id"
destination = "hubspot_companies"

[syncs.companies.mapping]
name = "name"
domain = "domain"
"#;

fn placeholders(hubspot_url: &str, token: &str, batch: usize) -> Vec<(&'static str, String)> {
    vec![
        ("{HUBSPOT_URL}", hubspot_url.to_owned()),
        ("{TOKEN}", token.to_owned()),
        ("{BATCH}", batch.to_string()),
        ("{RATE_LIMIT}", String::new()),
        ("{FIRSTNAME}", "firstname".to_owned()),
    ]
}

async fn env(hubspot: &HubSpot, rows: i64, batch: usize) -> TestEnv {
    let env = TestEnv::new(CONFIG, &placeholders(&hubspot.url(), TOKEN, batch)).await;
    seed_customers(&env.warehouse, rows).await;
    env
}

#[tokio::test]
async fn contacts_sync_validates_matches_updates_and_archives() {
    let hubspot = HubSpot::start().await;
    let mut env = env(&hubspot, 250, 100).await;
    // Caught by Ebb's pre-flight validation, without an API call:
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'not-an-email' WHERE id = 17",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'gold' WHERE id = 18",
    )
    .await;
    // Passes Ebb's checks, but HubSpot refuses it (a doubled dot).
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'first..last@example.com' WHERE id = 19",
    )
    .await;
    env.start_worker(2);

    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 247, "{run}");
    assert_eq!(run["rejected"], 3, "{run}");
    let user20 = hubspot.with(|s| {
        let live = s.live("contacts");
        assert_eq!(live.len(), 247);
        assert_eq!(s.calls("batch/create"), 0, "contacts are upserted by email");
        assert!(s.find("contacts", "email", "not-an-email").is_empty());
        let found = s.find("contacts", "email", "user20@example.com");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.properties["firstname"], "Name20");
        found[0].0
    });
    assert_eq!(
        env.ledger_id("contacts", "20").await,
        Some(user20.to_string())
    );
    let with_ids = TestEnv::scalar_i64(
        &env.state,
        "SELECT count(*) FROM ebb_ledger WHERE sync_name = 'contacts' AND destination_id IS NOT NULL",
    )
    .await;
    assert_eq!(with_ids, 247);
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert!(
        dlq_reason(&dlq, "17").contains("`email`: `not-an-email` is not a valid email address")
    );
    assert!(dlq_reason(&dlq, "18").contains(
        "`plan`: `gold` is not an option of this property; options are: free, starter, pro, enterprise"
    ));
    let vendor = dlq_reason(&dlq, "19");
    assert!(
        vendor.contains("HubSpot 400 VALIDATION_ERROR") && vendor.contains("INVALID_EMAIL"),
        "{vendor}"
    );

    // Rejected records are retried on later runs; once the rows are fixed
    // they are delivered and their DLQ entries resolved.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'user' || id || '@example.com', plan = 'pro' WHERE id IN (17, 18, 19)",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 3, "{run}");
    assert_eq!(env.ebb_json(&["dlq", "list"]).await, serde_json::json!([]));

    // Nothing changed: no API writes at all.
    let writes = hubspot.with(|s| s.writes());
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 0, "{run}");
    assert_eq!(hubspot.with(|s| s.writes()), writes);

    // Changed rows are updated by HubSpot id; a new email updates the same
    // contact instead of creating a second one.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise' WHERE id BETWEEN 30 AND 39",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'new40@example.com' WHERE id = 40",
    )
    .await;
    let id40 = env.ledger_id("contacts", "40").await.expect("id of 40");
    let (updates, upserts) = hubspot.with(|s| (s.calls("batch/update"), s.calls("batch/upsert")));
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 11, "{run}");
    hubspot.with(|s| {
        assert_eq!(s.calls("batch/update"), updates + 1);
        assert_eq!(s.calls("batch/upsert"), upserts);
        assert_eq!(s.live("contacts").len(), 250);
        let moved = s.find("contacts", "email", "new40@example.com");
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].0.to_string(), id40);
        assert!(s.find("contacts", "email", "user40@example.com").is_empty());
        assert_eq!(s.find("contacts", "plan", "enterprise").len(), 10);
    });

    // A contact deleted in HubSpot by a user comes back when its row changes.
    let id41: u64 = env
        .ledger_id("contacts", "41")
        .await
        .unwrap()
        .parse()
        .unwrap();
    hubspot.with(|s| s.delete("contacts", id41));
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Renamed' WHERE id = 41",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 1, "{run}");
    let new41 = env.ledger_id("contacts", "41").await.unwrap();
    assert_ne!(new41, id41.to_string());
    hubspot.with(|s| {
        let found = s.find("contacts", "email", "user41@example.com");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.to_string(), new41);
        assert_eq!(found[0].1.properties["firstname"], "Renamed");
    });

    // Mirror mode archives contacts whose rows left the model.
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id <= 5",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 5, "{run}");
    hubspot.with(|s| {
        assert_eq!(s.live("contacts").len(), 245);
        assert!(s.find("contacts", "email", "user3@example.com").is_empty());
        assert_eq!(s.calls("batch/archive"), 1);
    });
    assert!(
        !env.worker_log(0).contains(TOKEN),
        "the token stays out of logs"
    );
}

#[tokio::test]
async fn rate_limits_are_kept_and_429s_waited_out() {
    let hubspot = HubSpot::start().await;
    let extra = replacing(
        &placeholders(&hubspot.url(), TOKEN, 10),
        "{RATE_LIMIT}",
        "rate_limit = { requests = 4, per_seconds = 1 }",
    );
    let env = TestEnv::new(CONFIG, &extra).await;
    seed_customers(&env.warehouse, 150).await;
    let mut env = env;
    // HubSpot's account limit, scaled down: 4 requests per rolling second.
    hubspot.with(|s| {
        s.rate_window = (4, Duration::from_secs(1));
        s.throttle_left = 2;
    });
    env.start_worker(4);
    env.start_worker(4);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 150, "{run}");
    assert!(run["throttled"].as_i64().unwrap() >= 2, "{run}");
    hubspot.with(|s| {
        assert_eq!(s.violations, 0, "no request went over HubSpot's limit");
        assert_eq!(s.live("contacts").len(), 150);
    });
}

/// Companies have no unique match property: Ebb creates them, and after a
/// create whose answer was lost it searches by domain before creating again.
#[tokio::test]
async fn a_lost_create_response_is_looked_up_not_created_twice() {
    let hubspot = HubSpot::start().await;
    let mut env = env(&hubspot, 60, 100).await;
    hubspot.with(|s| s.drop_after_apply_left = 1);
    env.start_worker(2);
    let run = env.run_sync("companies", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 60, "{run}");
    assert_eq!(run["lookups_before_create"], 60, "{run}");
    assert!(run["retries"].as_i64().unwrap() >= 1, "{run}");
    hubspot.with(|s| {
        assert_eq!(s.live("companies").len(), 60, "no duplicate creates");
        assert_eq!(s.calls("batch/create"), 1);
        assert_eq!(s.calls("companies/search"), 1);
        assert_eq!(s.find("companies", "domain", "co7.example.com").len(), 1);
    });
    let intents = TestEnv::scalar_i64(&env.state, "SELECT count(*) FROM ebb_intents").await;
    assert_eq!(intents, 0, "answered intents are cleared");

    let writes = hubspot.with(|s| s.writes());
    let run = env.run_sync("companies", &[]).await;
    assert_eq!(run["delivered"], 0, "{run}");
    assert_eq!(hubspot.with(|s| s.writes()), writes);
}

/// A company someone created in HubSpot long before shares the domain of a
/// record whose create was applied and its answer lost. The lookup finds
/// the company Ebb created (the first one created since the create's
/// intent), not the older stranger: the stranger is left alone, and no
/// company is created twice. (The lookup used to take the oldest match,
/// update the stranger, and leave Ebb's company as a duplicate.)
#[tokio::test]
async fn a_lookup_after_a_lost_create_finds_the_created_company_not_an_older_one() {
    let hubspot = HubSpot::start().await;
    let mut env = env(&hubspot, 60, 100).await;
    let stranger = hubspot.with(|s| {
        s.drop_after_apply_left = 1;
        s.add(
            "companies",
            &[("domain", "co7.example.com"), ("name", "Someone else's")],
            chrono::Utc::now() - chrono::TimeDelta::days(30),
        )
    });
    env.start_worker(2);
    let run = env.run_sync("companies", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 60, "{run}");
    assert_eq!(run["lookups_before_create"], 60, "{run}");
    hubspot.with(|s| {
        assert_eq!(s.calls("batch/create"), 1, "no company was created twice");
        assert_eq!(s.live("companies").len(), 61, "Ebb's 60 and the stranger");
        let same_domain = s.find("companies", "domain", "co7.example.com");
        assert_eq!(same_domain.len(), 2, "{same_domain:?}");
        let (_, untouched) = same_domain
            .iter()
            .find(|(id, _)| *id == stranger)
            .expect("the stranger");
        assert_eq!(untouched.properties["name"], "Someone else's");
    });
    let ebbs = env
        .ledger_id("companies", "7")
        .await
        .expect("an id for record 7");
    assert_ne!(ebbs, stranger.to_string(), "the ledger names Ebb's company");
    hubspot.with(|s| {
        let ours = &s.objects["companies"][&ebbs.parse::<u64>().unwrap()];
        assert_eq!(ours.properties["name"], "Company 7");
    });
}

/// A worker dies after HubSpot applied its creates and before Ebb
/// committed them; the worker that takes the batch over finds the intents,
/// looks the companies up and updates them instead of creating them again.
#[tokio::test]
async fn a_worker_crash_after_create_does_not_duplicate_companies() {
    let hubspot = HubSpot::start().await;
    let mut env = env(&hubspot, 60, 20).await;
    env.start_worker_with(1, &[("EBB_FAULTS", "after_send:key=7")]);
    let mut run = env.ebb_command(&["run", "companies", "--json"]);
    run.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = run.spawn().expect("spawn ebb run");
    eventually(
        Duration::from_secs(60),
        "the faulty worker to crash",
        || {
            let exited = env.worker_exited(0);
            async move { exited.then_some(()) }
        },
    )
    .await;
    let created_before_crash = hubspot.with(|s| s.live("companies").len());
    assert!(created_before_crash >= 1, "the crashed batch was applied");
    env.start_worker(2);
    let output = tokio::time::timeout(Duration::from_secs(90), run.wait_with_output())
        .await
        .expect("run finished")
        .expect("ebb run output");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("run JSON");
    let run = &summary["run"];
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 60, "{run}");
    assert!(run["lookups_before_create"].as_i64().unwrap() >= 1, "{run}");
    hubspot.with(|s| {
        assert_eq!(s.live("companies").len(), 60, "no duplicate creates");
        for id in 1..=60 {
            let domain = format!("co{id}.example.com");
            assert_eq!(s.find("companies", "domain", &domain).len(), 1, "{domain}");
        }
    });
    let with_ids = TestEnv::scalar_i64(
        &env.state,
        "SELECT count(*) FROM ebb_ledger WHERE sync_name = 'companies' AND destination_id IS NOT NULL",
    )
    .await;
    assert_eq!(with_ids, 60);
}

#[tokio::test]
async fn check_connect_tells_credentials_permissions_reachability_and_mapping_apart() {
    let hubspot = HubSpot::start().await;
    let env = env(&hubspot, 5, 100).await;

    let (code, stdout, stderr) = env.check_connect().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("records are upserted by `email`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("records are created, and looked up by `domain`"),
        "{stdout}"
    );

    let base = placeholders(&hubspot.url(), TOKEN, 100);
    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{TOKEN}", "pat-wrong"))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("bad credentials: HubSpot 401 INVALID_AUTHENTICATION"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pat-wrong"),
        "the token stays out of messages"
    );

    let (_, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{TOKEN}", TOKEN_WITHOUT_SCOPES))
        .await;
    assert!(
        stderr.contains("missing permissions: HubSpot 403 MISSING_SCOPES"),
        "{stderr}"
    );

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (_, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{HUBSPOT_URL}", &nowhere))
        .await;
    assert!(
        stderr.contains("unreachable: cannot connect to HubSpot"),
        "{stderr}"
    );

    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{FIRSTNAME}", "first_name"))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr
            .contains("HubSpot contacts have no property `first_name` (did you mean `firstname`?)"),
        "{stderr}"
    );

    // A typed column that cannot fill the property's type.
    let typed = CONFIG.replace("plan, ltv FROM", "plan, ltv > 100 AS ltv FROM");
    let (code, _, stderr) = env.check_connect_with(&typed, &base).await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("`lifetime_value`: a BOOL column cannot fill a number field"),
        "{stderr}"
    );
    let writes = hubspot.with(|s| s.writes());
    assert_eq!(writes, 0, "checks write nothing");
}

/// A HubSpot `base_url` that answers with a redirect (an old proxy, a
/// moved host): Ebb follows none, so no token travels on to the other
/// host, and every record fails with a reason naming the new location.
#[tokio::test]
async fn a_redirecting_base_url_is_a_configuration_error_naming_the_location() {
    let moved = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::MOVED_PERMANENTLY,
            [("location", "https://new-proxy.example.com/hubspot")],
            "moved",
        )
    });
    let addr = ebb_tests::serve_emulator(moved, "127.0.0.1:0").await;
    let mut env = TestEnv::new(CONFIG, &placeholders(&format!("http://{addr}"), TOKEN, 100)).await;
    seed_customers(&env.warehouse, 10).await;
    env.start_worker(1);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["failed"], 10, "{run}");
    assert_eq!(run["retries"], 0, "a redirect is not retried: {run}");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let reason = dlq_reason(&dlq, "1");
    assert!(
        reason.contains("HTTP 301: it redirects to https://new-proxy.example.com/hubspot"),
        "{reason}"
    );
}
