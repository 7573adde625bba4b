//! The `redshift` source, tested against Postgres with Redshift's
//! restrictions enforced: the warehouse user may not call Postgres's JSON
//! functions (`jsonb_build_object`, `to_json`, …) nor `convert_to`, which
//! Redshift does not have, so the model must be read through a cursor with
//! plain SELECTs and rendered by Ebb.

use std::path::Path;

use ebb_shared::config::Config;
use ebb_tests::{
    TestEnv, assert_same_rows, assert_syncs_then_sends_only_changes, create_replica,
    seed_customers, source_rows,
};
use sqlx::PgPool;

/// Functions Postgres has and Redshift does not; revoked in the test's
/// warehouse database (function privileges are per database).
const NOT_IN_REDSHIFT: &[&str] = &[
    "jsonb_build_object(VARIADIC \"any\")",
    "json_build_object(VARIADIC \"any\")",
    "to_jsonb(anyelement)",
    "to_json(anyelement)",
    "row_to_json(record)",
    "convert_to(text, name)",
];

/// A login role that can read the warehouse as Redshift would let it;
/// returns its URL.
async fn redshift_like_user(env: &TestEnv) -> String {
    let role = format!("ebb_rs_{}", env.id);
    let statements = [
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA analytics TO {role}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {role}"),
    ];
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&env.warehouse)
            .await
            .expect("role");
    }
    for function in NOT_IN_REDSHIFT {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC"
        )))
        .execute(&env.warehouse)
        .await
        .expect("revoke");
    }
    env.urls
        .warehouse
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1)
}

const CONFIG: &str = r#"
{HEADER}

[sources.redshift]
type = "redshift"
url = "{REDSHIFT_URL}"
fetch_size = 100

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 100

[syncs.customers]
source = "redshift"
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

async fn env_with_redshift_user() -> TestEnv {
    let env = TestEnv::new(CONFIG, &[("{REDSHIFT_URL}", String::new())]).await;
    seed_customers(&env.warehouse, 1000).await;
    let url = redshift_like_user(&env).await;
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    std::fs::write(
        env.config_path(),
        text.replace("url = \"\"", &format!("url = \"{url}\"")),
    )
    .expect("config with the restricted user");
    env
}

