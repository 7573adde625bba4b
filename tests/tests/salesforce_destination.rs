//! End-to-end syncs into the `salesforce` destination, through the real
//! planner, queue and workers, against the Salesforce emulator in
//! `ebb_tests::salesforce` (which follows Salesforce's public API docs).

use ebb_tests::salesforce::{CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, Salesforce};
use ebb_tests::{TestEnv, dlq_reason, exec, replacing, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
shutdown_timeout_secs = 20
requeue_after_secs = 20

[destinations.crm]
type = "salesforce"
login_url = "{SF_URL}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
refresh_token = "{REFRESH_TOKEN}"
api_version = "{VERSION}"
api = "{API}"
object = "Contact"
external_id = "Warehouse_Id__c"
batch_size = {BATCH}
max_retries = 3

[syncs.contacts]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "crm"
mode = "mirror"

[syncs.contacts.mapping]
Warehouse_Id__c = "id"
{EMAIL} = "email"
LastName = "first_name"
Plan__c = "plan"
Lifetime_Value__c = "ltv"
"#;

fn placeholders(salesforce: &Salesforce, batch: usize) -> Vec<(&'static str, String)> {
    vec![
        ("{SF_URL}", salesforce.url()),
        ("{CLIENT_ID}", CLIENT_ID.to_owned()),
        ("{CLIENT_SECRET}", CLIENT_SECRET.to_owned()),
        ("{REFRESH_TOKEN}", REFRESH_TOKEN.to_owned()),
        ("{VERSION}", "62.0".to_owned()),
        ("{BATCH}", batch.to_string()),
        ("{EMAIL}", "Email".to_owned()),
        ("{API}", "collections".to_owned()),
    ]
}

async fn env(salesforce: &Salesforce, rows: i64, batch: usize) -> TestEnv {
    let env = TestEnv::new(CONFIG, &placeholders(salesforce, batch)).await;
    seed_customers(&env.warehouse, rows).await;
    env
}

#[tokio::test]
async fn contacts_are_upserted_by_external_id_updated_by_id_and_deleted() {
    let salesforce = Salesforce::start().await;
    let mut env = env(&salesforce, 250, 100).await;
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
    // Passes Ebb's checks; the org's validation rule refuses it.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Test' WHERE id = 19",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = NULL WHERE id = 20",
    )
    .await;
    env.start_worker(2);

    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 246, "{run}");
    assert_eq!(run["rejected"], 4, "{run}");
    let id21 = salesforce.with(|s| {
        assert_eq!(s.live().len(), 246);
        assert_eq!(
            s.calls("PATCH upsert"),
            3,
            "one collection request per batch; the rejection did not split it"
        );
        let found = s.by_external_id("21");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.fields["Email"], "user21@example.com");
        assert_eq!(found[0].1.fields["Plan__c"], "pro");
        found[0].0.clone()
    });
    assert_eq!(env.ledger_id("contacts", "21").await, Some(id21));
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert!(
        dlq_reason(&dlq, "17").contains("`Email`: `not-an-email` is not a valid email address")
    );
    assert!(
        dlq_reason(&dlq, "18")
            .contains("`Plan__c`: `gold` is not a value of this restricted picklist")
    );
    assert!(
        dlq_reason(&dlq, "19")
            .contains("Salesforce FIELD_CUSTOM_VALIDATION_EXCEPTION: Last name cannot be Test")
    );
    assert!(dlq_reason(&dlq, "20").contains("`LastName`: cannot be empty"));

    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'user' || id || '@example.com', plan = 'pro', first_name = 'Name' || id WHERE id IN (17, 18, 19, 20)",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 4, "{run}");
    assert_eq!(env.ebb_json(&["dlq", "list"]).await, serde_json::json!([]));

    let writes = salesforce.with(|s| s.writes());
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 0, "{run}");
    assert_eq!(
        salesforce.with(|s| s.writes()),
        writes,
        "no API writes when nothing changed"
    );

    // Changed rows are updated by Salesforce id; a contact deleted in
    // Salesforce comes back through the upsert.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise' WHERE id BETWEEN 30 AND 39",
    )
    .await;
    let id41 = env.ledger_id("contacts", "41").await.unwrap();
    salesforce.with(|s| s.contacts.get_mut(&id41).unwrap().deleted = true);
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Renamed' WHERE id = 41",
    )
    .await;
    let (updates, upserts) =
        salesforce.with(|s| (s.calls("PATCH update"), s.calls("PATCH upsert")));
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 11, "{run}");
    salesforce.with(|s| {
        assert_eq!(s.calls("PATCH update"), updates + 1);
        assert_eq!(
            s.calls("PATCH upsert"),
            upserts + 1,
            "only the contact deleted in Salesforce was upserted"
        );
        assert_eq!(s.live().len(), 250);
        assert_eq!(s.by_external_id("35")[0].1.fields["Plan__c"], "enterprise");
        assert_eq!(s.by_external_id("41")[0].1.fields["LastName"], "Renamed");
    });
    assert_ne!(
        env.ledger_id("contacts", "41").await.unwrap(),
        id41,
        "the new id is kept"
    );

    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id <= 5",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["delivered"], 5, "{run}");
    salesforce.with(|s| {
        assert_eq!(s.live().len(), 245);
        assert!(s.by_external_id("3").is_empty());
    });
    let log = env.worker_log(0);
    assert!(
        !log.contains(CLIENT_SECRET) && !log.contains(REFRESH_TOKEN),
        "secrets stay out of logs"
    );
}

