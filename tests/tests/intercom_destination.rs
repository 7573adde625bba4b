//! End-to-end syncs into the `intercom` destination, through the real
//! planner, queue and workers, against the Intercom emulator in
//! `ebb_tests::intercom` (which follows Intercom's public docs). What every
//! destination does (first sync, no-change re-sync, updates, mirror
//! removals, lost answers) is in `conformance.rs`.

use std::time::Duration;

use ebb_tests::intercom::{Intercom, TOKEN};
use ebb_tests::{TestEnv, dlq_reason, exec, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.support]
type = "intercom"
access_token = "{TOKEN}"
base_url = "{INTERCOM_URL}"
batch_size = {BATCH}
max_retries = 3
{EXTRA}

[syncs.contacts_ic]
source = "warehouse"
model = "SELECT id, email, first_name, plan FROM analytics.customers"
primary_key = "id"
destination = "support"
mode = "mirror"

[syncs.contacts_ic.mapping]
external_id = "id"
email = "email"
name = "first_name"
{MAPPING}
"#;

async fn env(intercom: &Intercom, batch: usize, extra: &str, mapping: &str, rows: i64) -> TestEnv {
    let env = TestEnv::new(
        CONFIG,
        &[
            ("{INTERCOM_URL}", intercom.url()),
            ("{TOKEN}", TOKEN.to_owned()),
            ("{BATCH}", batch.to_string()),
            ("{EXTRA}", extra.to_owned()),
            ("{MAPPING}", mapping.to_owned()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, rows).await;
    env
}

#[tokio::test]
async fn a_lost_create_not_yet_searchable_is_found_through_its_conflict_and_a_contact_deleted_in_intercom_is_created_again()
 {
    let intercom = Intercom::start().await;
    // Intercom's search trails its writes: a create whose answer is lost is
    // not found by the retry's search, and its create is refused 409.
    intercom.with(|s| {
        s.search_lag = true;
        s.drop_after_apply_left = 2;
    });
    let mut env = env(&intercom, 10, "", "plan = \"plan\"", 20).await;
    env.start_worker(2);
    let run = env.run_sync("contacts_ic", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(20)),
        "{run}"
    );
    assert!(run["retries"].as_i64() >= Some(1), "{run}");
    intercom.with(|s| {
        assert_eq!(s.contacts.len(), 20, "no contact created twice");
        // The two lost creates were each tried again, refused 409, and
        // updated through the id the conflict named.
        let creates = s.requests.iter().filter(|r| *r == "POST /contacts").count();
        assert_eq!(creates, 22, "{:?}", s.requests);
        let c = s.by_external_id("7").expect("contact 7");
        assert_eq!(
            (c.text("email"), c.text("name"), c.text("plan")),
            ("user7@example.com".into(), "Name7".into(), "pro".into())
        );
        assert_eq!(c.role, "user");
        s.search_lag = false;
        s.delete_by_external_id("3");
    });

    // An update by id of a contact deleted in Intercom creates it again.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Changed' || id WHERE id <= 5",
    )
    .await;
    let run = env.run_sync("contacts_ic", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(5)),
        "{run}"
    );
    intercom.with(|s| {
        assert_eq!(s.contacts.len(), 20);
        assert_eq!(
            s.by_external_id("3").map(|c| c.text("name")),
            Some("Changed3".into())
        );
        assert!(
            s.requests.iter().any(|r| r == "POST /contacts"),
            "created again"
        );
    });
}

#[tokio::test]
async fn a_custom_attribute_intercom_lacks_is_named_by_check_connect_and_its_records_are_dead_lettered()
 {
    let intercom = Intercom::start().await;
    let mut env = env(&intercom, 10, "", "tier = \"plan\"", 3).await;
    let (code, stdout, stderr) = env.check_connect().await;
    assert_ne!(code, Some(0), "{stdout}");
    assert!(
        stderr.contains("Intercom has no custom data attribute `tier` for contacts"),
        "{stderr}"
    );

    env.start_worker(1);
    let run = env.run_sync("contacts_ic", &[]).await;
    assert_eq!(run["rejected"], 3, "{run}");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert_eq!(
        dlq_reason(&dlq, "2"),
        "Intercom 400 parameter_invalid: Custom attribute 'tier' does not exist"
    );
    assert!(intercom.with(|s| s.contacts.is_empty()));
}

#[tokio::test]
async fn the_workspace_rate_limit_is_held_by_every_worker_and_removals_delete_contacts() {
    let intercom = Intercom::start().await;
    intercom.with(|s| s.rate.limit = Some((10, Duration::from_secs(1))));
    let mut env = env(
        &intercom,
        5,
        "rate_limit = { requests = 10, per_seconds = 1 }",
        "plan = \"plan\"",
        20,
    )
    .await;
    env.start_worker(4);
    env.start_worker(4);
    let run = env.run_sync("contacts_ic", &[]).await;
    assert_eq!(run["delivered"], 20, "{run}");
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id > 12",
    )
    .await;
    let run = env.run_sync("contacts_ic", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(8)),
        "{run}"
    );
    intercom.with(|s| {
        assert_eq!(s.contacts.len(), 12);
        assert_eq!(
            s.rate.violations, 0,
            "no request over the workspace's limit"
        );
    });
}
