//! End-to-end syncs into the `meta_custom_audience` destination, through
//! the real planner, queue and workers, against the Graph API emulator in
//! `ebb_tests::meta` (which follows Meta's public docs): membership follows
//! the model, and no identifier leaves Ebb unhashed.

use std::time::Duration;

use ebb_shared::destinations::util::audience::sha256_hex;
use ebb_tests::meta::{AUDIENCE_ID, Meta, TOKEN};
use ebb_tests::{TestEnv, dlq_reason, exec, replacing, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.audience]
type = "meta_custom_audience"
audience_id = "{AUDIENCE_ID}"
access_token = "{TOKEN}"
base_url = "{META_URL}"
batch_size = {BATCH}
max_retries = 3
rate_limit = { requests = 5, per_seconds = 1 }

[syncs.buyers]
source = "warehouse"
model = """
SELECT id, email, first_name,
       '+1 (650) 555-' || lpad(id::text, 4, '0') AS phone,
       'US' AS country
FROM analytics.customers
"""
primary_key = "id"
destination = "audience"
mode = "mirror"

[syncs.buyers.mapping]
email = "email"
phone = "phone"
fn = "first_name"
country = "country"
"#;

fn placeholders(meta: &Meta, batch: usize) -> Vec<(&'static str, String)> {
    vec![
        ("{META_URL}", meta.url()),
        ("{AUDIENCE_ID}", AUDIENCE_ID.to_owned()),
        ("{TOKEN}", TOKEN.to_owned()),
        ("{BATCH}", batch.to_string()),
    ]
}

/// Every request body Meta received holds hashes, never a raw identifier
/// of the model: no address, name, phone number or country in clear.
fn assert_nothing_raw(meta: &Meta, rows: i64) {
    meta.with(|s| {
        assert!(!s.requests.is_empty());
        for (_, body) in &s.requests {
            let lower = body.to_lowercase();
            assert!(!body.contains('@'), "an email address in clear: {body}");
            assert!(!lower.contains("\"us\""), "a country in clear: {body}");
            assert!(!body.contains("(650)"), "a phone number in clear: {body}");
            for id in 1..=rows {
                let phone = format!("16505550{id:03}");
                assert!(
                    !body.contains(&phone[..10]),
                    "a phone number in clear: {body}"
                );
                assert!(
                    !lower.contains(&format!("name{id}\"")),
                    "a name in clear: {body}"
                );
                assert!(
                    !lower.contains(&format!("changed{id}")),
                    "a name in clear: {body}"
                );
            }
        }
    });
}

