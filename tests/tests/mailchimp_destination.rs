//! End-to-end syncs into the `mailchimp` destination, through the real
//! planner, queue and workers, against the Mailchimp emulator in
//! `ebb_tests::mailchimp` (which follows Mailchimp's public API docs).

use std::time::Duration;

use ebb_tests::mailchimp::{API_KEY, LIST_ID, Mailchimp, hash};
use ebb_tests::{TestEnv, dlq_reason, exec, replacing, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.newsletter]
type = "mailchimp"
api_key = "{API_KEY}"
list_id = "{LIST_ID}"
base_url = "{MAILCHIMP_URL}"
batch_size = {BATCH}
mirror_removal = "{REMOVAL}"
max_retries = 3

[syncs.subscribers]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv, CASE WHEN id % 10 = 0 THEN 'vip, beta' END AS tags FROM analytics.customers"
primary_key = "id"
destination = "newsletter"
mode = "mirror"

[syncs.subscribers.mapping]
email_address = "email"
{FNAME} = "first_name"
PLAN = "plan"
LTV = "ltv"
tags = "tags"
"#;

struct Setup<'a> {
    mailchimp: &'a Mailchimp,
    batch: usize,
    removal: &'a str,
}

fn placeholders(setup: &Setup<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("{MAILCHIMP_URL}", setup.mailchimp.url()),
        ("{API_KEY}", API_KEY.to_owned()),
        ("{LIST_ID}", LIST_ID.to_owned()),
        ("{BATCH}", setup.batch.to_string()),
        ("{REMOVAL}", setup.removal.to_owned()),
        ("{FNAME}", "FNAME".to_owned()),
    ]
}

async fn env(setup: Setup<'_>, rows: i64) -> TestEnv {
    let env = TestEnv::new(CONFIG, &placeholders(&setup)).await;
    seed_customers(&env.warehouse, rows).await;
    env
}

#[tokio::test]
async fn members_are_subscribed_updated_by_hash_and_archived_without_resubscribing_anyone() {
    let mailchimp = Mailchimp::start().await;
    let mut env = env(
        Setup {
            mailchimp: &mailchimp,
            batch: 100,
            removal: "archive",
        },
        300,
    )
    .await;
    // Someone already in the audience who unsubscribed: Ebb must update
    // their merge fields and never subscribe them again.
    mailchimp.with(|s| s.add("user7@example.com", "unsubscribed"));
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
    // Valid syntax, but Mailchimp refuses disposable addresses.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'user19@mailinator.com' WHERE id = 19",
    )
    .await;
    env.start_worker(2);

    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 297, "{run}");
    assert_eq!(run["rejected"], 3, "{run}");
    mailchimp.with(|s| {
        assert_eq!(s.active(), 297);
        let batch_subscribes = s
            .requests
            .iter()
            .filter(|r| *r == "POST /lists/a1b2c3d4e5")
            .count();
        assert_eq!(batch_subscribes, 3, "one batch subscribe per batch");
        assert_eq!(s.calls("PUT "), 1, "only the existing member was PUT");
        let user7 = s.member("user7@example.com").expect("user7");
        assert_eq!(
            user7.status, "unsubscribed",
            "an unsubscribed member stays unsubscribed"
        );
        assert_eq!(user7.merge_fields["FNAME"], "Name7");
        let user10 = s.member("user10@example.com").expect("user10");
        assert_eq!(user10.status, "subscribed");
        assert_eq!(user10.merge_fields["PLAN"], "free");
        assert!(
            user10.tags.contains("vip") && user10.tags.contains("beta"),
            "{user10:?}"
        );
    });
    assert_eq!(
        env.ledger_id("subscribers", "20").await,
        Some(hash("user20@example.com"))
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert!(
        dlq_reason(&dlq, "17")
            .contains("`email_address`: `not-an-email` is not a valid email address")
    );
    assert!(dlq_reason(&dlq, "18").contains("`PLAN`: `gold` is not a choice of this merge field"));
    assert!(
        dlq_reason(&dlq, "19").contains("Mailchimp: user19@mailinator.com looks fake or invalid")
    );

    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'user' || id || '@example.com', plan = 'pro' WHERE id IN (17, 18, 19)",
    )
    .await;
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 3, "{run}");
    assert_eq!(env.ebb_json(&["dlq", "list"]).await, serde_json::json!([]));

    // Nothing changed: no API writes.
    let writes = mailchimp.with(|s| s.writes());
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 0, "{run}");
    assert_eq!(mailchimp.with(|s| s.writes()), writes);

    // Changed rows are PUT on their hash; a new address moves the member.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise' WHERE id BETWEEN 30 AND 39",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'new41@example.com' WHERE id = 41",
    )
    .await;
    mailchimp.with(|s| {
        s.members
            .get_mut(&hash("user42@example.com"))
            .unwrap()
            .status = "unsubscribed".into()
    });
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Renamed' WHERE id = 42",
    )
    .await;
    let puts = mailchimp.with(|s| s.calls("PUT "));
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 12, "{run}");
    mailchimp.with(|s| {
        assert_eq!(s.calls("PUT "), puts + 12);
        assert_eq!(s.active(), 300);
        assert!(
            s.member("user41@example.com").is_none(),
            "the old address is gone"
        );
        assert_eq!(
            s.member("new41@example.com").expect("moved").merge_fields["FNAME"],
            "Name41"
        );
        let user42 = s.member("user42@example.com").unwrap();
        assert_eq!(
            (
                user42.status.as_str(),
                user42.merge_fields["FNAME"].as_str()
            ),
            ("unsubscribed", "Renamed")
        );
        assert_eq!(
            s.member("user35@example.com").unwrap().merge_fields["PLAN"],
            "enterprise"
        );
    });
    assert_eq!(
        env.ledger_id("subscribers", "41").await,
        Some(hash("new41@example.com"))
    );

    // Mirror mode archives members whose rows left the model.
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id <= 5",
    )
    .await;
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 5, "{run}");
    mailchimp.with(|s| {
        assert_eq!(s.active(), 295);
        assert_eq!(s.member("user3@example.com").unwrap().status, "archived");
    });
    assert!(
        !env.worker_log(0).contains(API_KEY),
        "the key stays out of logs"
    );
}

