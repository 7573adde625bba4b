//! End-to-end syncs into the `google_customer_match` destination, through
//! the real planner, queue and workers, against the Google Ads API and
//! OAuth emulator in `ebb_tests::google_ads` (which follows Google's public
//! docs): membership follows the model through offline user data jobs, and
//! no identifier leaves Ebb unhashed.

use ebb_shared::destinations::util::audience::sha256_hex;
use ebb_tests::google_ads::{
    CLIENT_ID, CLIENT_SECRET, DEVELOPER_TOKEN, GoogleAds, REFRESH_TOKEN, USER_LIST_ID,
};
use ebb_tests::{TestEnv, dlq_reason, exec, replacing, seed_customers};
use serde_json::json;

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.list]
type = "google_customer_match"
customer_id = "123-456-7890"
user_list_id = "{USER_LIST_ID}"
developer_token = "{DEVELOPER_TOKEN}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
refresh_token = "{REFRESH_TOKEN}"
ad_user_data_consent = "granted"
base_url = "{GOOGLE_URL}"
token_url = "{GOOGLE_URL}/token"
batch_size = {BATCH}
max_retries = 3
rate_limit = { requests = {RATE}, per_seconds = 1 }

[syncs.buyers]
source = "warehouse"
model = """
SELECT id, email, first_name, 'Doe' AS last_name,
       '+1 650 555 ' || lpad(id::text, 4, '0') AS phone,
       CASE WHEN id = 13 THEN 'XX' ELSE 'us' END AS country_code,
       '94' || lpad(id::text, 3, '0') AS postal_code
FROM analytics.customers
"""
primary_key = "id"
destination = "list"
mode = "mirror"

[syncs.buyers.mapping]
email = "email"
phone = "phone"
first_name = "first_name"
last_name = "last_name"
country_code = "country_code"
postal_code = "postal_code"
"#;

fn placeholders(google: &GoogleAds, batch: usize, rate: u32) -> Vec<(&'static str, String)> {
    vec![
        ("{BATCH}", batch.to_string()),
        ("{RATE}", rate.to_string()),
        ("{GOOGLE_URL}", google.url()),
        ("{USER_LIST_ID}", USER_LIST_ID.to_owned()),
        ("{DEVELOPER_TOKEN}", DEVELOPER_TOKEN.to_owned()),
        ("{CLIENT_ID}", CLIENT_ID.to_owned()),
        ("{CLIENT_SECRET}", CLIENT_SECRET.to_owned()),
        ("{REFRESH_TOKEN}", REFRESH_TOKEN.to_owned()),
    ]
}

async fn env(google: &GoogleAds, rows: i64, batch: usize, rate: u32) -> TestEnv {
    let env = TestEnv::new(CONFIG, &placeholders(google, batch, rate)).await;
    seed_customers(&env.warehouse, rows).await;
    env
}

/// Every request body Google received holds hashes (and the country and
/// postal codes Google takes in clear), never an address, a phone number
/// or a name.
fn assert_nothing_raw(google: &GoogleAds) {
    google.with(|s| {
        assert!(!s.requests.is_empty());
        for (_, body) in &s.requests {
            let lower = body.to_lowercase();
            assert!(!body.contains('@'), "an email address in clear: {body}");
            assert!(!body.contains("6505550"), "a phone number in clear: {body}");
            assert!(!lower.contains("\"doe\""), "a last name in clear: {body}");
            for id in 1..=100 {
                assert!(
                    !lower.contains(&format!("\"name{id}\"")),
                    "a first name in clear: {body}"
                );
            }
        }
    });
}