/// Sessions expire mid-sync (401 `INVALID_SESSION_ID`): workers refresh the
/// token and carry on. The org's API limit (403 `REQUEST_LIMIT_EXCEEDED`)
/// is waited out as back-pressure.
#[tokio::test]
async fn expired_sessions_are_refreshed_and_api_limits_waited_out() {
    let salesforce = Salesforce::start().await;
    let mut env = env(&salesforce, 300, 50).await;
    env.start_worker(2);
    assert_eq!(env.run_sync("contacts", &[]).await["delivered"], 300);
    let issued = salesforce.with(|s| {
        s.expire_tokens();
        s.limit_left = 2;
        s.tokens_issued
    });
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise' WHERE id <= 120",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 120, "{run}");
    assert!(run["throttled"].as_i64().unwrap() >= 2, "{run}");
    salesforce.with(|s| {
        assert!(s.expired_answers >= 1);
        assert!(s.tokens_issued > issued, "the token was refreshed");
        assert_eq!(s.by_external_id("100")[0].1.fields["Plan__c"], "enterprise");
    });
}

#[tokio::test]
async fn a_lost_upsert_answer_is_retried_without_duplicates() {
    let salesforce = Salesforce::start().await;
    let mut env = env(&salesforce, 60, 100).await;
    salesforce.with(|s| s.drop_after_apply_left = 1);
    env.start_worker(2);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 60, "{run}");
    assert!(run["retries"].as_i64().unwrap() >= 1, "{run}");
    salesforce.with(|s| {
        assert_eq!(s.live().len(), 60, "no duplicates");
        for id in 1..=60 {
            assert_eq!(s.by_external_id(&id.to_string()).len(), 1);
        }
    });
}

#[tokio::test]
async fn check_connect_tells_credentials_versions_and_fields_apart() {
    let salesforce = Salesforce::start().await;
    let env = env(&salesforce, 5, 100).await;
    let (code, stdout, stderr) = env.check_connect().await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Salesforce Contact accepts the mapping of sync `contacts`; records are upserted by `Warehouse_Id__c`"), "{stdout}");

    let base = placeholders(&salesforce, 100);
    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{REFRESH_TOKEN}", "5Aep861wrong"))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(
            "bad credentials: Salesforce OAuth 400: invalid_grant: expired access/refresh token"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("5Aep861wrong"),
        "the token stays out of messages"
    );

    let (_, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{VERSION}", "59.0"))
        .await;
    assert!(
        stderr.contains("not found: object `Contact` (API v59.0): Salesforce 404 NOT_FOUND"),
        "{stderr}"
    );

    let (code, _, stderr) = env
        .check_connect_with(CONFIG, &replacing(&base, "{EMAIL}", "Emial"))
        .await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("Contact has no field `Emial`"), "{stderr}");
    assert_eq!(
        stderr.matches("error: sync").count(),
        1,
        "each problem once: {stderr}"
    );
    assert_eq!(salesforce.with(|s| s.writes()), 0, "checks write nothing");
}

