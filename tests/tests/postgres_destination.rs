//! End-to-end syncs into the `postgres` destination through the real planner,
//! Redis queue and worker processes.

use ebb_tests::{TestEnv, create_replica, seed_customers};

const CONFIG: &str = r#"
{HEADER}

[worker]
heartbeat_secs = 2
missed_heartbeats = 3
requeue_after_secs = 20

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 100

[syncs.customers]
source = "warehouse"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "replica"
mode = "{MODE}"

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
"#;

async fn env(mode: &str, rows: i64) -> TestEnv {
    let env = TestEnv::new(CONFIG, &[("{MODE}", mode.to_owned())]).await;
    seed_customers(&env.warehouse, rows).await;
    create_replica(&env.app).await;
    env
}

fn n(run: &serde_json::Value, field: &str) -> i64 {
    run[field]
        .as_i64()
        .unwrap_or_else(|| panic!("run has no `{field}`: {run}"))
}

/// Destination rows must equal the model's valid rows, field by field.
async fn assert_replica_matches_model(env: &TestEnv, excluded_ids: &[i64]) {
    let model: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT id, email, first_name, plan, ltv::text FROM analytics.customers WHERE NOT (id = ANY($1)) ORDER BY id",
    )
    .bind(excluded_ids)
    .fetch_all(&env.warehouse)
    .await
    .unwrap();
    let replica: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT customer_id, email, first_name, plan, lifetime_value::text FROM customers_synced ORDER BY customer_id",
    )
    .fetch_all(&env.app)
    .await
    .unwrap();
    assert_eq!(model.len(), replica.len(), "row counts differ");
    assert!(model == replica, "destination differs from the model");
}

#[tokio::test]
async fn first_run_delivers_valid_rows_and_dead_letters_invalid_ones() {
    let mut env = env("upsert", 1000).await;
    // 6 rows (150, 300, … 900) break the destination's CHECK, 1 row has no key, id 10 is duplicated.
    sqlx::query("UPDATE analytics.customers SET email = 'broken-' || id WHERE id % 150 = 0")
        .execute(&env.warehouse)
        .await
        .unwrap();
    sqlx::query("INSERT INTO analytics.customers VALUES (NULL, 'nokey@example.com', 'N', 'free', 1), (10, 'dupe@example.com', 'D', 'pro', 2)")
        .execute(&env.warehouse)
        .await
        .unwrap();
    env.start_worker(4);
    env.start_worker(4);

    let plan = env.ebb_json(&["plan", "customers"]).await;
    assert_eq!(plan["added"], 999, "{plan}");
    assert_eq!(plan["rejected"], 3, "{plan}");
    assert_eq!(
        TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await,
        0,
        "plan must send nothing"
    );

    let run = env.run_sync("customers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(n(&run, "to_send"), 999);
    assert_eq!(n(&run, "delivered"), 993);
    assert_eq!(n(&run, "rejected"), 6);
    assert_eq!(n(&run, "rejected_at_plan"), 3);

    let broken: Vec<i64> = (1..=1000).filter(|i| i % 150 == 0).collect();
    let mut excluded = broken.clone();
    excluded.push(10);
    assert_replica_matches_model(&env, &excluded).await;

    let dlq = env.ebb_json(&["dlq", "list", "--sync", "customers"]).await;
    let entries = dlq.as_array().unwrap();
    assert_eq!(entries.len(), 9, "{dlq}");
    let mut dead_keys: Vec<i64> = entries
        .iter()
        .filter(|e| e["stage"] == "destination")
        .map(|e| e["record_key"].as_str().unwrap().parse().unwrap())
        .collect();
    dead_keys.sort();
    assert_eq!(dead_keys, broken);
    for e in entries.iter().filter(|e| e["stage"] == "destination") {
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.contains("customers_synced_email_check"),
            "the destination's own message: {reason}"
        );
        assert!(
            e["payload"]["email"]
                .as_str()
                .unwrap()
                .starts_with("broken-")
        );
    }
    let plan_stage: Vec<&serde_json::Value> =
        entries.iter().filter(|e| e["stage"] == "plan").collect();
    assert_eq!(plan_stage.len(), 3);
    assert!(plan_stage.iter().any(|e| e["record_key"].is_null() && e["reason"].as_str().unwrap().contains("is NULL")));
    assert_eq!(
        plan_stage
            .iter()
            .filter(|e| e["record_key"] == "10")
            .count(),
        2
    );
    assert_eq!(
        TestEnv::scalar_i64(&env.state, "SELECT count(*) FROM ebb_ledger").await,
        993
    );
}

