//! The `mysql` source against the real MariaDB server: syncs through the
//! planner, queue and workers, re-syncs sending only what changed, the same
//! payloads as the Postgres source for the same values, and errors that say
//! where the model or the connection is wrong.

use std::path::Path;

use ebb_shared::config::Config;
use ebb_tests::mariadb::MariaDb;
use ebb_tests::{
    TestEnv, assert_same_rows, assert_syncs_then_sends_only_changes, create_replica, source_rows,
};

const CONFIG: &str = r#"
{HEADER}

[sources.shop]
type = "mysql"
url = "{MYSQL_URL}"

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"
batch_size = 100

[syncs.customers]
source = "shop"
model = "SELECT id, email, first_name, plan, ltv FROM customers"
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

async fn env_with_mysql() -> (TestEnv, MariaDb) {
    // The MariaDB database is named after a fresh id, like the test's
    // Postgres databases.
    let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let mysql = MariaDb::create(&id).await;
    let env = TestEnv::new(CONFIG, &[("{MYSQL_URL}", mysql.url.clone())]).await;
    (env, mysql)
}

#[tokio::test]
async fn a_mysql_model_syncs_and_resyncs_only_what_changed() {
    let (mut env, mysql) = env_with_mysql().await;
    mysql.seed_customers(1000).await;
    create_replica(&env.app).await;
    env.start_worker(4);

    let changed = assert_syncs_then_sends_only_changes(&env, || async {
        mysql
            .exec("UPDATE customers SET plan = 'enterprise' WHERE id <= 100")
            .await;
        mysql.exec("DELETE FROM customers WHERE id = 1000").await;
    })
    .await;
    // Mirror mode: the deleted row goes too.
    assert_eq!(changed["planned_removed"], 1, "{changed}");
    assert_eq!(changed["to_send"], 101, "{changed}");
    let (email, plan): (String, String) =
        sqlx::query_as("SELECT email, plan FROM customers_synced WHERE customer_id = 142")
            .fetch_one(&env.app)
            .await
            .expect("row 142");
    assert_eq!(
        (email.as_str(), plan.as_str()),
        ("user142@example.com", "free")
    );
    let left = TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM customers_synced").await;
    assert_eq!(left, 999);
}

/// A source that cannot read in key order is diffed through the snapshot
/// table: its planning rejections go to the DLQ, the next run closes them
/// (superseded) even when it sends nothing, and the record goes once its
/// key is unique again.
#[tokio::test]
async fn duplicate_keys_are_refused_then_re_evaluated_by_the_next_run() {
    let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let mysql = MariaDb::create(&id).await;
    let config = CONFIG.replace("FROM customers\"", "FROM people\"");
    let mut env = TestEnv::new(&config, &[("{MYSQL_URL}", mysql.url.clone())]).await;
    mysql
        .exec("CREATE TABLE people (id BIGINT, email VARCHAR(255), first_name TEXT, plan VARCHAR(16), ltv DECIMAL(12,2))")
        .await;
    mysql
        .exec(
            "INSERT INTO people VALUES (1, 'a@example.com', 'A', 'free', 1), (1, 'b@example.com', 'B', 'free', 2), \
             (2, 'c@example.com', 'C', 'pro', 3)",
        )
        .await;
    create_replica(&env.app).await;
    env.start_worker(2);

    let first = env.run_sync("customers", &[]).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(
        (
            first["rejected_at_plan"].as_i64(),
            first["delivered"].as_i64()
        ),
        (Some(2), Some(1)),
        "{first}"
    );
    let open = |env: &TestEnv| {
        let state = env.state.clone();
        async move {
            sqlx::query_as::<_, (String, String, String)>(
                "SELECT record_key, status, reason FROM ebb_dlq WHERE stage = 'plan' ORDER BY id",
            )
            .fetch_all(&state)
            .await
            .expect("DLQ")
        }
    };
    let entries = open(&env).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries.iter().all(|(key, status, reason)| key == "1"
            && status == "open"
            && reason.starts_with("duplicate primary key: 2 rows of the model have `id` = 1")),
        "{entries:?}"
    );

    // The key's rows are gone: a run that sends nothing still closes them.
    mysql.exec("DELETE FROM people WHERE id = 1").await;
    let second = env.run_sync("customers", &[]).await;
    assert_eq!(second["state"], "succeeded", "{second}");
    assert_eq!(
        (
            second["rejected_at_plan"].as_i64(),
            second["to_send"].as_i64()
        ),
        (Some(0), Some(0)),
        "{second}"
    );
    let entries = open(&env).await;
    assert!(
        entries.iter().all(|(_, status, _)| status == "superseded"),
        "the next run re-evaluated them: {entries:?}"
    );
    mysql
        .exec("INSERT INTO people VALUES (1, 'a@example.com', 'A', 'free', 1)")
        .await;
    let third = env.run_sync("customers", &[]).await;
    assert_eq!(third["delivered"], 1, "{third}");
    let email: String =
        sqlx::query_scalar("SELECT email FROM customers_synced WHERE customer_id = 1")
            .fetch_one(&env.app)
            .await
            .expect("record 1");
    assert_eq!(email, "a@example.com");
}