#[tokio::test]
async fn members_follow_the_model_hashed_and_within_the_account_limit() {
    let meta = Meta::start().await;
    meta.with(|s| {
        s.rate.limit = Some((5, Duration::from_secs(1)));
        // Meta counts this member's address invalid.
        s.invalid_hashes.push(sha256_hex("user9@example.com"));
    });
    let mut env = TestEnv::new(CONFIG, &placeholders(&meta, 10)).await;
    seed_customers(&env.warehouse, 60).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'nope' WHERE id = 7",
    )
    .await;
    env.start_worker(2);
    env.start_worker(2);

    // 1. First sync: 58 members; 7 refused before sending, 9 by Meta.
    let run = env.run_sync("buyers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(
        (run["delivered"].as_i64(), run["rejected"].as_i64()),
        (Some(58), Some(2)),
        "{run}"
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert_eq!(
        dlq_reason(&dlq, "7"),
        "`email` (nope) is not an email address; Meta could not match it"
    );
    assert!(
        dlq_reason(&dlq, "9")
            .starts_with("Meta counted this member invalid: EMAIL could not be matched"),
        "{dlq}"
    );
    meta.with(|s| {
        assert_eq!(s.members.len(), 58);
        let five = s
            .member_with("EMAIL", &sha256_hex("user5@example.com"))
            .expect("member 5");
        assert_eq!(five.get("PHONE"), Some(&sha256_hex("16505550005")));
        // Letters only: "Name5" is "name" to Meta.
        assert_eq!(five.get("FN"), Some(&sha256_hex("name")));
        assert_eq!(five.get("COUNTRY"), Some(&sha256_hex("us")));
        assert_eq!(s.rate.violations, 0, "no request over the account's limit");
    });

    // 2. No change: no request.
    let writes = meta.with(|s| s.writes());
    let run = env.run_sync("buyers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["rejected"], 2, "{run}");
    assert_eq!(
        meta.with(|s| s.writes()) - writes,
        1,
        "only the record Meta refused is sent again (the other is refused before sending)"
    );

    // 3. A new address removes the old member and adds the new one; a new
    // first name replaces the member too (a member is all its identifiers).
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'moved3@example.com' WHERE id = 3",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Changed' || id WHERE id = 4",
    )
    .await;
    let run = env.run_sync("buyers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 2, "{run}");
    meta.with(|s| {
        assert_eq!(s.members.len(), 58);
        assert!(
            s.member_with("EMAIL", &sha256_hex("user3@example.com"))
                .is_none()
        );
        assert!(
            s.member_with("EMAIL", &sha256_hex("moved3@example.com"))
                .is_some()
        );
        let four = s
            .member_with("EMAIL", &sha256_hex("user4@example.com"))
            .expect("member 4");
        assert_eq!(four.get("FN"), Some(&sha256_hex("changed")));
    });

    // 4. Mirror mode: people who left the model leave the audience.
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id > 50",
    )
    .await;
    let run = env.run_sync("buyers", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(10)),
        "{run}"
    );
    meta.with(|s| {
        assert_eq!(s.members.len(), 48);
        assert!(
            s.member_with("EMAIL", &sha256_hex("user51@example.com"))
                .is_none()
        );
        assert!(s.requests.iter().any(|(method, _)| method == "DELETE"));
    });
    assert_nothing_raw(&meta, 60);
}

#[tokio::test]
async fn lost_answers_are_sent_again_without_a_second_member() {
    let meta = Meta::start().await;
    meta.with(|s| s.drop_after_apply_left = 2);
    let mut env = TestEnv::new(CONFIG, &placeholders(&meta, 20)).await;
    seed_customers(&env.warehouse, 60).await;
    env.start_worker(2);
    let run = env.run_sync("buyers", &[]).await;
    assert_eq!(
        (run["state"].as_str(), run["delivered"].as_i64()),
        (Some("succeeded"), Some(60)),
        "{run}"
    );
    assert!(run["retries"].as_i64().unwrap_or(0) >= 1, "{run}");
    meta.with(|s| {
        assert_eq!(s.members.len(), 60);
        assert!(s.writes() > 3, "the lost requests were sent again");
    });
    assert_nothing_raw(&meta, 60);
}

#[tokio::test]
async fn check_connect_reads_the_audience_and_names_a_bad_token() {
    let meta = Meta::start().await;
    let base = placeholders(&meta, 10);
    let env = TestEnv::new(CONFIG, &base).await;
    seed_customers(&env.warehouse, 5).await;
    let (code, stdout, stderr) = env.check_connect().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Meta accepts the token for sync `buyers`: Custom Audience {AUDIENCE_ID} (Warehouse buyers)")),
        "{stdout}"
    );

    meta.with(|s| s.subtype = "LOOKALIKE".into());
    let (code, _, stderr) = env.check_connect().await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("is a LOOKALIKE audience"), "{stderr}");

    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{TOKEN}", "EAAB-revoked-000"))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("bad credentials: Meta 400: Invalid OAuth access token - Cannot parse access token [code 190]"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("EAAB-revoked-000"),
        "the token stays out of messages"
    );
    assert_eq!(meta.with(|s| s.writes()), 0, "checks write nothing");
}