#[tokio::test]
async fn ten_connections_are_never_exceeded() {
    let mailchimp = Mailchimp::start().await;
    mailchimp.with(|s| s.latency = Duration::from_millis(100));
    let mut env = env(
        Setup {
            mailchimp: &mailchimp,
            batch: 10,
            removal: "archive",
        },
        400,
    )
    .await;
    env.start_worker(8);
    env.start_worker(8);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 400, "{run}");
    mailchimp.with(|s| {
        assert_eq!(s.violations, 0, "no request over the 10-connection limit");
        assert!(
            s.max_in_flight >= 5,
            "the limit was used: {}",
            s.max_in_flight
        );
        assert_eq!(s.active(), 400);
    });
}

/// The batch subscribe is applied and its answer lost: the retry finds
/// every member existing and updates them, creating nothing twice and
/// changing no status.
#[tokio::test]
async fn a_lost_batch_subscribe_answer_is_retried_without_harm() {
    let mailchimp = Mailchimp::start().await;
    let mut env = env(
        Setup {
            mailchimp: &mailchimp,
            batch: 100,
            removal: "archive",
        },
        100,
    )
    .await;
    mailchimp.with(|s| s.drop_after_apply_left = 1);
    env.start_worker(2);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 100, "{run}");
    assert!(run["retries"].as_i64().unwrap() >= 1, "{run}");
    mailchimp.with(|s| {
        assert_eq!(s.members.len(), 100);
        assert!(s.members.values().all(|m| m.status == "subscribed"));
        assert_eq!(
            s.calls("PUT "),
            100,
            "the retry updated the existing members"
        );
    });
}

