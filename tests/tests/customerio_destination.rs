//! End-to-end syncs into the `customerio` destination, through the real
//! planner, queue and workers, against the Track API emulator in
//! `ebb_tests::customerio` (which follows Customer.io's public docs). What
//! every destination does (first sync, no-change re-sync, updates, mirror
//! removals, lost answers) is in `conformance.rs`.

use std::time::Duration;

use ebb_tests::customerio::{API_KEY, CustomerIo, SITE_ID};
use ebb_tests::{TestEnv, dlq_reason, exec, replacing, seed_customers};
use serde_json::json;

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.people]
type = "customerio"
site_id = "{SITE_ID}"
api_key = "{API_KEY}"
base_url = "{CIO_URL}"
batch_size = {BATCH}
max_retries = 3
{EXTRA}

[syncs.customers_cio]
source = "warehouse"
model = "SELECT id, email, first_name, plan, repeat('x', {PAD}) AS pad FROM analytics.customers"
primary_key = "id"
destination = "people"
mode = "mirror"

[syncs.customers_cio.mapping]
{MAPPING}
first_name = "first_name"
plan = "plan"
"#;

struct Setup<'a> {
    cio: &'a CustomerIo,
    batch: usize,
    extra: &'a str,
    mapping: &'a str,
    pad: usize,
}

fn placeholders(setup: &Setup<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("{CIO_URL}", setup.cio.url()),
        ("{SITE_ID}", SITE_ID.to_owned()),
        ("{API_KEY}", API_KEY.to_owned()),
        ("{BATCH}", setup.batch.to_string()),
        ("{EXTRA}", setup.extra.to_owned()),
        ("{MAPPING}", setup.mapping.to_owned()),
        ("{PAD}", setup.pad.to_string()),
    ]
}

async fn env(setup: Setup<'_>, rows: i64) -> TestEnv {
    let env = TestEnv::new(CONFIG, &placeholders(&setup)).await;
    seed_customers(&env.warehouse, rows).await;
    env
}

const BY_ID: &str = "id = \"id\"\nemail = \"email\"";

#[tokio::test]
async fn entries_customerio_refuses_go_to_the_dlq_with_its_message_and_the_rest_is_delivered() {
    let cio = CustomerIo::start().await;
    cio.with(|s| {
        s.refusals.push((
            "first_name".into(),
            json!("Name21"),
            "value is on the workspace's blocklist".into(),
        ))
    });
    let setup = Setup {
        cio: &cio,
        batch: 50,
        extra: "",
        mapping: BY_ID,
        pad: 0,
    };
    let mut env = env(setup, 100).await;
    env.start_worker(2);
    let run = env.run_sync("customers_cio", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        (run["delivered"].as_i64(), run["rejected"].as_i64()),
        (Some(99), Some(1)),
        "{run}"
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert_eq!(
        dlq_reason(&dlq, "21"),
        "Customer.io: attributes.first_name: value is on the workspace's blocklist (invalid)"
    );
    cio.with(|s| {
        assert_eq!(s.people.len(), 99);
        // A 207 is not split and sent again: one request per batch.
        assert_eq!(s.writes(), 2, "{:?}", s.requests);
        let p = s.by_id("42").expect("person 42");
        assert_eq!(
            (p.text("email"), p.text("first_name")),
            ("user42@example.com".into(), "Name42".into())
        );
    });
}

#[tokio::test]
async fn large_records_are_packed_into_requests_under_500_kb() {
    let cio = CustomerIo::start().await;
    // 20 attributes of 900 bytes: about 18 KB a person, 1.8 MB a batch.
    let mapping: String = (1..=20).map(|i| format!("pad{i} = \"pad\"\n")).collect();
    let mapping = format!("{BY_ID}\n{mapping}");
    let setup = Setup {
        cio: &cio,
        batch: 100,
        extra: "",
        mapping: &mapping,
        pad: 900,
    };
    let mut env = env(setup, 200).await;
    env.start_worker(2);
    let run = env.run_sync("customers_cio", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(200)),
        "{run}"
    );
    cio.with(|s| {
        assert_eq!(s.people.len(), 200);
        assert!(s.batch_sizes.len() >= 8, "{:?}", s.batch_sizes);
        let largest = s.batch_sizes.iter().max().copied().unwrap_or(0);
        assert!(
            largest <= 500 * 1024 && largest > 400 * 1024,
            "{:?}",
            s.batch_sizes
        );
        assert_eq!(s.by_id("7").map(|p| p.text("pad20").len()), Some(900));
    });
}

#[tokio::test]
async fn people_identified_by_email_are_deleted_in_mirror_mode_within_the_rate_limit() {
    let cio = CustomerIo::start().await;
    cio.with(|s| s.rate.limit = Some((10, Duration::from_secs(1))));
    let setup = Setup {
        cio: &cio,
        batch: 5,
        extra: "identify_by = \"email\"\nrate_limit = { requests = 10, per_seconds = 1 }",
        mapping: "email = \"email\"",
        pad: 0,
    };
    let mut env = env(setup, 60).await;
    env.start_worker(4);
    env.start_worker(4);
    let run = env.run_sync("customers_cio", &[]).await;
    assert_eq!(run["delivered"], 60, "{run}");
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id > 40",
    )
    .await;
    let run = env.run_sync("customers_cio", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(20)),
        "{run}"
    );
    cio.with(|s| {
        assert_eq!(s.people.len(), 40);
        assert!(
            s.people.iter().all(|p| p.id.is_none()),
            "identified by email only"
        );
        assert_eq!(
            s.rate.violations, 0,
            "no request over the workspace's limit"
        );
    });
}

#[tokio::test]
async fn check_connect_finds_bad_keys_and_a_workspace_in_the_other_region() {
    let cio = CustomerIo::start().await;
    let setup = Setup {
        cio: &cio,
        batch: 50,
        extra: "",
        mapping: BY_ID,
        pad: 0,
    };
    let base = placeholders(&setup);
    let env = env(setup, 5).await;
    let (code, stdout, stderr) = env.check_connect().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Customer.io workspace {SITE_ID} accepts the key")),
        "{stdout}"
    );

    cio.with(|s| s.data_center = "eu".into());
    let (code, _, stderr) = env.check_connect().await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("the workspace's data is in the EU region")
            && stderr.contains("set region = \"eu\""),
        "{stderr}"
    );

    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{API_KEY}", "wrong-key-777"))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("bad credentials: Customer.io 401: Unauthorized request"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-key-777"),
        "the key stays out of messages"
    );
    assert_eq!(cio.with(|s| s.writes()), 0, "checks write nothing");
}
