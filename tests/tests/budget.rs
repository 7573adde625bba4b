//! The API budget of a dry run (`ebb plan`): the requests it announces are
//! the write requests the real run then makes, counted by the vendor
//! emulators, for a first sync and for a re-sync mixing updates, creates
//! and removals.

use ebb_tests::hubspot::{HubSpot, TOKEN};
use ebb_tests::mailchimp::{API_KEY, LIST_ID, Mailchimp};
use ebb_tests::{TestEnv, exec, seed_customers};
use serde_json::Value;

const CONFIG: &str = r#"
{HEADER}

[destinations.hubspot_contacts]
type = "hubspot"
access_token = "{TOKEN}"
object = "contacts"
match_on = "email"
base_url = "{HUBSPOT_URL}"

[destinations.newsletter]
type = "mailchimp"
api_key = "{API_KEY}"
list_id = "{LIST_ID}"
base_url = "{MAILCHIMP_URL}"

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, first_name, plan FROM analytics.customers"
primary_key = "id"
destination = "hubspot_contacts"
mode = "mirror"

[syncs.contacts.mapping]
email = "email"
firstname = "first_name"
plan = "plan"

[syncs.subscribers]
source = "warehouse"
model = "SELECT id, email, first_name FROM analytics.customers"
primary_key = "id"
destination = "newsletter"
mode = "mirror"

[syncs.subscribers.mapping]
email_address = "email"
FNAME = "first_name"
"#;

async fn env(hubspot: &HubSpot, mailchimp: &Mailchimp) -> TestEnv {
    let mut env = TestEnv::new(
        CONFIG,
        &[
            ("{HUBSPOT_URL}", hubspot.url()),
            ("{TOKEN}", TOKEN.to_owned()),
            ("{MAILCHIMP_URL}", mailchimp.url()),
            ("{API_KEY}", API_KEY.to_owned()),
            ("{LIST_ID}", LIST_ID.to_owned()),
        ],
    )
    .await;
    seed_customers(&env.warehouse, 250).await;
    env.start_worker(2);
    env
}

/// `ebb plan SYNC --json`'s budget.
async fn budget(env: &TestEnv, sync: &str) -> Value {
    let plan = env.ebb_json(&["plan", sync]).await;
    plan["budget"].clone()
}

/// Updates 30 delivered records, adds 10 and removes 5: one batch of
/// updates by id, creates and removals.
async fn change_the_model(env: &TestEnv) {
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Renamed' || id, plan = 'enterprise' WHERE id <= 30",
    )
    .await;
    exec(
        &env.warehouse,
        "INSERT INTO analytics.customers SELECT g, 'user' || g || '@example.com', 'Name' || g, 'free', 1 \
         FROM generate_series(251, 260) g",
    )
    .await;
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id BETWEEN 101 AND 105",
    )
    .await;
}

#[tokio::test]
async fn hubspot_dry_run_requests_equal_the_requests_the_run_makes() {
    let hubspot = HubSpot::start().await;
    let mailchimp = Mailchimp::start().await;
    let env = env(&hubspot, &mailchimp).await;

    // First sync: 250 upserts by email, 100 a request.
    let first = budget(&env, "contacts").await;
    assert_eq!(first["requests"], 3, "{first}");
    assert_eq!(first["writes"]["writes"], 250, "{first}");
    assert_eq!(first["daily_request_quota"], 250_000, "{first}");
    assert_eq!(first["daily_quota_pct"], 3.0 * 100.0 / 250_000.0, "{first}");
    assert_eq!(first["rate_limit"], "100 requests per 10 s", "{first}");
    // 3 requests paced at 95% of 100 per 10 s: 2 intervals of 0.105 s.
    assert_eq!(first["eta_secs"], 0.2, "{first}");
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["requests_planned"], 3, "{run}");
    assert_eq!(run["rows_read"], 250, "{run}");
    assert_eq!(hubspot.with(|s| s.writes()), 3);
    assert_eq!(hubspot.with(|s| s.calls("batch/upsert")), 3);

    // A re-sync of each kind of write: batch/update by id, batch/upsert,
    // batch/archive, one request each.
    change_the_model(&env).await;
    let next = budget(&env, "contacts").await;
    assert_eq!(
        (
            &next["writes"]["updates_by_id"],
            &next["writes"]["writes"],
            &next["writes"]["removes"]
        ),
        (&Value::from(30), &Value::from(10), &Value::from(5)),
        "{next}"
    );
    assert_eq!(next["requests"], 3, "{next}");
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 45, "{run}");
    assert_eq!(hubspot.with(|s| s.writes()), 3 + 3);
    for endpoint in ["batch/update", "batch/archive"] {
        assert_eq!(hubspot.with(|s| s.calls(endpoint)), 1, "{endpoint}");
    }

    // Nothing changed: nothing to spend.
    let idle = budget(&env, "contacts").await;
    assert_eq!(idle["requests"], 0, "{idle}");
    assert!(idle.get("daily_quota_pct").is_none(), "{idle}");
}

#[tokio::test]
async fn mailchimp_dry_run_counts_a_request_per_updated_and_removed_member() {
    let hubspot = HubSpot::start().await;
    let mailchimp = Mailchimp::start().await;
    let env = env(&hubspot, &mailchimp).await;

    // Default batches of 500: one batch subscribe.
    let first = budget(&env, "subscribers").await;
    assert_eq!(first["requests"], 1, "{first}");
    assert!(first.get("daily_request_quota").is_none(), "{first}");
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 250, "{run}");
    assert_eq!(mailchimp.with(|s| s.writes()), 1);

    // 30 PUTs, 1 batch subscribe for the 10 new members, 5 archives.
    change_the_model(&env).await;
    let next = budget(&env, "subscribers").await;
    assert_eq!(next["requests"], 30 + 1 + 5, "{next}");
    assert!(
        next["note"]
            .as_str()
            .is_some_and(|n| n.contains("not counted")),
        "{next}"
    );
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 45, "{run}");
    assert_eq!(mailchimp.with(|s| s.writes()), 1 + 36);
}
