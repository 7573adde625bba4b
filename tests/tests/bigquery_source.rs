//! The `bigquery` source against the REST API emulator (`tests/src/
//! bigquery.rs`, Postgres behind it): service-account JWTs and access
//! tokens, dry runs to describe, jobs polled until complete, pages read by
//! token, rate limits retried, labels, the bytes-billed guardrail, the same
//! payloads as the `postgres` source, and errors at the model's line.

use std::path::Path;

use ebb_shared::config::Config;
use ebb_tests::bigquery::{ACCESS_TOKEN, BigQuery, PROJECT, service_account_json};
use ebb_tests::keys::TestKey;
use ebb_tests::{TestEnv, assert_same_rows, create_replica, seed_customers, source_rows};

const CONFIG: &str = r#"
{HEADER}

[sources.bq]
type = "bigquery"
project = "ebb-test-project"
location = "EU"
credentials_path = "keys/service-account.json"
base_url = "{BIGQUERY_URL}"
page_size = 300

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 100

[syncs.customers]
source = "bq"
model = "SELECT id, email, first_name, plan, ltv FROM analytics.customers"
primary_key = "id"
destination = "replica"
mode = "mirror"

[syncs.customers.mapping]
customer_id = "id"
email = "email"
first_name = "first_name"
plan = "plan"
lifetime_value = "ltv"
"#;

async fn env_with_bigquery() -> (TestEnv, BigQuery) {
    let key = TestKey::generate();
    let env = TestEnv::new(CONFIG, &[("{BIGQUERY_URL}", String::new())]).await;
    let bigquery = BigQuery::start(env.warehouse.clone(), Some(&key)).await;
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    std::fs::write(
        env.config_path(),
        text.replace(
            "base_url = \"\"",
            &format!("base_url = \"{}\"", bigquery.url()),
        ),
    )
    .expect("config");
    env.write_file("keys/service-account.json", &service_account_json(&key));
    (env, bigquery)
}

