//! The diff, through the real planner, queue and workers: which records a
//! run sends after each kind of change, the type edge cases where a change
//! is easy to miss or to invent (NaN, -0, a numeric's scale, microseconds,
//! NULL against the empty string, one byte of a large text), duplicate and
//! NULL keys, a planner killed half way through writing its plan, and a
//! state database written before its record keys were compared by bytes.

use std::time::{Duration, Instant};

use ebb_tests::TestEnv;
use ebb_tests::receiver::Receiver;

const CONFIG: &str = r#"
{HEADER}

[destinations.crm]
type = "http"
url = "{RECEIVER_URL}"
batch_size = 500

[syncs.edge]
source = "warehouse"
model = "SELECT id, f8, n, ts, t, 'u' || id || '@example.com' AS email FROM edge"
primary_key = "id"
destination = "crm"
mode = "mirror"
"#;

async fn exec(env: &TestEnv, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&env.warehouse)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn each_edge_case_change_is_sent_once_and_nothing_else_is() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::new(CONFIG, &[("{RECEIVER_URL}", receiver.url())]).await;
    exec(
        &env,
        "CREATE TABLE edge (id bigint, f8 double precision, n numeric, ts timestamptz, t text)",
    )
    .await;
    exec(
        &env,
        "INSERT INTO edge VALUES
            (1, 0, 1, '2026-12-07 05:00:00+00', 'a'),
            (2, 1, 1.10, '2026-12-07 05:00:00+00', 'b'),
            (3, 1, 1, '2026-12-07 05:00:00+00', NULL),
            (4, 1, 1, '2026-12-07 05:00:00+00', ''),
            (5, 1, 1, '2026-12-07 05:00:00.123456+00', 'e'),
            (6, 1, 1, '2026-12-07 05:00:00+00', repeat('x', 100000)),
            (7, 'NaN', 'NaN', 'infinity', 'g'),
            (8, 1, 1, '2026-12-07 05:00:00+00', 'gone soon'),
            (9, '-Infinity', 1, '2026-12-07 05:00:00+00', 'i'),
            (10, 1e-300, -0.000, '2026-12-07 05:00:00+00', E'\\\\ \"\t\n'),
            (99, 1, 1, '2026-12-07 05:00:00+00', 'first copy'),
            (99, 1, 1, '2026-12-07 05:00:00+00', 'second copy'),
            (NULL, 1, 1, '2026-12-07 05:00:00+00', 'no key')",
    )
    .await;
    env.start_worker(2);

    let first = env.run_sync("edge", &[]).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["planned_added"], 10, "{first}");
    assert_eq!(
        first["rejected_at_plan"], 3,
        "two copies of 99, one NULL key: {first}"
    );
    assert_eq!(first["delivered"], 10, "{first}");
    receiver.with(|s| {
        assert_eq!(s.records.len(), 10);
        assert!(
            !s.records.contains_key("99"),
            "a duplicated key is not sent"
        );
        assert_eq!(s.records["7"]["f8"], "NaN");
        assert_eq!(s.records["7"]["n"], "NaN");
        assert_eq!(s.records["7"]["ts"], "infinity");
        assert_eq!(s.records["3"]["t"], serde_json::Value::Null);
        assert_eq!(s.records["4"]["t"], "");
        assert_eq!(s.records["10"]["t"], "\\ \"\t\n");
        assert_eq!(s.records["6"]["t"].as_str().map(str::len), Some(100_000));
    });

    let again = env.run_sync("edge", &[]).await;
    assert_eq!(
        again["to_send"], 0,
        "NaN, infinities and -0 hash the same every run: {again}"
    );
    assert_eq!(again["unchanged"], 10, "{again}");

    for sql in [
        // Not changes: -0 is written 0 as before, and NaN is NaN again.
        "UPDATE edge SET f8 = '-0' WHERE id = 1",
        "UPDATE edge SET f8 = 'NaN' WHERE id = 7",
        // Changes, each of one value.
        "UPDATE edge SET n = 1.1 WHERE id = 2",
        "UPDATE edge SET t = '' WHERE id = 3",
        "UPDATE edge SET t = NULL WHERE id = 4",
        "UPDATE edge SET ts = ts + interval '1 microsecond' WHERE id = 5",
        "UPDATE edge SET t = repeat('x', 99999) || 'y' WHERE id = 6",
        "DELETE FROM edge WHERE id = 8",
        "DELETE FROM edge WHERE t = 'second copy'",
        "INSERT INTO edge VALUES (11, 2, 2, '2026-12-07 05:00:00+00', 'new')",
    ] {
        exec(&env, sql).await;
    }
    let changed = env.run_sync("edge", &[]).await;
    assert_eq!(changed["state"], "succeeded", "{changed}");
    assert_eq!(changed["planned_changed"], 5, "ids 2 to 6: {changed}");
    assert_eq!(changed["planned_removed"], 1, "id 8: {changed}");
    assert_eq!(
        changed["planned_added"], 2,
        "id 11, and 99 now that it is unique: {changed}"
    );
    assert_eq!(changed["rejected_at_plan"], 1, "the NULL key: {changed}");
    assert_eq!(changed["unchanged"], 4, "ids 1, 7, 9 and 10: {changed}");
    assert_eq!(changed["delivered"], 8, "{changed}");
    receiver.with(|s| {
        assert!(!s.records.contains_key("8"), "removed in mirror mode");
        assert_eq!(s.records["2"]["n"], serde_json::json!(1.1));
        assert_eq!(s.records["3"]["t"], "");
        assert_eq!(s.records["4"]["t"], serde_json::Value::Null);
        assert_eq!(s.records["5"]["ts"], "2026-12-07T05:00:00.123457+00:00");
        assert!(
            s.records["6"]["t"]
                .as_str()
                .is_some_and(|t| t.ends_with('y'))
        );
        assert_eq!(s.records["99"]["t"], "first copy");
        for unchanged in ["1", "7", "9", "10"] {
            assert_eq!(
                s.applied[unchanged], 1,
                "record {unchanged} was sent once only"
            );
        }
    });
    let settled = env.run_sync("edge", &[]).await;
    assert_eq!(settled["to_send"], 0, "{settled}");
}