/// One value per mapped type, the same in both warehouses.
const POSTGRES_TABLE: &str = "CREATE TABLE typed (id BIGINT PRIMARY KEY, small SMALLINT, \
    whole INT, price NUMERIC(12,3), ratio DOUBLE PRECISION, approx REAL, flag BOOLEAN, \
    label TEXT, day DATE, at TIMESTAMP(6), at_utc TIMESTAMPTZ(6), raw BYTEA)";
const MYSQL_TABLE: &str = "CREATE TABLE typed (id BIGINT PRIMARY KEY, small SMALLINT, \
    whole INT, price DECIMAL(12,3), ratio DOUBLE, approx FLOAT, flag BOOLEAN, \
    label TEXT, day DATE, at DATETIME(6), at_utc TIMESTAMP(6) NULL, raw VARBINARY(16))";
const ROWS: &[&str] = &[
    "(1, -32768, 2147483647, 12.500, 0.1, 0.25, TRUE, 'plain', '2026-12-02', \
      '2026-12-02 07:05:09.250000', '2026-12-02 07:05:09.000001', X'00ab')",
    "(2, 0, -1, -0.001, 1e20, 1.5, FALSE, 'quote \" backslash \\\\ tab \t newline \n é ✓', \
      '1970-01-01', '1999-12-31 23:59:59', '2038-01-19 03:14:07', X'')",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(4, 7, 8, 100000000.000, -2.5e-7, -3, TRUE, '', '2000-02-29', \
      '2000-02-29 12:00:00', '2001-01-01 00:00:00', X'ff')",
];

#[tokio::test]
async fn mysql_and_postgres_give_the_same_payloads_for_the_same_values() {
    let (env, mysql) = env_with_mysql().await;
    mysql.exec(MYSQL_TABLE).await;
    // sqlx's MariaDB sessions are in UTC (+00:00), and the Postgres
    // literals below say +00, so TIMESTAMP values are the same instants.
    sqlx::query(POSTGRES_TABLE)
        .execute(&env.warehouse)
        .await
        .expect("postgres table");
    for row in ROWS {
        mysql.exec(&format!("INSERT INTO typed VALUES {row}")).await;
        let pg_row = row
            .replace("X'", "'\\x")
            .replace("'\\x00ab'", "'\\x00ab'::bytea")
            .replace("'\\xff'", "'\\xff'::bytea")
            .replace("'\\x'", "''::bytea")
            .replace("\\\\", "\\")
            .replace("1e20", "1e20::float8")
            .replace(
                "'2026-12-02 07:05:09.000001'",
                "'2026-12-02 07:05:09.000001+00'",
            )
            .replace("'2038-01-19 03:14:07'", "'2038-01-19 03:14:07+00'")
            .replace("'2001-01-01 00:00:00'", "'2001-01-01 00:00:00+00'");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO typed VALUES {pg_row}"
        )))
        .execute(&env.warehouse)
        .await
        .unwrap_or_else(|e| panic!("postgres row {pg_row}: {e}"));
    }
    let text = format!(
        r#"
[state]
database_url = "{state}"
redis_url = "redis://127.0.0.1:6379"

[sources.pg]
type = "postgres"
url = "{warehouse}?options=-c%20TimeZone%3DUTC"

[sources.my]
type = "mysql"
url = "{mysql}"

[destinations.sink]
type = "http"
url = "http://127.0.0.1:9/unused"

[syncs.from_pg]
source = "pg"
model = "SELECT * FROM typed"
primary_key = "id"
destination = "sink"

[syncs.from_my]
source = "my"
model = "SELECT * FROM typed"
primary_key = "id"
destination = "sink"
"#,
        state = env.urls.state,
        warehouse = env.urls.warehouse,
        mysql = mysql.url,
    );
    let config = Config::parse(Path::new("typed.toml"), &text, &|_| None).expect("config");
    let from_pg = source_rows(&config, "from_pg")
        .await
        .expect("postgres source");
    let from_my = source_rows(&config, "from_my").await.expect("mysql source");
    assert_eq!(from_pg.len(), ROWS.len());
    assert_same_rows(
        &from_my,
        &from_pg,
        "the same row read from MariaDB (left) and Postgres (right)",
    );
    // And the payloads are what the type table says.
    let first = String::from_utf8_lossy(&from_my[0].payload).into_owned();
    for part in [
        r#""at": "2026-12-02T07:05:09.25""#,
        r#""at_utc": "2026-12-02T07:05:09.000001+00:00""#,
        r#""raw": "\\x00ab""#,
        r#""flag": true"#,
        r#""price": 12.500"#,
        r#""ratio": 0.1"#,
    ] {
        assert!(first.contains(part), "no {part} in {first}");
    }
}