/// Mailchimp failing 15% of member `PUT`s transiently (503s, and
/// connections dropped after the change was applied): 500 member updates
/// in one batch are all applied and none fails, and no member's `PUT` is
/// sent more often than its own failures explain. (Retrying the batch as a
/// whole re-sent all 500 `PUT`s on any one failure, so at this rate no
/// attempt ever succeeded and every record failed.)
#[tokio::test]
async fn member_updates_are_retried_one_by_one_when_mailchimp_fails_some() {
    let mailchimp = Mailchimp::start().await;
    let setup = Setup {
        mailchimp: &mailchimp,
        batch: 500,
        removal: "archive",
    };
    let config = CONFIG.replace("max_retries = 3", "max_retries = 5");
    let mut env = TestEnv::new(&config, &placeholders(&setup)).await;
    seed_customers(&env.warehouse, 500).await;
    env.start_worker(2);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 500, "{run}");

    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = first_name || ' Jr'",
    )
    .await;
    mailchimp.with(|s| s.flaky_puts_percent = 15);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 500, "{run}");
    assert_eq!(run["failed"], 0, "{run}");
    assert!(run["retries"].as_i64() >= Some(1), "{run}");
    mailchimp.with(|s| {
        let failures: u32 = s.failed_puts.values().sum();
        assert!(failures >= 40, "the emulator failed {failures} PUTs");
        assert_eq!(s.puts.len(), 500, "one member PUT each");
        for (key, puts) in &s.puts {
            let failed = s.failed_puts.get(key).copied().unwrap_or(0);
            assert_eq!(
                *puts,
                failed + 1,
                "member {key}: {puts} PUTs for {failed} failures of its own"
            );
        }
        for member in s.members.values() {
            assert!(
                member.merge_fields["FNAME"].ends_with(" Jr"),
                "{member:?} was updated"
            );
        }
    });
}

/// A member's new address moves it to a new subscriber hash with its
/// `PUT`; the tags request after it fails transiently. The retry adds the
/// tags at the new hash without `PUT`ting again (a second `PUT` at the old
/// hash would be refused: the address now belongs to the moved member),
/// and the ledger keeps the new hash. (The record used to be rejected, and
/// the ledger kept the old hash.)
#[tokio::test]
async fn tags_that_fail_after_an_address_change_are_retried_at_the_new_hash() {
    let mailchimp = Mailchimp::start().await;
    let mut env = env(
        Setup {
            mailchimp: &mailchimp,
            batch: 100,
            removal: "archive",
        },
        20,
    )
    .await;
    env.start_worker(1);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 20, "{run}");
    let old_hash = hash("user10@example.com");
    assert_eq!(
        env.ledger_id("subscribers", "10").await,
        Some(old_hash.clone())
    );

    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'user10-new@example.com' WHERE id = 10",
    )
    .await;
    mailchimp.with(|s| s.tags_unavailable_left = 1);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 1, "{run}");
    assert_eq!(run["rejected"], 0, "{run}");
    assert!(run["retries"].as_i64() >= Some(1), "{run}");
    let new_hash = hash("user10-new@example.com");
    assert_eq!(
        env.ledger_id("subscribers", "10").await,
        Some(new_hash.clone())
    );
    mailchimp.with(|s| {
        assert_eq!(s.puts.get(&old_hash), Some(&1), "one PUT at the old hash");
        assert_eq!(s.puts.get(&new_hash), None, "no PUT at the new hash");
        let moved = s.members.get(&new_hash).expect("the moved member");
        assert_eq!(moved.email, "user10-new@example.com");
        assert!(
            moved.tags.contains("vip") && moved.tags.contains("beta"),
            "{moved:?}"
        );
        assert!(
            !s.members.contains_key(&old_hash),
            "no member left at the old hash"
        );
    });
}

