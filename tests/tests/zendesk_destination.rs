//! End-to-end syncs into the `zendesk` destination, through the real
//! planner, queue and workers, against the Support API emulator in
//! `ebb_tests::zendesk` (which follows Zendesk's public docs). What every
//! destination does (first sync, no-change re-sync, updates, mirror
//! removals, lost answers) is in `conformance.rs`, with Zendesk users.

use std::time::Duration;

use ebb_tests::zendesk::{API_TOKEN, EMAIL, Entity, Zendesk};
use ebb_tests::{TestEnv, dlq_reason, exec, replacing, seed_customers};
use serde_json::{Map, json};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.support]
type = "zendesk"
base_url = "{ZD_URL}"
email = "{EMAIL}"
api_token = "{API_TOKEN}"
batch_size = {BATCH}
max_retries = 3
{EXTRA}

[syncs.customers_zd]
source = "warehouse"
model = "SELECT id, email, first_name, plan, 'Org ' || (id % {ORGS}) AS org_name FROM analytics.customers"
primary_key = "id"
destination = "support"
mode = "mirror"

[syncs.customers_zd.mapping]
{MAPPING}
"#;

const USERS: &str =
    "external_id = \"id\"\nemail = \"email\"\nname = \"first_name\"\nplan = \"plan\"";

struct Setup<'a> {
    zendesk: &'a Zendesk,
    batch: usize,
    extra: &'a str,
    mapping: &'a str,
    orgs: i64,
}

fn placeholders(setup: &Setup<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("{ZD_URL}", setup.zendesk.url()),
        ("{EMAIL}", EMAIL.to_owned()),
        ("{API_TOKEN}", API_TOKEN.to_owned()),
        ("{BATCH}", setup.batch.to_string()),
        ("{EXTRA}", setup.extra.to_owned()),
        ("{MAPPING}", setup.mapping.to_owned()),
        ("{ORGS}", setup.orgs.to_string()),
    ]
}

async fn env(setup: Setup<'_>, rows: i64) -> TestEnv {
    let env = TestEnv::new(CONFIG, &placeholders(&setup)).await;
    seed_customers(&env.warehouse, rows).await;
    env
}

fn existing_user(id: u64, external_id: &str, email: &str, name: &str) -> Entity {
    let mut properties = Map::new();
    properties.insert("external_id".into(), json!(external_id));
    properties.insert("email".into(), json!(email));
    properties.insert("name".into(), json!(name));
    Entity {
        id,
        properties,
        ..Entity::default()
    }
}

#[tokio::test]
async fn users_a_job_refuses_go_to_the_dlq_with_zendesk_words_and_the_rest_is_delivered() {
    let zendesk = Zendesk::start().await;
    zendesk.with(|s| {
        // Someone else already has record 21's address; record 5's user
        // exists (made by hand, matched on its external_id).
        s.users.push(existing_user(
            7001,
            "legacy-21",
            "user21@example.com",
            "Legacy",
        ));
        s.users
            .push(existing_user(7002, "5", "old5@example.com", "Old name"));
        // Jobs that take a while: polled more than once.
        s.job_delay = Duration::from_millis(900);
    });
    let setup = Setup {
        zendesk: &zendesk,
        batch: 100,
        extra: "",
        mapping: USERS,
        orgs: 1,
    };
    let mut env = env(setup, 150).await;
    env.start_worker(2);
    let run = env.run_sync("customers_zd", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        (run["delivered"].as_i64(), run["rejected"].as_i64()),
        (Some(149), Some(1)),
        "{run}"
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert_eq!(
        dlq_reason(&dlq, "21"),
        "Zendesk: Email: user21@example.com is already being used by another user"
    );
    zendesk.with(|s| {
        // 150 records, 100 to a request: 148 users created, user 5 updated
        // in place, 21 refused; with the two made by hand, 150 users.
        assert_eq!(
            s.bulk_sizes.iter().sum::<usize>(),
            150,
            "{:?}",
            s.bulk_sizes
        );
        assert!(s.bulk_sizes.iter().all(|n| *n <= 100), "{:?}", s.bulk_sizes);
        assert!(
            s.polls > s.bulk_sizes.len(),
            "a job that takes 0.9 s is polled more than once: {} polls for {} jobs",
            s.polls,
            s.bulk_sizes.len()
        );
        assert_eq!(s.active_users().count(), 150);
        let five = s.user("5").expect("user 5");
        assert_eq!(five.id, 7002, "matched on external_id, not created again");
        assert_eq!(
            (five.text("email"), five.text("name"), five.text("plan")),
            ("user5@example.com".into(), "Name5".into(), "pro".into()),
            "plan is a custom field (user_fields)"
        );
        assert!(five.custom.contains_key("plan") && !five.properties.contains_key("plan"));
    });

    // Mirror mode: users that left the model are deleted by the ids
    // Zendesk gave, in destroy_many jobs.
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id > 140",
    )
    .await;
    let run = env.run_sync("customers_zd", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(10)),
        "{run}"
    );
    zendesk.with(|s| {
        assert!(s.user("141").is_none() && s.user("140").is_some());
        assert!(
            s.user("5").is_some(),
            "the hand-made user Ebb updated is kept"
        );
        assert_eq!(
            s.requests
                .iter()
                .filter(|r| r.as_str() == "DELETE /users/destroy_many")
                .count(),
            1
        );
    });
}