/// `api = "bulk"`: each batch of 1,000 becomes one Bulk API 2.0 job
/// (create, upload CSV, close, poll, results), per-record failures come
/// from the job's failed results, and updates and deletes by id are jobs too.
#[tokio::test]
async fn bulk_api_jobs_carry_large_runs() {
    let salesforce = Salesforce::start().await;
    let extra = replacing(&placeholders(&salesforce, 1000), "{API}", "bulk");
    let mut env = TestEnv::new(CONFIG, &extra).await;
    seed_customers(&env.warehouse, 2500).await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'Test' WHERE id = 77",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET email = 'not-an-email' WHERE id = 78",
    )
    .await;
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET first_name = 'O\"Brien, Ann' WHERE id = 79",
    )
    .await;
    env.start_worker(2);

    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 2498, "{run}");
    assert_eq!(run["rejected"], 2, "{run}");
    salesforce.with(|s| {
        assert_eq!(s.live().len(), 2498);
        assert_eq!(s.calls("POST jobs/ingest"), 3, "one job per batch");
        assert_eq!(
            s.calls("PATCH upsert"),
            0,
            "no collection requests in bulk mode"
        );
        assert_eq!(
            s.by_external_id("79")[0].1.fields["LastName"],
            "O\"Brien, Ann",
            "CSV quoting"
        );
    });
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert!(
        dlq_reason(&dlq, "77")
            .contains("Salesforce FIELD_CUSTOM_VALIDATION_EXCEPTION:Last name cannot be Test"),
        "{dlq}"
    );
    assert!(
        dlq_reason(&dlq, "78").contains("`Email`: `not-an-email` is not a valid email address")
    );
    let with_ids = TestEnv::scalar_i64(
        &env.state,
        "SELECT count(*) FROM ebb_ledger WHERE sync_name = 'contacts' AND destination_id LIKE '003EMUL%'",
    )
    .await;
    assert_eq!(with_ids, 2498);

    // Updates by id and mirror deletes run as jobs too.
    exec(
        &env.warehouse,
        "UPDATE analytics.customers SET plan = 'enterprise' WHERE id <= 1500",
    )
    .await;
    exec(
        &env.warehouse,
        "DELETE FROM analytics.customers WHERE id > 2400",
    )
    .await;
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 1600 - 2, "{run}");
    salesforce.with(|s| {
        assert_eq!(s.live().len(), 2398);
        assert_eq!(
            s.by_external_id("1000")[0].1.fields["Plan__c"],
            "enterprise"
        );
        let operations: Vec<&str> = s.jobs.values().map(|j| j.operation.as_str()).collect();
        assert!(
            operations.contains(&"update") && operations.contains(&"delete"),
            "{operations:?}"
        );
        assert!(s.jobs.values().all(|j| j.state == "JobComplete"));
    });
}

/// Reading a bulk job's state fails transiently (503) twice while the job
/// runs: Ebb reads the job it created again instead of creating a second
/// one, which would apply the batch twice over. (A failed poll used to
/// retry the whole batch as a new job.)
#[tokio::test]
async fn a_failed_poll_reads_the_same_bulk_job_again() {
    let salesforce = Salesforce::start().await;
    let extra = replacing(&placeholders(&salesforce, 1000), "{API}", "bulk");
    let mut env = TestEnv::new(CONFIG, &extra).await;
    seed_customers(&env.warehouse, 300).await;
    salesforce.with(|s| {
        s.bulk_polls = 2;
        s.job_reads_unavailable_left = 2;
    });
    env.start_worker(1);
    let run = env.run_sync("contacts", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 300, "{run}");
    salesforce.with(|s| {
        assert_eq!(
            s.calls("POST jobs/ingest"),
            1,
            "one job, read again after the 503s"
        );
        assert_eq!(s.jobs.len(), 1);
        assert_eq!(s.live().len(), 300);
    });
}
