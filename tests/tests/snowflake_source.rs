//! The `snowflake` source against the SQL API emulator (`tests/src/
//! snowflake.rs`, Postgres behind it): key-pair and OAuth sign-in, async
//! statements polled to completion, results read partition by partition,
//! throttling retried, the query tag and context on every statement, the
//! same payloads as the `postgres` source, and errors at the model's line.

use std::path::Path;

use ebb_shared::config::Config;
use ebb_tests::snowflake::{OAUTH_TOKEN, Snowflake, TestKey};
use ebb_tests::{TestEnv, assert_same_rows, create_replica, seed_customers, source_rows};

const CONFIG: &str = r#"
{HEADER}

[sources.snow]
type = "snowflake"
account = "ebbtest-account1"
base_url = "{SNOWFLAKE_URL}"
user = "ebb_reader"
private_key_path = "keys/rsa_key.p8"
warehouse = "TRANSFORMING"
role = "EBB_READER_ROLE"
database = "ANALYTICS"
schema = "MARTS"

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 100

[syncs.customers]
source = "snow"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "ID"
destination = "replica"
mode = "mirror"

[syncs.customers.mapping]
customer_id = "ID"
email = "EMAIL"
first_name = "FIRST_NAME"
plan = "PLAN"
lifetime_value = "LTV"
"#;

async fn env_with_snowflake() -> (TestEnv, Snowflake, TestKey) {
    let key = TestKey::generate();
    // The emulator runs statements on the test's warehouse database.
    let env = TestEnv::new(CONFIG, &[("{SNOWFLAKE_URL}", String::new())]).await;
    let snowflake = Snowflake::start(env.warehouse.clone(), Some(&key)).await;
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    std::fs::write(
        env.config_path(),
        text.replace(
            "base_url = \"\"",
            &format!("base_url = \"{}\"", snowflake.url()),
        ),
    )
    .expect("config");
    env.write_file("keys/rsa_key.p8", &key.private_pem);
    (env, snowflake, key)
}

#[tokio::test]
async fn a_snowflake_model_syncs_through_polls_partitions_and_throttling() {
    let (mut env, snowflake, _key) = env_with_snowflake().await;
    seed_customers(&env.warehouse, 1000).await;
    create_replica(&env.app).await;
    snowflake.with(|s| {
        s.rows_per_partition = 300;
        s.pending_polls = 2;
        s.throttle_next = 1;
    });
    env.start_worker(4);

    let first = env.run_sync("customers", &[]).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["delivered"], 1000, "{first}");
    let sum: String = sqlx::query_scalar("SELECT sum(lifetime_value)::text FROM customers_synced")
        .fetch_one(&env.app)
        .await
        .expect("replica");
    assert_eq!(sum, "750750.00");

    let log = snowflake.with(|s| s.log.clone());
    // Every statement signed in with a key-pair JWT, tagged and in context.
    let posts: Vec<_> = log.iter().filter(|l| l.method == "POST").collect();
    assert!(
        posts.iter().all(|l| l.token_type == "KEYPAIR_JWT"),
        "{posts:#?}"
    );
    let accepted: Vec<_> = posts.iter().filter(|l| l.status == 200).collect();
    assert!(!accepted.is_empty());
    for post in &accepted {
        assert_eq!(post.query_tag.as_deref(), Some("ebb:customers"));
        assert_eq!(post.context["warehouse"], "TRANSFORMING");
        assert_eq!(post.context["role"], "EBB_READER_ROLE");
        assert_eq!(post.context["database"], "ANALYTICS");
        assert_eq!(post.context["schema"], "MARTS");
    }
    // The throttled submission was retried, and ran once.
    assert_eq!(posts.iter().filter(|l| l.status == 429).count(), 1);
    assert_eq!(snowflake.with(|s| s.executions), accepted.len());
    // 1000 rows in partitions of 300: partitions 1 to 3 were fetched, after
    // two polls per statement.
    let partitions = log.iter().filter(|l| l.method == "GET").count();
    assert_eq!(partitions, 2 * accepted.len() + 3, "{log:#?}");

    snowflake.with(|s| s.pending_polls = 0);
    let unchanged = env.run_sync("customers", &[]).await;
    assert_eq!(unchanged["to_send"], 0, "{unchanged}");
    assert_eq!(unchanged["unchanged"], 1000, "{unchanged}");

    sqlx::query("UPDATE analytics.customers SET plan = 'enterprise' WHERE id <= 100")
        .execute(&env.warehouse)
        .await
        .expect("update");
    let changed = env.run_sync("customers", &[]).await;
    assert_eq!(changed["planned_changed"], 100, "{changed}");
    assert_eq!(changed["to_send"], 100, "{changed}");
    assert_eq!(changed["delivered"], 100, "{changed}");
}

const COLUMNS: &[&str] = &[
    "id", "small", "whole", "price", "ratio", "approx", "flag", "label", "day", "at", "at_utc",
    "clock", "raw", "doc", "plain", "uid",
];