#[tokio::test]
async fn a_redshift_model_syncs_and_resyncs_only_what_changed() {
    let mut env = env_with_redshift_user().await;
    create_replica(&env.app).await;
    env.start_worker(4);
    let changed = assert_syncs_then_sends_only_changes(&env, || async {
        sqlx::query("UPDATE analytics.customers SET plan = 'enterprise' WHERE id <= 100")
            .execute(&env.warehouse)
            .await
            .expect("update");
    })
    .await;
    assert_eq!(changed["to_send"], 100, "{changed}");
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn redshift_reads_give_the_postgres_sources_payloads_without_its_json_functions() {
    let env = env_with_redshift_user().await;
    exec(
        &env.warehouse,
        r#"
        CREATE TABLE analytics.typed (id BIGINT PRIMARY KEY, small SMALLINT, whole INT,
            price NUMERIC(12,3), odd NUMERIC, ratio DOUBLE PRECISION, approx REAL, flag BOOLEAN,
            label TEXT, code VARCHAR(8), day DATE, at TIMESTAMP(6), at_utc TIMESTAMPTZ(6),
            clock TIME, raw BYTEA, doc JSONB, plain JSON, uid UUID);
        INSERT INTO analytics.typed VALUES
          (1, -32768, 2147483647, 12.500, 'NaN', 0.1, 0.25, true, 'plain', 'abc', '2026-12-02',
           '2026-12-02 07:05:09.25', '2026-12-02 07:05:09.000001+00', '07:05:09.5', '\x00ab',
           '{"b": [1, 2.5, "x"], "a": {"z": null, "yy": true}}', '{"k": "v"}',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
          (2, 0, -1, -0.001, 1e-30, 1e20, 'NaN', false,
           E'quote " backslash \\ tab \t newline \n \u00e9 \u2713', '', 'infinity',
           '1999-12-31 23:59:59', '2038-01-19 03:14:07+00', '00:00:00', '', '[]', '[1, 2]', NULL),
          (3, NULL, NULL, NULL, NULL, '-Infinity', '-0', NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL),
          (4, 7, 8, 100000000.000, 123456789012345678901234567890.123, 2.5e-7, -3, true,
           'x', 'y', '2000-02-29', '2000-02-29 12:00:00', '2001-01-01 00:00:00+00', '23:59:59',
           '\xff', '{"n": 1e2}', 'null', NULL);
        GRANT SELECT ON analytics.typed TO PUBLIC;
        "#,
    )
    .await;
    let restricted = std::fs::read_to_string(env.config_path())
        .expect("config")
        .lines()
        .find_map(|l| {
            l.strip_prefix("url = \"")
                .filter(|u| u.contains("ebb_rs_"))
                .map(|u| u.trim_end_matches('"').to_owned())
        })
        .expect("the restricted URL");
    let text = format!(
        r#"
[state]
database_url = "{state}"
redis_url = "redis://127.0.0.1:6379"

[sources.pg]
type = "postgres"
url = "{warehouse}"

[sources.pg_restricted]
type = "postgres"
url = "{restricted}"

[sources.rs]
type = "redshift"
url = "{restricted}"
fetch_size = 100

[destinations.sink]
type = "http"
url = "http://127.0.0.1:9/unused"

[syncs.from_pg]
source = "pg"
model = "SELECT * FROM analytics.typed"
primary_key = "id"
destination = "sink"

[syncs.from_pg_restricted]
source = "pg_restricted"
model = "SELECT * FROM analytics.typed"
primary_key = "id"
destination = "sink"

[syncs.from_rs]
source = "rs"
model = "SELECT * FROM analytics.typed"
primary_key = "id"
destination = "sink"
"#,
        state = env.urls.state,
        warehouse = env.urls.warehouse,
    );
    let config = Config::parse(Path::new("typed.toml"), &text, &|_| None).expect("config");
    // The restriction is real: the postgres source cannot read as this user.
    let refused = source_rows(&config, "from_pg_restricted")
        .await
        .expect_err("the JSON functions are revoked");
    assert!(
        refused.contains("permission denied for function"),
        "{refused}"
    );

    let from_pg = source_rows(&config, "from_pg")
        .await
        .expect("postgres source");
    let from_rs = source_rows(&config, "from_rs")
        .await
        .expect("redshift source");
    assert_eq!(from_pg.len(), 4);
    assert_same_rows(
        &from_rs,
        &from_pg,
        "the same row read by the redshift source (left) and by Postgres's jsonb (right)",
    );
}

#[tokio::test]
async fn a_model_far_larger_than_the_planners_memory_is_read_through_the_cursor() {
    let env = env_with_redshift_user().await;
    // 60,000 rows of 4 KB: 240 MB, 100 rows per FETCH.
    env.replace_in_config(
        "model = \"SELECT id, email, first_name, plan, ltv FROM analytics.customers\"",
        "model = \"SELECT g AS id, 'user' || g || '@example.com' AS email, repeat('x', 4000) AS first_name, 'pro' AS plan, g * 1.5 AS ltv FROM generate_series(1, 60000) AS g\"",
    );
    env.assert_plan_streams("customers", 60_000, 100).await;
}

#[tokio::test]
async fn model_and_login_errors_say_where_and_what() {
    let env = env_with_redshift_user().await;
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    let typo = text.replace(
        "SELECT id, email, first_name, plan, ltv FROM analytics.customers",
        "SELECT id, emial, first_name, plan, ltv FROM analytics.customers",
    );
    std::fs::write(env.config_path(), &typo).expect("config with a typo");
    let out = env.ebb(&["check"]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    // An inline model: the config's line, then the line and column in the SQL.
    let model_line = typo
        .lines()
        .position(|l| l.contains("emial"))
        .expect("model line")
        + 1;
    assert!(
        err.contains(&format!(
            "ebb.toml:{model_line} (model SQL line 1, column 12)"
        )),
        "{err}"
    );
    assert!(err.contains("column \"emial\" does not exist"), "{err}");

    let role = format!("ebb_rs_{}", env.id);
    std::fs::write(
        env.config_path(),
        text.replace(
            &format!("postgres://{role}@"),
            "postgres://nobody_here:pw-secret@",
        ),
    )
    .expect("config with an unknown user");
    let err = String::from_utf8_lossy(&env.ebb(&["check"]).await.stderr).into_owned();
    assert!(
        err.contains("source `redshift`: cannot connect (postgres://nobody_here:***@"),
        "{err}"
    );
    assert!(err.contains("\"nobody_here\" does not exist"), "{err}");
    assert!(!err.contains("pw-secret"), "{err}");
}