#[tokio::test]
async fn a_bigquery_model_syncs_page_by_page() {
    let (mut env, bigquery) = env_with_bigquery().await;
    seed_customers(&env.warehouse, 1000).await;
    create_replica(&env.app).await;
    bigquery.with(|s| {
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

    let log = bigquery.with(|s| s.log.clone());
    // One throttled request, retried.
    assert_eq!(
        log.iter().filter(|l| l.status == 403).count(),
        1,
        "{log:#?}"
    );
    let ok: Vec<_> = log.iter().filter(|l| l.status == 200).collect();
    // Described by a dry run, read by one job: labelled with the sync.
    let queries: Vec<_> = ok.iter().filter(|l| l.method == "jobs.query").collect();
    assert!(queries.iter().any(|l| l.dry_run), "{log:#?}");
    assert_eq!(queries.iter().filter(|l| !l.dry_run).count(), 1, "{log:#?}");
    assert!(queries.iter().all(|l| l.labels["ebb_sync"] == "customers"));
    assert_eq!(bigquery.with(|s| s.executions), 1);
    // Two polls while the job ran, then pages of 300 by token: 300, 600, 900.
    let pages: Vec<Option<String>> = ok
        .iter()
        .filter(|l| l.method == "jobs.getQueryResults")
        .map(|l| l.page_token.clone())
        .collect();
    assert_eq!(
        pages,
        vec![
            None,
            None,
            Some("rows-from-300".into()),
            Some("rows-from-600".into()),
            Some("rows-from-900".into())
        ]
    );

    bigquery.with(|s| s.pending_polls = 0);
    let unchanged = env.run_sync("customers", &[]).await;
    assert_eq!(unchanged["to_send"], 0, "{unchanged}");
    assert_eq!(unchanged["unchanged"], 1000, "{unchanged}");
    sqlx::query("UPDATE analytics.customers SET plan = 'enterprise' WHERE id <= 100")
        .execute(&env.warehouse)
        .await
        .expect("update");
    let changed = env.run_sync("customers", &[]).await;
    assert_eq!(changed["planned_changed"], 100, "{changed}");
    assert_eq!(changed["delivered"], 100, "{changed}");
}

#[tokio::test]
async fn bigquery_payloads_are_the_postgres_sources_for_the_same_values() {
    let (env, bigquery) = env_with_bigquery().await;
    // BigQuery has FLOAT64 only, and writes NUMERIC without trailing zeros:
    // the table holds what both can say the same way.
    sqlx::raw_sql(
        r#"
        CREATE SCHEMA analytics;
        CREATE TABLE analytics.typed (id BIGINT PRIMARY KEY, small SMALLINT, whole INT,
            price NUMERIC, ratio DOUBLE PRECISION, flag BOOLEAN, label TEXT, day DATE,
            at TIMESTAMP(6), at_utc TIMESTAMPTZ(6), clock TIME, raw BYTEA, doc JSONB, uid UUID);
        INSERT INTO analytics.typed VALUES
          (1, -32768, 2147483647, 12.5, 0.1, true, 'plain', '2026-12-02',
           '2026-12-02 07:05:09.25', '2026-12-02 07:05:09.000001+00', '07:05:09.5', '\x00ab',
           '{"b": [1, 2.5, "x"], "a": {"z": null, "yy": true}}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
          (2, 0, -1, -0.001, 1e20, false,
           E'quote " backslash \\ tab \t newline \n \u00e9 \u2713', '1969-07-20',
           '1999-12-31 23:59:59', '1960-01-01 00:00:00.5+00', '00:00:00', '', '[]', NULL),
          (3, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (4, 7, 8, 100000000, 'NaN', true, '', '2000-02-29', '2000-02-29 12:00:00',
           '2001-01-01 00:00:00+00', '23:59:59', '\xff', '{"n": 1e2}', NULL);
        "#,
    )
    .execute(&env.warehouse)
    .await
    .expect("typed table");
    let text = format!(
        r#"
[state]
database_url = "{state}"
redis_url = "redis://127.0.0.1:6379"

[sources.pg]
type = "postgres"
url = "{warehouse}"

[sources.bq]
type = "bigquery"
project = "{PROJECT}"
access_token = "{ACCESS_TOKEN}"
base_url = "{bigquery}"
page_size = 100

[destinations.sink]
type = "http"
url = "http://127.0.0.1:9/unused"

[syncs.from_pg]
source = "pg"
model = "SELECT * FROM analytics.typed"
primary_key = "id"
destination = "sink"

[syncs.from_bq]
source = "bq"
model = "SELECT * FROM analytics.typed"
primary_key = "id"
destination = "sink"
"#,
        state = env.urls.state,
        warehouse = env.urls.warehouse,
        bigquery = bigquery.url(),
    );
    let config = Config::parse(Path::new("typed.toml"), &text, &|_| None).expect("config");
    let from_pg = source_rows(&config, "from_pg")
        .await
        .expect("postgres source");
    let from_bq = source_rows(&config, "from_bq")
        .await
        .expect("bigquery source");
    assert_eq!(from_pg.len(), 4);
    assert_same_rows(
        &from_bq,
        &from_pg,
        "the same row through BigQuery's REST API (left) and Postgres's jsonb (right)",
    );
}

#[tokio::test]
async fn model_errors_guardrails_and_credentials_say_what_is_wrong() {
    let (env, _bigquery) = env_with_bigquery().await;
    seed_customers(&env.warehouse, 3).await;
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    env.write_file(
        "models/customers.sql",
        "SELECT id, email, first_name,\n       plan, ltv\nFORM analytics.customers\n",
    );
    std::fs::write(
        env.config_path(),
        text.replace(
            "model = \"SELECT id, email, first_name, plan, ltv FROM analytics.customers\"",
            "model_file = \"models/customers.sql\"",
        ),
    )
    .expect("config");
    let out = env.ebb(&["check"]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    // `FORM` reads as an alias of `ltv`; the next word is the error.
    assert!(err.contains("models/customers.sql:3:6"), "{err}");
    assert!(
        err.contains("Syntax error: Unexpected identifier \"analytics\" at [3:6] (invalidQuery)"),
        "{err}"
    );

    // The guardrail: BigQuery bills at least 10 MB a query.
    std::fs::write(
        env.config_path(),
        text.replace(
            "page_size = 300",
            "page_size = 300\nmaximum_bytes_billed = 1000",
        ),
    )
    .expect("config");
    let err = String::from_utf8_lossy(&env.ebb(&["check"]).await.stderr).into_owned();
    assert!(err.contains("Query exceeded limit for bytes billed: 1000. 10485760 or higher required. (bytesBilledLimitExceeded)"), "{err}");

    // A key BigQuery does not know.
    std::fs::write(env.config_path(), &text).expect("config");
    env.write_file(
        "keys/service-account.json",
        &service_account_json(&TestKey::generate()),
    );
    let err = String::from_utf8_lossy(&env.ebb(&["check"]).await.stderr).into_owned();
    assert!(err.contains("source `bq`: cannot connect"), "{err}");
    assert!(
        err.contains("HTTP 401: Request had invalid authentication credentials"),
        "{err}"
    );
    assert!(err.contains("UNAUTHENTICATED"), "{err}");

    // Not a service account key at all.
    env.write_file(
        "keys/service-account.json",
        "{\"type\": \"authorized_user\"}",
    );
    let err = String::from_utf8_lossy(&env.ebb(&["check"]).await.stderr).into_owned();
    assert!(err.contains("not a service account's JSON key"), "{err}");
}

#[tokio::test]
async fn a_model_far_larger_than_the_planners_memory_is_read_page_by_page() {
    let (env, _bigquery) = env_with_bigquery().await;
    // 20,000 rows of 4 KB: 80 MB, in pages of 300 rows.
    env.replace_in_config(
        "model = \"SELECT id, email, first_name, plan, ltv FROM analytics.customers\"",
        "model = \"SELECT g AS id, 'user' || g || '@example.com' AS email, repeat('x', 4000) AS first_name, 'pro' AS plan, g * 1.5 AS ltv FROM generate_series(1, 20000) AS g\"",
    );
    env.assert_plan_streams("customers", 20_000, 60).await;
}