#[tokio::test]
async fn snowflake_payloads_are_the_postgres_sources_for_the_same_values() {
    let (env, snowflake, _key) = env_with_snowflake().await;
    snowflake.with(|s| s.rows_per_partition = 2);
    sqlx::raw_sql(
        r#"
        CREATE SCHEMA analytics;
        CREATE TABLE analytics.typed (id BIGINT PRIMARY KEY, small SMALLINT, whole INT,
            price NUMERIC(12,3), ratio DOUBLE PRECISION, approx REAL, flag BOOLEAN,
            label TEXT, day DATE, at TIMESTAMP(6), at_utc TIMESTAMPTZ(6),
            clock TIME, raw BYTEA, doc JSONB, plain JSON, uid UUID);
        INSERT INTO analytics.typed VALUES
          (1, -32768, 2147483647, 12.500, 0.1, 0.25, true, 'plain', '2026-12-02',
           '2026-12-02 07:05:09.25', '2026-12-02 07:05:09.000001+00', '07:05:09.5', '\x00ab',
           '{"b": [1, 2.5, "x"], "a": {"z": null, "yy": true}}', '{"k": "v"}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
          (2, 0, -1, -0.001, 1e20, 'NaN', false,
           E'quote " backslash \\ tab \t newline \n \u00e9 \u2713', '1969-07-20',
           '1999-12-31 23:59:59', '1960-01-01 00:00:00.5+00', '00:00:00', '', '[]', '[1, 2]', NULL),
          (3, NULL, NULL, NULL, '-Infinity', '-0', NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL),
          (4, 7, 8, 100000000.000, 2.5e-7, -3, true, '', '2000-02-29', '2000-02-29 12:00:00',
           '2001-01-01 00:00:00+00', '23:59:59', '\xff', '{"n": 1e2}', 'null', NULL);
        "#,
    )
    .execute(&env.warehouse)
    .await
    .expect("typed table");
    // Snowflake names unquoted columns in upper case: the Postgres model
    // names them so too, and both payloads have the same keys.
    let upper: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{c} AS \"{}\"", c.to_ascii_uppercase()))
        .collect();
    let text = format!(
        r#"
[state]
database_url = "{state}"
redis_url = "redis://127.0.0.1:6379"

[sources.pg]
type = "postgres"
url = "{warehouse}"

[sources.snow]
type = "snowflake"
account = "EBBTEST-ACCOUNT1"
base_url = "{snowflake}"
user = "EBB_READER"
oauth_token = "{OAUTH_TOKEN}"

[destinations.sink]
type = "http"
url = "http://127.0.0.1:9/unused"

[syncs.from_pg]
source = "pg"
model = "SELECT {upper} FROM analytics.typed"
primary_key = "ID"
destination = "sink"

[syncs.from_snow]
source = "snow"
model = "SELECT * FROM analytics.typed"
primary_key = "ID"
destination = "sink"
"#,
        state = env.urls.state,
        warehouse = env.urls.warehouse,
        snowflake = snowflake.url(),
        upper = upper.join(", ").replace('"', "\\\""),
    );
    let config = Config::parse(Path::new("typed.toml"), &text, &|_| None).expect("config");
    let from_pg = source_rows(&config, "from_pg")
        .await
        .expect("postgres source");
    let from_snow = source_rows(&config, "from_snow")
        .await
        .expect("snowflake source");
    assert_eq!(from_pg.len(), 4);
    assert_same_rows(
        &from_snow,
        &from_pg,
        "the same row through Snowflake's jsonv2 (left) and Postgres's jsonb (right)",
    );
    // Signed in with the OAuth token, two rows per partition.
    let log = snowflake.with(|s| s.log.clone());
    assert!(log.iter().all(|l| l.token_type == "OAUTH"), "{log:#?}");
    assert!(
        log.iter().any(|l| l.method == "GET"),
        "partition 1 was fetched"
    );
}

#[tokio::test]
async fn model_errors_point_at_the_line_and_sign_in_errors_say_why() {
    let (env, _snowflake, _key) = env_with_snowflake().await;
    seed_customers(&env.warehouse, 3).await;
    env.write_file(
        "models/customers.sql",
        "SELECT id, email,\n       emial, plan, ltv\nFROM analytics.customers\n",
    );
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    let with_file = text.replace(
        "model = \"SELECT id, email, first_name, plan, ltv FROM analytics.customers\"",
        "model_file = \"models/customers.sql\"",
    );
    std::fs::write(env.config_path(), &with_file).expect("config");
    let out = env.ebb(&["check"]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("models/customers.sql:2:8"), "{err}");
    assert!(err.contains("invalid identifier 'EMIAL'"), "{err}");
    assert!(err.contains("Snowflake code 000904"), "{err}");

    // A key Snowflake does not know for the user.
    let other = TestKey::generate();
    env.write_file("keys/rsa_key.p8", &other.private_pem);
    std::fs::write(env.config_path(), &text).expect("config");
    let err = String::from_utf8_lossy(&env.ebb(&["check"]).await.stderr).into_owned();
    assert!(err.contains("source `snow`: cannot connect"), "{err}");
    assert!(
        err.contains("HTTP 401, Snowflake code 390144: JWT token is invalid"),
        "{err}"
    );
    assert!(
        err.contains("check the account, the user and its key or token"),
        "{err}"
    );

    // A key in PKCS#1 form is explained before anything is sent.
    env.write_file(
        "keys/rsa_key.p8",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n",
    );
    let err = String::from_utf8_lossy(&env.ebb(&["check"]).await.stderr).into_owned();
    assert!(
        err.contains("convert it with `openssl pkcs8 -topk8 -nocrypt`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_model_far_larger_than_the_planners_memory_is_read_partition_by_partition() {
    let (env, snowflake, _key) = env_with_snowflake().await;
    // 20,000 rows of 4 KB: 80 MB, in partitions of 500 rows (2 MB).
    snowflake.with(|s| s.rows_per_partition = 500);
    env.replace_in_config(
        "model = \"SELECT id, email, first_name, plan, ltv FROM analytics.customers\"",
        "model = \"SELECT g AS id, 'user' || g || '@example.com' AS email, repeat('x', 4000) AS first_name, 'pro' AS plan, g * 1.5 AS ltv FROM generate_series(1, 20000) AS g\"",
    );
    env.assert_plan_streams("customers", 20_000, 60).await;
}
