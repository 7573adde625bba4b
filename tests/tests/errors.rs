//! Bad input gets a clear error naming the file, line and key, and leaves
//! state consistent.

use ebb_tests::TestEnv;

const CONFIG: &str = r#"
[state]
database_url = "{STATE_URL}"
redis_url = "redis://127.0.0.1:6379"
queue_prefix = "{PREFIX}"

[sources.warehouse]
type = "postgres"
url = "{WAREHOUSE_URL}"

[destinations.replica]
type = "postgres"
url = "{APP_URL}"
table = "public.customers_synced"

[syncs.customers]
source = "warehouse"
model_file = "models/customers.sql"
primary_key = "id"
destination = "replica"

[syncs.customers.mapping]
customer_id = "id"
email = "email"
"#;

async fn env() -> TestEnv {
    let env = TestEnv::new(CONFIG, &[]).await;
    sqlx::query("CREATE TABLE customers (id BIGINT, email TEXT)")
        .execute(&env.warehouse)
        .await
        .unwrap();
    env
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn model_sql_errors_point_at_the_model_file_line_and_column() {
    let env = env().await;
    env.write_file(
        "models/customers.sql",
        "SELECT id,\n       emial AS email\nFROM customers\n",
    );
    let out = env.ebb(&["check"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("models/customers.sql:2:8"), "{err}");
    assert!(err.contains("column \"emial\" does not exist"), "{err}");

    let run = env.ebb(&["run", "customers"]).await;
    assert_eq!(run.status.code(), Some(2));
    let runs = env.ebb_json(&["runs"]).await;
    assert_eq!(
        runs[0]["state"], "failed",
        "a run that could not plan is recorded as failed: {runs}"
    );
    assert!(runs[0]["error"].as_str().unwrap().contains("emial"));
    // …and it does not block the next run.
    env.write_file("models/customers.sql", "SELECT id, email FROM customers");
    sqlx::query("CREATE TABLE customers_synced (customer_id BIGINT PRIMARY KEY, email TEXT)")
        .execute(&env.app)
        .await
        .unwrap();
    assert_eq!(env.ebb(&["check"]).await.status.code(), Some(0));
}

#[tokio::test]
async fn mapping_to_a_missing_column_lists_the_model_columns() {
    let env = env().await;
    env.write_file(
        "models/customers.sql",
        "SELECT id, email AS mail FROM customers",
    );
    let err = stderr(&env.ebb(&["check"]).await);
    assert!(err.contains("mapping `email = \"email\"`"), "{err}");
    assert!(err.contains("model columns: id, mail"), "{err}");
}

#[tokio::test]
async fn config_errors_name_file_line_key_and_variable() {
    let env = env().await;
    env.write_file("models/customers.sql", "SELECT id, email FROM customers");
    env.write_config(
        &CONFIG.replace(
            "table = \"public.customers_synced\"",
            "table = \"public.customers_synced\"\nbatchsize = 5",
        ),
        &[],
    );
    let err = stderr(&env.ebb(&["check"]).await);
    assert!(
        err.contains("ebb.toml:15:") && err.contains("unknown field `batchsize`"),
        "{err}"
    );

    env.write_config(
        &CONFIG.replace(
            "url = \"{APP_URL}\"",
            "url = \"postgres://app:${EBB_TEST_UNSET_PASSWORD}@db/app\"",
        ),
        &[],
    );
    let out = env.ebb(&["check"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("EBB_TEST_UNSET_PASSWORD") && err.contains("destinations.replica.url"),
        "{err}"
    );

    env.write_config(
        &CONFIG.replace("destination = \"replica\"", "destination = \"replicaa\""),
        &[],
    );
    let err = stderr(&env.ebb(&["runs"]).await);
    assert!(
        err.contains("unknown destination `replicaa`")
            && err.contains("defined destinations are: replica"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_source_is_reported_without_its_password() {
    let env = env().await;
    env.write_file("models/customers.sql", "SELECT id, email FROM customers");
    env.write_config(
        &CONFIG.replace(
            "url = \"{WAREHOUSE_URL}\"",
            "url = \"postgres://wh:hunter2@127.0.0.1:1/wh\"",
        ),
        &[],
    );
    let out = env.ebb(&["check"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("source `warehouse`: cannot connect"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Passwords typed raw into connection URLs, with the characters that cut
/// a URL's authority short (`/`, `?`, `#`, `@`), and a `?password=`
/// parameter: no part of them reaches the error. (The password used to be
/// printed whole after the first `/` or `?`.)
#[tokio::test]
async fn passwords_with_slashes_question_marks_and_query_parameters_stay_hidden() {
    let env = env().await;
    env.write_file("models/customers.sql", "SELECT id, email FROM customers");
    for url in [
        "postgres://wh:s3/cr?et#x@127.0.0.1:1/wh",
        "postgres://wh:p@ss/w0rd@127.0.0.1:1/wh",
        "postgres://127.0.0.1:1/wh?user=wh&password=qu3ry-s3cret",
    ] {
        env.write_config(
            &CONFIG.replace("url = \"{WAREHOUSE_URL}\"", &format!("url = \"{url}\"")),
            &[],
        );
        let out = env.ebb(&["check"]).await;
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = stderr(&out);
        assert!(err.contains("source `warehouse`"), "{url}: {err}");
        for secret in [
            "s3/cr",
            "cr?et",
            "et#x",
            "p@ss",
            "ss/w0rd",
            "w0rd",
            "qu3ry-s3cret",
        ] {
            assert!(!err.contains(secret), "{url}: `{secret}` leaked: {err}");
        }
    }
}

/// A warehouse database of a test's own, in `encoding` (collation `C`), that
/// the config's `warehouse` source is pointed at; dropped by [`drop`].
struct OwnWarehouse {
    admin: sqlx::PgPool,
    db: String,
    pool: sqlx::PgPool,
}

impl OwnWarehouse {
    async fn create(env: &TestEnv, encoding: &str) -> OwnWarehouse {
        let admin = sqlx::PgPool::connect(ebb_tests::ADMIN_URL)
            .await
            .expect("admin");
        let db = format!("ebb_t_{}_{}", env.id, encoding.to_ascii_lowercase());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {db} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("create a {encoding} database: {e}"));
        let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
        let config = std::fs::read_to_string(env.config_path()).expect("config");
        std::fs::write(env.config_path(), config.replace(&env.urls.warehouse, &url))
            .expect("point the source at the test's own warehouse");
        let pool = sqlx::PgPool::connect(&url).await.expect("warehouse");
        OwnWarehouse { admin, db, pool }
    }

    async fn exec(&self, statements: &[&str]) {
        for sql in statements {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&self.pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    /// Drops the database, after the test's env (and its workers) are gone.
    async fn drop(self, env: TestEnv) {
        self.pool.close().await;
        drop(env);
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db
        )))
        .execute(&self.admin)
        .await;
    }
}

/// A warehouse in SQL_ASCII holds bytes that are no text at all, and one
/// record is far larger than the sync allows. Each costs only its own
/// record: a planning rejection in the DLQ with its key and what is wrong
/// (the field and the byte, or the size), and the rest of the run is
/// delivered. (Either used to fail the whole run at planning, without
/// naming the key.)
#[tokio::test]
async fn values_that_are_not_utf8_and_oversized_records_cost_only_their_record() {
    let env = TestEnv::new(
        &CONFIG.replace(
            "primary_key = \"id\"",
            "primary_key = \"id\"\nmax_record_bytes = 2000",
        ),
        &[],
    )
    .await;
    // A SQL_ASCII warehouse of this test's own.
    let warehouse = OwnWarehouse::create(&env, "SQL_ASCII").await;
    warehouse
        .exec(&[
            "CREATE TABLE customers (id BIGINT, email TEXT)",
            "INSERT INTO customers SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 20) g",
            // 0xE9 is é in Latin-1, and no UTF-8 at all.
            "UPDATE customers SET email = E'caf\\xe9@example.com' WHERE id = 7",
            "UPDATE customers SET email = repeat('x', 5000) || '@example.com' WHERE id = 9",
        ])
        .await;
    env.write_file("models/customers.sql", "SELECT id, email FROM customers");
    sqlx::query(
        "CREATE TABLE public.customers_synced (customer_id BIGINT PRIMARY KEY, email TEXT)",
    )
    .execute(&env.app)
    .await
    .expect("replica");
    let mut env = env;
    env.start_worker(1);
    let run = env.run_sync("customers", &[]).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["delivered"], 18, "{run}");
    assert_eq!(run["rejected_at_plan"], 2, "{run}");
    let dlq = env.ebb_json(&["dlq", "list"]).await;
    let not_text = ebb_tests::dlq_reason(&dlq, "7");
    assert!(
        not_text.contains("field `email` is not valid UTF-8 (byte 0xE9)"),
        "{not_text}"
    );
    let too_big = ebb_tests::dlq_reason(&dlq, "9");
    assert!(
        too_big.contains("over the sync's max_record_bytes (2000)"),
        "{too_big}"
    );
    let replicated =
        TestEnv::scalar_i64(&env.app, "SELECT count(*) FROM public.customers_synced").await;
    assert_eq!(replicated, 18);
    warehouse.drop(env).await;
}

/// A warehouse in another encoding (WIN1252 here) sorts its text by its
/// own bytes, which are not UTF-8's: `€` (0x80) before `é` (0xE9), where
/// UTF-8 has `é` (C3 A9) before `€` (E2 82 AC). Its models are diffed
/// through the snapshot, not by the key-ordered merge: the sync delivers
/// every record and a re-run finds nothing changed (read in the merge's
/// order, the plan would stop on a key out of order).
#[tokio::test]
async fn a_warehouse_in_another_encoding_syncs_keys_it_sorts_otherwise() {
    let env = TestEnv::new(CONFIG, &[]).await;
    let warehouse = OwnWarehouse::create(&env, "WIN1252").await;
    warehouse
        .exec(&[
            "CREATE TABLE customers (id TEXT, email TEXT)",
            "INSERT INTO customers VALUES ('a', 'a@example.com'), ('€', 'euro@example.com'), \
             ('é', 'e@example.com'), ('z', 'z@example.com')",
        ])
        .await;
    let in_c_order: Vec<String> =
        sqlx::query_scalar("SELECT id FROM customers ORDER BY id COLLATE \"C\"")
            .fetch_all(&warehouse.pool)
            .await
            .expect("order");
    assert_eq!(in_c_order, ["a", "z", "€", "é"], "WIN1252's own byte order");
    env.write_file("models/customers.sql", "SELECT id, email FROM customers");
    sqlx::query("CREATE TABLE public.customers_synced (customer_id TEXT PRIMARY KEY, email TEXT)")
        .execute(&env.app)
        .await
        .expect("replica");
    let mut env = env;
    env.start_worker(1);
    let first = env.run_sync("customers", &[]).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["delivered"], 4, "{first}");
    let again = env.run_sync("customers", &[]).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["unchanged"], 4, "{again}");
    assert_eq!(again["to_send"], 0, "{again}");
    let euro: String =
        sqlx::query_scalar("SELECT email FROM public.customers_synced WHERE customer_id = '€'")
            .fetch_one(&env.app)
            .await
            .expect("the € record");
    assert_eq!(euro, "euro@example.com");
    warehouse.drop(env).await;
}
