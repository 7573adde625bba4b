//! The conformance table: what every destination must do, written once and
//! run against each destination's emulator (or database), through the real
//! `ebb` and `ebb-worker` binaries. What only one destination does (HubSpot
//! lookups, Mailchimp's resubscription rules, Salesforce bulk jobs, HTTP
//! idempotency keys) is tested beside it, in `<type>_destination.rs`.
//!
//! | scenario                                   | http | postgres | hubspot | mailchimp | salesforce | braze | customerio | intercom | zendesk |
//! |--------------------------------------------|------|----------|---------|-----------|------------|-------|------------|----------|---------|
//! | [`lifecycle`]: first sync with a rejection, no-change re-sync with no write, updates in place, the rejection delivered once fixed, mirror removals | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | [`lost_answers`]: applied writes whose answers are lost, retried without duplicates | ✓ | –¹ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ |
//!
//! ¹ A Postgres transaction commits or not; a commit whose answer is lost
//! is a worker crash after the send, covered by `faults.rs`.

use std::collections::BTreeMap;

use ebb_tests::conformance::{
    BrazeProfiles, CustomerIoPeople, Http, HubSpotContacts, IntercomContacts, MailchimpMembers,
    Postgres, SalesforceContacts, Target, ZendeskUsers,
};
use ebb_tests::{TestEnv, dlq_reason, exec};

const ROWS: i64 = 60;

/// email → first name, as the model has it (`seed_customers`).
fn model(ids: impl Iterator<Item = i64>) -> BTreeMap<String, String> {
    ids.map(|id| (format!("user{id}@example.com"), format!("Name{id}")))
        .collect()
}

/// What the destination holds, checked to hold each record once.
async fn held<T: Target>(target: &T, env: &TestEnv, step: &str) -> BTreeMap<String, String> {
    let contents = target.contents(env).await;
    let held: BTreeMap<String, String> = contents.iter().cloned().collect();
    assert_eq!(
        held.len(),
        contents.len(),
        "{step}: the destination holds some record twice: {contents:?}"
    );
    held
}

fn n(run: &serde_json::Value, field: &str) -> i64 {
    run[field].as_i64().unwrap_or(-1)
}

/// A sync's life: every step a user relies on, in order.
async fn lifecycle<T: Target>() {
    let target = T::start().await;
    let mut env = target.env(ROWS).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'nope' WHERE id = 7",
    )
    .await;
    env.start_worker(2);

    // 1. First sync: every valid row delivered, the invalid one in the DLQ.
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "first sync: {run}");
    assert_eq!(
        (n(&run, "delivered"), n(&run, "rejected")),
        (ROWS - 1, 1),
        "first sync: {run}"
    );
    let mut expected = model((1..=ROWS).filter(|id| *id != 7));
    assert_eq!(held(&target, &env, "first sync").await, expected);
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let reason = dlq_reason(&dlq, "7");
    assert!(
        reason.to_lowercase().contains("email") || reason.contains("nope"),
        "first sync: the rejection says what is wrong: {reason}"
    );

    // 2. No change: nothing planned, nothing written.
    let writes = target.writes(&env).await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "no-change re-sync: {run}");
    assert_eq!(
        (n(&run, "to_send"), n(&run, "delivered")),
        (1, 0),
        "no-change re-sync: only the rejected record is tried again: {run}"
    );
    assert_eq!(n(&run, "rejected"), 1, "no-change re-sync: {run}");
    assert!(
        target.writes(&env).await - writes <= 1,
        "no-change re-sync: at most the rejected record's request is made"
    );

    // 3. Changed rows are updated in place, and the fixed row is delivered.
    let writes = target.writes(&env).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Changed' || id WHERE id <= 5",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'user7@example.com' WHERE id = 7",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "updates: {run}");
    assert_eq!(
        (n(&run, "delivered"), n(&run, "rejected")),
        (6, 0),
        "updates: {run}"
    );
    for id in 1..=5 {
        expected.insert(format!("user{id}@example.com"), format!("Changed{id}"));
    }
    expected.insert("user7@example.com".into(), "Name7".into());
    assert_eq!(held(&target, &env, "updates").await, expected);
    assert!(
        target.writes(&env).await > writes,
        "updates: the destination counts the writes this table relies on"
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert!(
        dlq.as_array().is_some_and(|entries| entries.is_empty()),
        "updates: the fixed record's DLQ entry is resolved: {dlq}"
    );

    // 4. Mirror mode: rows that left the model leave the destination.
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id > 50",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "removals: {run}");
    assert_eq!(n(&run, "delivered"), ROWS - 50, "removals: {run}");
    expected.retain(|email, _| {
        let id: i64 = email
            .trim_start_matches("user")
            .trim_end_matches("@example.com")
            .parse()
            .unwrap_or(0);
        id <= 50
    });
    assert_eq!(held(&target, &env, "removals").await, expected);

    // 5. And then nothing again.
    let writes = target.writes(&env).await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(n(&run, "to_send"), 0, "final re-sync: {run}");
    assert_eq!(
        target.writes(&env).await,
        writes,
        "final re-sync: no request"
    );
}

/// Writes the destination applied, whose answers were lost, are sent again
/// and leave every record once.
async fn lost_answers<T: Target>() {
    let target = T::start().await;
    let mut env = target.env(ROWS).await;
    target.lose_answers(2);
    env.start_worker(2);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(n(&run, "delivered"), ROWS, "{run}");
    assert!(
        n(&run, "retries") >= 1,
        "the lost answers were retried: {run}"
    );
    assert_eq!(held(&target, &env, "lost answers").await, model(1..=ROWS));
}

macro_rules! conformance {
    ($destination:ident: $target:ident => $($scenario:ident),+) => {
        mod $destination {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario::<super::$target>().await;
                }
            )+
        }
    };
}

conformance!(http: Http => lifecycle, lost_answers);
conformance!(postgres: Postgres => lifecycle);
conformance!(hubspot: HubSpotContacts => lifecycle, lost_answers);
conformance!(mailchimp: MailchimpMembers => lifecycle, lost_answers);
conformance!(salesforce: SalesforceContacts => lifecycle, lost_answers);
conformance!(braze: BrazeProfiles => lifecycle, lost_answers);
conformance!(customerio: CustomerIoPeople => lifecycle, lost_answers);
conformance!(intercom: IntercomContacts => lifecycle, lost_answers);
conformance!(zendesk: ZendeskUsers => lifecycle, lost_answers);