#[tokio::test]
async fn a_model_sql_error_points_at_the_model_file_and_line() {
    let (env, mysql) = env_with_mysql().await;
    mysql.seed_customers(3).await;
    env.write_file(
        "models/customers.sql",
        "SELECT id, email, first_name,\n       plan, ltv\nFORM customers\n",
    );
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    std::fs::write(
        env.config_path(),
        text.replace(
            "model = \"SELECT id, email, first_name, plan, ltv FROM customers\"",
            "model_file = \"models/customers.sql\"",
        ),
    )
    .expect("rewrite config");
    let out = env.ebb(&["check"]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    // MariaDB reads `FORM` as an alias of `ltv` and stumbles on the next word.
    assert!(err.contains("models/customers.sql:3:6"), "{err}");
    assert!(err.contains("right syntax to use near 'customers"), "{err}");

    env.write_file(
        "models/customers.sql",
        "SELECT id, email, first_name,\n       plan, lifetime\nFROM customers\n",
    );
    let err = String::from_utf8_lossy(&env.ebb(&["check"]).await.stderr).into_owned();
    assert!(err.contains("models/customers.sql:2:14"), "{err}");
    assert!(err.contains("Unknown column 'lifetime'"), "{err}");
}

#[tokio::test]
async fn a_refused_login_says_so_without_the_password() {
    let (env, mysql) = env_with_mysql().await;
    let wrong = mysql
        .url
        .replacen("mysql://root@", "mysql://ebb_nobody:s3cret-pw@", 1);
    let text = std::fs::read_to_string(env.config_path()).expect("config");
    std::fs::write(env.config_path(), text.replace(&mysql.url, &wrong)).expect("rewrite");
    let out = env.ebb(&["check"]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("source `shop`: cannot connect (mysql://ebb_nobody:***@"),
        "{err}"
    );
    assert!(err.contains("Access denied for user 'ebb_nobody'"), "{err}");
    assert!(err.contains("check the user and password"), "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
}

#[tokio::test]
async fn a_model_far_larger_than_the_planners_memory_is_streamed() {
    let (env, _mysql) = env_with_mysql().await;
    // 60,000 rows of 4 KB: 240 MB of payload, generated by MariaDB's
    // sequence engine as it is read.
    env.replace_in_config(
        "model = \"SELECT id, email, first_name, plan, ltv FROM customers\"",
        "model = \"SELECT seq AS id, CONCAT('user', seq, '@example.com') AS email, REPEAT('x', 4000) AS first_name, 'pro' AS plan, seq * 1.5 AS ltv FROM seq_1_to_60000\"",
    );
    env.assert_plan_streams("customers", 60_000, 100).await;
}
