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