#[tokio::test]
async fn unchanged_rerun_sends_nothing_and_changed_rows_send_exactly_those() {
    let mut env = env("upsert", 2000).await;
    env.start_worker(4);
    let first = env.run_sync("customers", &[]).await;
    assert_eq!(n(&first, "delivered"), 2000, "{first}");

    let second = env.run_sync("customers", &[]).await;
    assert_eq!(second["state"], "succeeded");
    assert_eq!(n(&second, "to_send"), 0, "{second}");
    assert_eq!(n(&second, "delivered"), 0);
    assert_eq!(n(&second, "unchanged"), 2000);

    sqlx::query("UPDATE analytics.customers SET plan = 'enterprise' WHERE id % 20 = 0")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let third = env.run_sync("customers", &[]).await;
    assert_eq!(n(&third, "planned_changed"), 100, "{third}");
    assert_eq!(n(&third, "to_send"), 100);
    assert_eq!(n(&third, "delivered"), 100);
    assert_eq!(
        TestEnv::scalar_i64(
            &env.app,
            "SELECT count(*) FROM customers_synced WHERE plan = 'enterprise'"
        )
        .await,
        100
    );
    assert_replica_matches_model(&env, &[]).await;

    let resync = env.run_sync("customers", &["--full-resync"]).await;
    assert_eq!(
        n(&resync, "delivered"),
        2000,
        "full resync sends everything: {resync}"
    );
}

#[tokio::test]
async fn mirror_mode_deletes_rows_that_left_the_model() {
    let mut env = env("mirror", 500).await;
    env.start_worker(4);
    assert_eq!(n(&env.run_sync("customers", &[]).await, "delivered"), 500);
    sqlx::query("DELETE FROM analytics.customers WHERE id <= 50")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let run = env.run_sync("customers", &[]).await;
    assert_eq!(n(&run, "planned_removed"), 50, "{run}");
    assert_eq!(n(&run, "delivered"), 50);
    assert_eq!(
        TestEnv::scalar_i64(
            &env.app,
            "SELECT count(*) FROM customers_synced WHERE customer_id <= 50"
        )
        .await,
        0
    );
    assert_eq!(
        TestEnv::scalar_i64(&env.state, "SELECT count(*) FROM ebb_ledger").await,
        450
    );
    assert_replica_matches_model(&env, &[]).await;
    // A row that comes back is added again.
    sqlx::query("INSERT INTO analytics.customers VALUES (7, 'back@example.com', 'Back', 'pro', 3)")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let back = env.run_sync("customers", &[]).await;
    assert_eq!(n(&back, "planned_added"), 1, "{back}");
    assert_replica_matches_model(&env, &[]).await;
}

#[tokio::test]
async fn upsert_mode_keeps_rows_that_left_the_model() {
    let mut env = env("upsert", 100).await;
    env.start_worker(2);
    env.run_sync("customers", &[]).await;
    sqlx::query("DELETE FROM analytics.customers WHERE id <= 10")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let run = env.run_sync("customers", &[]).await;
    assert_eq!(n(&run, "planned_removed"), 10);
    assert_eq!(n(&run, "to_send"), 0, "{run}");
    assert_eq!(
        TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await,
        100
    );
}