/// A removal answered 404 counts as done only when the 404 is Mailchimp's
/// own "not found" for an audience that still exists. A member deleted by
/// hand in Mailchimp is done; a proxy's 404 page, or an audience deleted
/// meanwhile, fails the removal, and the ledger keeps the member for a
/// later run. (Any 404 used to count as removed, and the ledger forgot
/// members that were never removed.)
#[tokio::test]
async fn only_mailchimps_own_member_not_found_counts_as_removed() {
    let mailchimp = Mailchimp::start().await;
    let mut env = env(
        Setup {
            mailchimp: &mailchimp,
            batch: 100,
            removal: "archive",
        },
        30,
    )
    .await;
    env.start_worker(1);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["delivered"], 30, "{run}");
    let in_ledger = |key: &'static str| {
        let state = env.state.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM ebb_ledger WHERE sync_name = 'subscribers' AND record_key = $1",
            )
            .bind(key)
            .fetch_one(&state)
            .await
            .expect("ledger")
                == 1
        }
    };

    // Deleted by hand in Mailchimp, then removed from the model: done.
    mailchimp.with(|s| s.members.remove(&hash("user1@example.com")));
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id = 1",
    )
    .await;
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 1, "{run}");
    assert!(
        !in_ledger("1").await,
        "a member Mailchimp no longer has is removed"
    );

    // A proxy's 404 page: not Mailchimp's answer, nothing was removed.
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id = 2",
    )
    .await;
    mailchimp.with(|s| s.proxy_not_found_left = 1);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["failed"], 1, "{run}");
    assert!(in_ledger("2").await, "the ledger keeps the member");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert!(dlq_reason(&dlq, "2").contains("nginx"), "{dlq}");
    mailchimp.with(|s| assert_eq!(s.member("user2@example.com").unwrap().status, "subscribed"));

    // The audience was deleted: its 404 is not the member's.
    mailchimp.with(|s| s.list_deleted = true);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert!(in_ledger("2").await, "the ledger keeps the member");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert!(dlq_reason(&dlq, "2").contains("no longer exists"), "{dlq}");

    // Once Mailchimp answers again, the removal goes through.
    mailchimp.with(|s| s.list_deleted = false);
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(!in_ledger("2").await);
    mailchimp.with(|s| assert_eq!(s.member("user2@example.com").unwrap().status, "archived"));
}

#[tokio::test]
async fn permanent_deletion_is_final() {
    let mailchimp = Mailchimp::start().await;
    let mut env = env(
        Setup {
            mailchimp: &mailchimp,
            batch: 100,
            removal: "delete",
        },
        20,
    )
    .await;
    env.start_worker(2);
    assert_eq!(env.run_sync("subscribers", &[]).await["delivered"], 20);
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id IN (1, 2)",
    )
    .await;
    assert_eq!(env.run_sync("subscribers", &[]).await["delivered"], 2);
    mailchimp.with(|s| {
        assert_eq!(s.members.len(), 18);
        assert!(s.member("user1@example.com").is_none());
    });
    // Mailchimp refuses to bring a permanently deleted address back.
    exec(
        &env.warehouse,
        "INSERT INTO analytics.customers VALUES (1, 'user1@example.com', 'Back', 'free', 1)",
    )
    .await;
    let run = env.run_sync("subscribers", &[]).await;
    assert_eq!(run["rejected"], 1, "{run}");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert!(dlq_reason(&dlq, "1").contains("was permanently deleted and cannot be re-imported"));
}

#[tokio::test]
async fn check_connect_finds_bad_keys_unknown_audiences_and_merge_tags() {
    let mailchimp = Mailchimp::start().await;
    let setup = Setup {
        mailchimp: &mailchimp,
        batch: 100,
        removal: "archive",
    };
    let env = env(setup, 5).await;
    let (code, stdout, stderr) = env.check_connect().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("Mailchimp audience a1b2c3d4e5 accepts the mapping"),
        "{stdout}"
    );

    let base = placeholders(&Setup {
        mailchimp: &mailchimp,
        batch: 100,
        removal: "archive",
    });
    let (code, _, stderr) = env
        .check_connect_with(
            CONFIG,
            &replacing(&base, "{API_KEY}", "ffffffffffffffffffffffffffffffff-us6"),
        )
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("bad credentials: Mailchimp 401 API Key Invalid"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ffffffff"),
        "the key stays out of messages"
    );

    let (_, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{LIST_ID}", "zzzzzzzzzz"))
        .await;
    assert!(
        stderr.contains("not found: audience `zzzzzzzzzz`: Mailchimp 404 Resource Not Found"),
        "{stderr}"
    );

    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{FNAME}", "fname"))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(
            "no merge field `fname` (merge tags are case-sensitive: did you mean `FNAME`?)"
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("error: sync").count(),
        1,
        "each problem once: {stderr}"
    );
    assert_eq!(mailchimp.with(|s| s.writes()), 0, "checks write nothing");
}