#[tokio::test]
async fn organizations_are_upserted_one_by_one_and_a_duplicate_name_is_refused() {
    let zendesk = Zendesk::start().await;
    // Names repeat every 25 ids: records 26..30 name the organizations of
    // records 1..5, and Zendesk's organization names are unique.
    let setup = Setup {
        zendesk: &zendesk,
        batch: 50,
        extra: "object = \"organizations\"",
        mapping: "external_id = \"id\"\nname = \"org_name\"\ntier = \"plan\"",
        orgs: 25,
    };
    let mut env = env(setup, 30).await;
    env.start_worker(2);
    let run = env.run_sync("customers_zd", &[]).await;
    assert_eq!(
        (
            run["state"].as_str(),
            run["delivered"].as_i64(),
            run["rejected"].as_i64()
        ),
        (Some("succeeded"), Some(25), Some(5)),
        "{run}"
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let reasons: Vec<&str> = dlq
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["reason"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(reasons.len(), 5, "{dlq}");
    assert!(
        reasons
            .iter()
            .all(|r| *r == "Zendesk 422: Name: has already been taken"),
        "{reasons:?}"
    );
    zendesk.with(|s| {
        assert_eq!(s.active_organizations().count(), 25);
        let org = s
            .active_organizations()
            .find(|o| o.text("external_id") == "12")
            .expect("organization 12");
        assert_eq!(org.text("name"), "Org 12");
        assert_eq!(
            org.custom.get("tier"),
            Some(&json!("free")),
            "a custom field"
        );
        assert_eq!(
            s.requests
                .iter()
                .filter(|r| r.as_str() == "POST /organizations/create_or_update")
                .count(),
            30,
            "one request per organization"
        );
    });

    // Changes update the organization in place; mirror removals delete by
    // the ids Zendesk gave.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'gold' WHERE id BETWEEN 10 AND 12",
    )
    .await;
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id BETWEEN 21 AND 25",
    )
    .await;
    let run = env.run_sync("customers_zd", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 8, "3 updates and 5 removals: {run}");
    zendesk.with(|s| {
        let tier = |x: &str| {
            s.active_organizations()
                .find(|o| o.text("external_id") == x)
                .map(|o| o.text("tier"))
        };
        assert_eq!(tier("11").as_deref(), Some("gold"));
        assert_eq!(tier("13").as_deref(), Some("pro"));
        assert_eq!(tier("22"), None, "removed");
        assert_eq!(s.active_organizations().count(), 20);
        assert!(
            s.requests
                .iter()
                .any(|r| r == "DELETE /organizations/destroy_many")
        );
    });
}

#[tokio::test]
async fn the_account_limit_is_held_across_workers_and_a_429_is_waited_out() {
    let zendesk = Zendesk::start().await;
    zendesk.with(|s| s.rate.limit = Some((8, Duration::from_secs(1))));
    let setup = Setup {
        zendesk: &zendesk,
        batch: 10,
        extra: "rate_limit = { requests = 8, per_seconds = 1 }",
        mapping: USERS,
        orgs: 1,
    };
    let mut env = env(setup, 120).await;
    env.start_worker(4);
    env.start_worker(4);
    let run = env.run_sync("customers_zd", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(120)),
        "{run}"
    );
    zendesk.with(|s| {
        assert_eq!(s.active_users().count(), 120);
        assert_eq!(
            s.rate.violations,
            0,
            "no request over the account's limit, job polls included ({} requests)",
            s.requests.len()
        );
    });

    // The account's limit falls below the configured one: Zendesk answers
    // 429 with Retry-After, which is waited out, without duplicates.
    zendesk.with(|s| s.rate.limit = Some((3, Duration::from_secs(1))));
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'gold' WHERE id <= 60",
    )
    .await;
    let run = env.run_sync("customers_zd", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(60)),
        "{run}"
    );
    assert!(run["throttled"].as_i64().unwrap_or(0) >= 1, "{run}");
    zendesk.with(|s| {
        assert!(s.rate.violations >= 1);
        assert_eq!(s.active_users().count(), 120);
        assert_eq!(
            s.user("60").map(|u| u.text("plan")).as_deref(),
            Some("gold")
        );
    });
}

#[tokio::test]
async fn check_connect_reads_the_role_the_account_limit_and_the_custom_fields() {
    let zendesk = Zendesk::start().await;
    zendesk.with(|s| s.user_field_keys = vec!["plan".into()]);
    let setup = Setup {
        zendesk: &zendesk,
        batch: 100,
        extra: "",
        mapping: USERS,
        orgs: 1,
    };
    let base = placeholders(&setup);
    let env = env(setup, 5).await;
    let (code, stdout, stderr) = env.check_connect().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "Zendesk accepts the mapping of sync `customers_zd` as {EMAIL} (admin)"
        )),
        "{stdout}"
    );

    zendesk.with(|s| {
        s.user_field_keys.clear();
        s.role = "end-user".into();
        s.account_limit = 100;
    });
    let (code, _, stderr) = env.check_connect().await;
    assert_ne!(code, Some(0));
    for expected in [
        "`plan` is neither a Zendesk user property nor a custom field of this account",
        "as ops@acme.example (end-user); Zendesk lets only agents and admins write users",
        "Zendesk allows this account 100 requests a minute (its X-Rate-Limit header) and the destination's rate_limit allows 200",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }

    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{API_TOKEN}", "wrong-token-777"))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("bad credentials: Zendesk 401: Couldn't authenticate you"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-token-777"),
        "the token stays out of messages"
    );
    assert_eq!(zendesk.with(|s| s.writes()), 0, "checks write nothing");
}