#[tokio::test]
async fn insert_and_update_modes_send_only_what_they_promise() {
    let mut env = env("insert", 100).await;
    env.start_worker(2);
    assert_eq!(n(&env.run_sync("customers", &[]).await, "delivered"), 100);
    sqlx::query("UPDATE analytics.customers SET plan = 'changed' WHERE id <= 10")
        .execute(&env.warehouse)
        .await
        .unwrap();
    sqlx::query("INSERT INTO analytics.customers SELECT g, 'new' || g || '@example.com', 'New', 'free', 1 FROM generate_series(101, 105) g")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let insert_run = env.run_sync("customers", &[]).await;
    assert_eq!(
        n(&insert_run, "delivered"),
        5,
        "insert sends only never-seen records: {insert_run}"
    );
    assert_eq!(n(&insert_run, "skipped_by_mode"), 10);
    assert_eq!(
        TestEnv::scalar_i64(
            &env.app,
            "SELECT count(*) FROM customers_synced WHERE plan = 'changed'"
        )
        .await,
        0
    );

    // The same sync switched to update mode: changed records are sent, new ones are not.
    env.write_config(CONFIG, &[("{MODE}", "update".into())]);
    sqlx::query("INSERT INTO analytics.customers SELECT g, 'later' || g || '@example.com', 'Later', 'free', 1 FROM generate_series(106, 108) g")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let update_run = env.run_sync("customers", &[]).await;
    assert_eq!(
        n(&update_run, "delivered"),
        10,
        "update sends changed records only: {update_run}"
    );
    assert_eq!(n(&update_run, "skipped_by_mode"), 3);
    assert_eq!(
        TestEnv::scalar_i64(
            &env.app,
            "SELECT count(*) FROM customers_synced WHERE plan = 'changed'"
        )
        .await,
        10
    );
    assert_eq!(
        TestEnv::scalar_i64(
            &env.app,
            "SELECT count(*) FROM customers_synced WHERE customer_id > 105"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn dlq_replay_after_fixing_the_destination_delivers_and_clears() {
    let mut env = env("upsert", 300).await;
    sqlx::query("UPDATE analytics.customers SET email = 'no-at-sign' WHERE id IN (3, 30, 300)")
        .execute(&env.warehouse)
        .await
        .unwrap();
    env.start_worker(2);
    let run = env.run_sync("customers", &[]).await;
    assert_eq!(n(&run, "rejected"), 3, "{run}");

    // The operator decides the destination's rule was wrong and drops it.
    sqlx::query("ALTER TABLE customers_synced DROP CONSTRAINT customers_synced_email_check")
        .execute(&env.app)
        .await
        .unwrap();
    let replay = env
        .ebb_json(&["dlq", "replay", "--sync", "customers"])
        .await;
    let replay_run = &replay[0]["run"];
    assert_eq!(replay_run["kind"], "replay", "{replay}");
    assert_eq!(n(replay_run, "delivered"), 3, "{replay}");
    let open = env.ebb_json(&["dlq", "list", "--sync", "customers"]).await;
    assert_eq!(open.as_array().unwrap().len(), 0, "{open}");
    let all = env
        .ebb_json(&["dlq", "list", "--sync", "customers", "--all"])
        .await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "resolved"),
        "{all}"
    );
    assert_replica_matches_model(&env, &[]).await;
    // The ledger now knows them, so the next run has nothing to send.
    assert_eq!(n(&env.run_sync("customers", &[]).await, "to_send"), 0);
}

#[tokio::test]
async fn stale_replay_never_overwrites_a_newer_delivered_version() {
    let mut env = env("upsert", 50).await;
    sqlx::query("UPDATE analytics.customers SET email = 'old-invalid' WHERE id = 7")
        .execute(&env.warehouse)
        .await
        .unwrap();
    env.start_worker(2);
    env.run_sync("customers", &[]).await;
    let entry_id = env.ebb_json(&["dlq", "list"]).await[0]["id"]
        .as_i64()
        .unwrap();

    // The model is fixed and a newer version is delivered; that closes the entry.
    sqlx::query("UPDATE analytics.customers SET email = 'fixed@example.com' WHERE id = 7")
        .execute(&env.warehouse)
        .await
        .unwrap();
    let run = env.run_sync("customers", &[]).await;
    assert_eq!(n(&run, "delivered"), 1);
    let entry = env.ebb_json(&["dlq", "show", &entry_id.to_string()]).await;
    assert_eq!(entry["status"], "resolved", "{entry}");

    // Simulate an operator replaying the old entry anyway (e.g. it was
    // reopened by hand, or the replay was planned before the fix landed), with
    // the destination now accepting the old payload.
    sqlx::query("UPDATE ebb_dlq SET status = 'open' WHERE id = $1")
        .bind(entry_id)
        .execute(&env.state)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE customers_synced DROP CONSTRAINT customers_synced_email_check")
        .execute(&env.app)
        .await
        .unwrap();
    let replay = env
        .ebb_json(&["dlq", "replay", &entry_id.to_string()])
        .await;
    assert_eq!(n(&replay[0]["run"], "delivered"), 0, "{replay}");
    assert_eq!(n(&replay[0]["run"], "superseded"), 1, "{replay}");
    let email: String =
        sqlx::query_scalar("SELECT email FROM customers_synced WHERE customer_id = 7")
            .fetch_one(&env.app)
            .await
            .unwrap();
    assert_eq!(email, "fixed@example.com");
    let entry = env.ebb_json(&["dlq", "show", &entry_id.to_string()]).await;
    assert_eq!(entry["status"], "superseded", "{entry}");
}

/// A value too large for the destination's index (SQLSTATE 54000, "index
/// row size exceeds maximum") is that record's fault: it is rejected to the
/// DLQ with Postgres's message, and the rest of its batch is delivered.
/// (Class 54 used to fail the whole batch.)
#[tokio::test]
async fn a_value_too_large_for_its_index_rejects_only_its_record() {
    let mut env = env("upsert", 100).await;
    sqlx::query("CREATE INDEX customers_synced_first_name ON public.customers_synced (first_name)")
        .execute(&env.app)
        .await
        .expect("index");
    // 12,800 characters of hex: too large for a btree entry even compressed.
    sqlx::query(
        "UPDATE analytics.customers SET first_name = \
         (SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 400) g) WHERE id = 42",
    )
    .execute(&env.warehouse)
    .await
    .expect("a long name");
    env.start_worker(2);
    let run = env.run_sync("customers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 99, "{run}");
    assert_eq!(run["rejected"], 1, "{run}");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let reason = ebb_tests::dlq_reason(&dlq, "42");
    assert!(reason.contains("SQLSTATE 54000"), "{reason}");
    let replicated =
        TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM public.customers_synced").await;
    assert_eq!(replicated, 99);
}

/// A first sync's batches go in as plain inserts once the table has taken
/// an upsert; rows already there (what a delivery that crashed before its
/// settle leaves) turn such a batch back into the upsert, not into
/// rejections.
#[tokio::test]
async fn a_first_sync_over_rows_already_in_the_table_updates_them() {
    let mut env = env("upsert", 1000).await;
    sqlx::query(
        "INSERT INTO public.customers_synced \
         SELECT g, 'stale' || g || '@example.com', 'stale', 'stale', 0 FROM generate_series(7, 1000, 7) g",
    )
    .execute(&env.app)
    .await
    .expect("rows already in the table");
    // One batch at a time in one process: the first batch proves the
    // upsert, the nine after it start as plain inserts, and each of them
    // meets some of those rows.
    env.start_worker(1);
    let run = env.run_sync("customers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(n(&run, "delivered"), 1000, "{run}");
    assert_eq!(n(&run, "rejected"), 0, "{run}");
    assert_replica_matches_model(&env, &[]).await;
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    assert_eq!(dlq.as_array().map(Vec::len), Some(0), "{dlq}");
    assert_eq!(
        TestEnv::scalar_i64(&env.state, "SELECT count(*) FROM ebb_ledger").await,
        1000
    );
}

/// Without a unique index on the key, no batch is written, not even a
/// first sync's, whose plain inserts would have gone in: a redelivery
/// could not find them again.
#[tokio::test]
async fn a_table_without_a_unique_key_fails_every_batch_with_the_reason() {
    let mut env = env("upsert", 300).await;
    sqlx::query("ALTER TABLE public.customers_synced DROP CONSTRAINT customers_synced_pkey")
        .execute(&env.app)
        .await
        .expect("drop the key");
    env.start_worker(1);
    let run = env.run_sync("customers", &[]).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(n(&run, "delivered"), 0, "{run}");
    assert_eq!(n(&run, "failed"), 300, "{run}");
    assert_eq!(
        TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM public.customers_synced").await,
        0
    );
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let entries = dlq.as_array().expect("DLQ entries");
    assert!(!entries.is_empty(), "{dlq}");
    for entry in entries {
        let reason = entry["reason"].as_str().unwrap_or_default();
        assert!(
            entry["kind"] == "failed" && reason.contains("needs a unique index or primary key"),
            "{entry}"
        );
    }
}

/// A run's payloads are stored as text; one that is not JSON (a damaged
/// state database) is refused on its own and reaches the DLQ as a JSON
/// string of its text, not lost and not failing the batch's settle.
#[tokio::test]
async fn a_stored_payload_that_is_not_json_is_dead_lettered_with_its_text() {
    let mut env = env("upsert", 100).await;
    let run = env
        .ebb_command(&["run", "customers", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ebb run");
    let state = env.state.clone();
    ebb_tests::eventually(
        std::time::Duration::from_secs(60),
        "the run's records",
        || {
            let state = state.clone();
            async move {
                let written: i64 = sqlx::query_scalar("SELECT count(*) FROM ebb_run_records")
                    .fetch_one(&state)
                    .await
                    .ok()?;
                (written == 100).then_some(())
            }
        },
    )
    .await;
    let damaged = sqlx::query(
        "UPDATE ebb_run_records SET payload = '{\"email\": damaged' WHERE record_key = '42'",
    )
    .execute(&env.state)
    .await
    .expect("damage a payload");
    assert_eq!(damaged.rows_affected(), 1);
    env.start_worker(1);
    let output = tokio::time::timeout(ebb_tests::EBB_DEADLINE, run.wait_with_output())
        .await
        .expect("the run ends")
        .expect("ebb run's output");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "ebb run printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let run = &summary["run"];
    assert_eq!(n(run, "delivered"), 99, "{run}");
    assert_eq!(n(run, "rejected"), 1, "{run}");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let reason = ebb_tests::dlq_reason(&dlq, "42");
    assert!(reason.contains("stored payload is not JSON"), "{reason}");
    let entry = dlq
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["record_key"] == "42"))
        .expect("the entry of 42");
    assert_eq!(entry["payload"], "{\"email\": damaged", "{entry}");
    assert_eq!(
        TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM public.customers_synced").await,
        99
    );
}