/// Sessions of the state database COPYing a plan's records, and of them
/// those asleep.
async fn record_copies(env: &TestEnv) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE wait_event = 'PgSleep') FROM pg_stat_activity \
         WHERE query LIKE 'COPY ebb_run_records%' AND datname = current_database()",
    )
    .fetch_one(&env.state)
    .await
    .expect("activity")
}

async fn exec_state(env: &TestEnv, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&env.state)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A planner killed half way through writing its plan (the model half
/// read, thousands of records to send already COPYed) leaves no run
/// records, batches, ledger or DLQ rows behind, and sends nothing; once its
/// run is taken for dead, the next run plans the whole model and every
/// record is delivered exactly once.
#[tokio::test]
async fn a_planner_killed_mid_plan_leaves_nothing_half_written() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::new(
        &CONFIG.replace(
            "model = \"SELECT id, f8, n, ts, t, 'u' || id || '@example.com' AS email FROM edge\"",
            "model = \"SELECT id, email FROM analytics.customers\"",
        ),
        &[("{RECEIVER_URL}", receiver.url())],
    )
    .await;
    ebb_tests::seed_customers(&env.warehouse, 30_000).await;
    // The state database holds the plan's record 25000 while `pause` says
    // so: the records before it (in key order, "1" to "24999") have been
    // COPYed in by then.
    ebb_shared::db::migrate(&env.state)
        .await
        .expect("the state database's tables");
    exec_state(&env, "CREATE TABLE pause (record_key text)").await;
    exec_state(&env, "INSERT INTO pause VALUES ('25000')").await;
    exec_state(
        &env,
        "CREATE FUNCTION hold_record() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             WHILE EXISTS (SELECT 1 FROM pause WHERE record_key = NEW.record_key) LOOP
                 PERFORM pg_sleep(0.05);
             END LOOP;
             RETURN NEW;
         END $$",
    )
    .await;
    exec_state(
        &env,
        "CREATE TRIGGER hold_record BEFORE INSERT ON ebb_run_records FOR EACH ROW EXECUTE FUNCTION hold_record()",
    )
    .await;
    env.start_worker(2);

    let mut planner = env
        .ebb_command(&["run", "edge"])
        .kill_on_drop(true)
        .spawn()
        .expect("ebb run");
    let paused = Instant::now();
    while record_copies(&env).await != (1, 1) {
        assert!(
            paused.elapsed() < Duration::from_secs(60),
            "the planner never reached record 25000 of its plan"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    planner.start_kill().expect("kill the planner");
    let _ = planner.wait().await;

    // Once the held record goes on, the state database finds the planner's
    // connection gone: its open COPY and transaction are rolled back.
    exec_state(&env, "DELETE FROM pause").await;
    let gone = Instant::now();
    while record_copies(&env).await.0 != 0 {
        assert!(
            gone.elapsed() < Duration::from_secs(30),
            "the killed planner's COPY is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exec_state(&env, "DROP TRIGGER hold_record ON ebb_run_records").await;
    for (what, sql) in [
        ("run records", "SELECT count(*) FROM ebb_run_records"),
        ("batches", "SELECT count(*) FROM ebb_batches"),
        ("ledger rows", "SELECT count(*) FROM ebb_ledger"),
        ("DLQ entries", "SELECT count(*) FROM ebb_dlq"),
    ] {
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&env.state)
            .await
            .expect(what);
        assert_eq!(n, 0, "{what} left by the killed planner");
    }
    let state: String = sqlx::query_scalar("SELECT state FROM ebb_runs")
        .fetch_one(&env.state)
        .await
        .expect("the killed run");
    assert_eq!(
        state, "planning",
        "a killed planner cannot say anything of its run"
    );
    assert_eq!(receiver.with(|s| s.requests), 0, "nothing was sent");

    // Ten minutes later (its heartbeat is set back instead of waiting), the
    // killed run is taken for dead and the next run starts over.
    sqlx::query("UPDATE ebb_runs SET heartbeat_at = now() - interval '10 minutes'")
        .execute(&env.state)
        .await
        .expect("age the killed run");
    let next = env.run_sync("edge", &[]).await;
    assert_eq!(next["state"], "succeeded", "{next}");
    assert_eq!(next["planned_added"], 30_000, "{next}");
    assert_eq!(next["delivered"], 30_000, "{next}");
    receiver.with(|s| {
        assert_eq!(s.records.len(), 30_000);
        assert!(
            s.applied.values().all(|&n| n == 1),
            "no record applied twice"
        );
    });
    let runs: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT state, error FROM ebb_runs ORDER BY id")
            .fetch_all(&env.state)
            .await
            .expect("runs");
    assert_eq!(runs[0].0, "failed", "{runs:?}");
    assert!(
        runs[0]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("planner stopped while planning")),
        "{runs:?}"
    );
}

/// The state tables' record key columns, with their collations.
async fn key_collations(env: &TestEnv) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT c.relname::text, coalesce(co.collname::text, '') FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         LEFT JOIN pg_collation co ON co.oid = a.attcollation \
         WHERE a.attname = 'record_key' AND c.relkind = 'r' AND c.relname LIKE 'ebb\\_%' \
         ORDER BY 1",
    )
    .fetch_all(&env.state)
    .await
    .expect("key collations")
}