#[tokio::test]
async fn members_follow_the_model_through_jobs_and_refusals_reach_the_dlq() {
    let google = GoogleAds::start().await;
    let mut env = env(&google, 60, 20, 50).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'nope' WHERE id = 7",
    )
    .await;
    env.start_worker(2);

    // 1. First sync: 58 members; 7 refused before sending, 13 by Google.
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
        "`email` (nope) is not an email address; Google could not match it"
    );
    assert_eq!(
        dlq_reason(&dlq, "13"),
        "Google Ads: The country code is invalid. (offlineUserDataJobError: INVALID_COUNTRY_CODE)"
    );
    google.with(|s| {
        assert_eq!(s.members.len(), 58);
        assert_eq!(s.jobs_run(), 3, "a job per batch of 20");
        assert_eq!(s.last_consent, json!({"adUserData": "GRANTED"}));
        let five = s
            .member_with("hashedEmail", &sha256_hex("user5@example.com"))
            .expect("member 5");
        assert_eq!(
            five.get("hashedPhoneNumber"),
            Some(&sha256_hex("+16505550005"))
        );
        assert_eq!(
            five.get("addressInfo.hashedFirstName"),
            Some(&sha256_hex("name5"))
        );
        assert_eq!(
            five.get("addressInfo.hashedLastName"),
            Some(&sha256_hex("doe"))
        );
        assert_eq!(
            five.get("addressInfo.countryCode").map(String::as_str),
            Some("US")
        );
        assert_eq!(
            five.get("addressInfo.postalCode").map(String::as_str),
            Some("94005")
        );
    });

    // 2. No change: only the record Google refused is tried again (one job).
    let jobs = google.with(|s| s.jobs_run());
    let run = env.run_sync("buyers", &[]).await;
    assert_eq!(run["rejected"], 2, "{run}");
    assert_eq!(google.with(|s| s.jobs_run()) - jobs, 1);

    // 3. A new address: removed under the old identifiers, added under the
    // new, in two jobs (Google never mixes them); the access token Google
    // stopped accepting is refreshed.
    google.with(|s| s.revoke_tokens());
    let refreshes = google.with(|s| s.token_refreshes);
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'moved3@example.com' WHERE id = 3",
    )
    .await;
    let run = env.run_sync("buyers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    google.with(|s| {
        assert!(
            s.token_refreshes > refreshes,
            "a new access token after the 401"
        );
        assert_eq!(s.members.len(), 58);
        assert!(
            s.member_with("hashedEmail", &sha256_hex("user3@example.com"))
                .is_none()
        );
        assert!(
            s.member_with("hashedEmail", &sha256_hex("moved3@example.com"))
                .is_some()
        );
    });

    // 4. Mirror mode: people who left the model leave the list.
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
    google.with(|s| {
        assert_eq!(s.members.len(), 48);
        assert!(
            s.member_with("hashedEmail", &sha256_hex("user51@example.com"))
                .is_none()
        );
    });
    assert_nothing_raw(&google);
}

#[tokio::test]
async fn a_lost_job_answer_is_made_again_without_a_second_member_within_the_rate() {
    let google = GoogleAds::start().await;
    google.with(|s| {
        s.drop_after_apply_left = 1;
        s.rate.limit = Some((10, std::time::Duration::from_secs(1)));
    });
    // 10 jobs of 3 requests, at the developer token's 10 a second.
    let mut env = env(&google, 100, 10, 10).await;
    env.start_worker(2);
    env.start_worker(2);
    let run = env.run_sync("buyers", &[]).await;
    assert_eq!(
        (
            run["state"].as_str(),
            run["delivered"].as_i64(),
            run["rejected"].as_i64()
        ),
        (Some("succeeded"), Some(99), Some(1)),
        "{run}"
    );
    assert!(run["retries"].as_i64().unwrap_or(0) >= 1, "{run}");
    google.with(|s| {
        assert_eq!(s.members.len(), 99);
        assert!(
            s.jobs_run() > 10,
            "the lost job was made again: {} jobs",
            s.jobs_run()
        );
        assert_eq!(
            s.rate.violations,
            0,
            "no request over the developer token's rate ({} requests from two workers)",
            s.requests.len()
        );
    });
    assert_nothing_raw(&google);
}

#[tokio::test]
async fn check_connect_reads_the_list_and_names_bad_credentials() {
    let google = GoogleAds::start().await;
    let base = placeholders(&google, 20, 50);
    let env = env(&google, 5, 20, 50).await;
    let (code, stdout, stderr) = env.check_connect().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "Google Ads accepts the credentials for sync `buyers`: Customer Match list {USER_LIST_ID} (Warehouse customers)"
        )),
        "{stdout}"
    );

    google.with(|s| s.list_type = "RULE_BASED".into());
    let (code, _, stderr) = env.check_connect().await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("is a RULE_BASED list"), "{stderr}");

    let (code, _, stderr) = env
        .check_connect_with(
            CONFIG,
            &replacing(&base, "{REFRESH_TOKEN}", "1//revoked-000"),
        )
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(
            "bad credentials: Google OAuth 400: invalid_grant: Token has been expired or revoked."
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("revoked-000"),
        "the token stays out of messages"
    );
    let (code, _, stderr) = env
        .check_connect_with(
            CONFIG,
            &replacing(&base, "{DEVELOPER_TOKEN}", "wrong-dev-token"),
        )
        .await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("DEVELOPER_TOKEN_INVALID"), "{stderr}");
    assert_eq!(google.with(|s| s.jobs_run()), 0, "checks write nothing");
}