/// A state database migrated before record keys were compared by their
/// bytes (migration 0016), holding a ledger and DLQ entries, is upgraded by
/// the next run in place: the ledger still diffs (nothing unchanged is sent
/// again, a change and a removal are), and the DLQ keeps its reason groups.
#[tokio::test]
async fn a_state_database_from_before_byte_ordered_keys_is_upgraded_in_place() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::new(
        &CONFIG.replace(
            "model = \"SELECT id, f8, n, ts, t, 'u' || id || '@example.com' AS email FROM edge\"",
            "model = \"SELECT k AS id, v, 'u' || v || '@example.com' AS email FROM keyed\"",
        ),
        &[("{RECEIVER_URL}", receiver.url())],
    )
    .await;
    exec(&env, "CREATE TABLE keyed (k text, v int)").await;
    // Keys whose byte order differs from a language's (case, accents,
    // punctuation), and one key twice: two DLQ entries.
    exec(
        &env,
        "INSERT INTO keyed VALUES ('b', 1), ('B', 2), ('a-2', 3), ('a_1', 4), ('été', 5), \
         ('Zoe', 6), ('twice', 7), ('twice', 8)",
    )
    .await;
    env.start_worker(2);
    let first = env.run_sync("edge", &[]).await;
    assert_eq!(first["delivered"], 6, "{first}");
    assert_eq!(first["rejected_at_plan"], 2, "{first}");
    let groups_before: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, reason_group FROM ebb_dlq ORDER BY id")
            .fetch_all(&env.state)
            .await
            .expect("DLQ reason groups");
    assert_eq!(groups_before.len(), 2, "{groups_before:?}");

    // Back to the schema of migration 0015: keys in the database's own
    // collation, pages packed full, payloads as jsonb, run records indexed
    // by key.
    for sql in [
        "DELETE FROM _sqlx_migrations WHERE version >= 16",
        "CREATE INDEX ebb_run_records_by_key ON ebb_run_records (run_id, record_key)",
        "DROP FUNCTION ebb_payload_jsonb(text)",
        "ALTER TABLE ebb_run_records ALTER COLUMN payload TYPE JSONB USING payload::jsonb",
        "ALTER TABLE ebb_run_records RESET (fillfactor)",
        "ALTER TABLE ebb_run_records ALTER COLUMN record_key TYPE TEXT COLLATE \"default\"",
        "ALTER TABLE ebb_ledger ALTER COLUMN record_key TYPE TEXT COLLATE \"default\"",
        "ALTER TABLE ebb_intents ALTER COLUMN record_key TYPE TEXT COLLATE \"default\"",
        "ALTER TABLE ebb_verification_drift ALTER COLUMN record_key TYPE TEXT COLLATE \"default\"",
        "ALTER TABLE ebb_dlq DROP COLUMN reason_group",
        "ALTER TABLE ebb_dlq ALTER COLUMN record_key TYPE TEXT COLLATE \"default\"",
        "ALTER TABLE ebb_dlq ADD COLUMN reason_group TEXT \
         GENERATED ALWAYS AS (ebb_reason_group(reason, record_key, payload)) STORED",
    ] {
        exec_state(&env, sql).await;
    }
    let old = key_collations(&env).await;
    assert_eq!(old.len(), 5, "{old:?}");
    assert!(old.iter().all(|(_, c)| c == "default"), "{old:?}");

    let unchanged = env.run_sync("edge", &[]).await;
    assert_eq!(unchanged["state"], "succeeded", "{unchanged}");
    assert_eq!(unchanged["to_send"], 0, "{unchanged}");
    assert_eq!(unchanged["unchanged"], 6, "{unchanged}");
    let upgraded = key_collations(&env).await;
    assert!(upgraded.iter().all(|(_, c)| c == "C"), "{upgraded:?}");
    let payload_type: String = sqlx::query_scalar(
        "SELECT data_type FROM information_schema.columns \
         WHERE table_name = 'ebb_run_records' AND column_name = 'payload'",
    )
    .fetch_one(&env.state)
    .await
    .expect("the payload column");
    assert_eq!(payload_type, "text");
    let run_record_indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE tablename = 'ebb_run_records' ORDER BY 1",
    )
    .fetch_all(&env.state)
    .await
    .expect("the run records' indexes");
    assert_eq!(run_record_indexes, ["ebb_run_records_pkey"]);
    let groups_after: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, reason_group FROM ebb_dlq WHERE id <= $1 ORDER BY id")
            .bind(groups_before[1].0)
            .fetch_all(&env.state)
            .await
            .expect("DLQ reason groups");
    assert_eq!(groups_after, groups_before);

    exec(&env, "UPDATE keyed SET v = 20 WHERE k = 'B'").await;
    exec(&env, "DELETE FROM keyed WHERE k = 'a_1'").await;
    let changed = env.run_sync("edge", &[]).await;
    assert_eq!(changed["state"], "succeeded", "{changed}");
    assert_eq!(changed["planned_changed"], 1, "{changed}");
    assert_eq!(changed["planned_removed"], 1, "{changed}");
    assert_eq!(changed["delivered"], 2, "{changed}");
    receiver.with(|s| {
        assert_eq!(s.records["B"]["v"], 20);
        assert!(!s.records.contains_key("a_1"), "removed in mirror mode");
        assert_eq!(s.applied["b"], 1, "an unchanged record is sent once");
    });
    let ledger: Vec<String> =
        sqlx::query_scalar("SELECT record_key FROM ebb_ledger ORDER BY record_key")
            .fetch_all(&env.state)
            .await
            .expect("ledger");
    assert_eq!(ledger, ["B", "Zoe", "a-2", "b", "été"]);
}
