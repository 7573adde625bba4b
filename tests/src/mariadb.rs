//! A database of its own on the local MariaDB (or MySQL) server for each
//! test, as a warehouse for the `mysql` source. The server is
//! `EBB_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`);
//! `scripts/ensure-services.sh` installs and starts it.

use sqlx::mysql::MySqlPool;

fn server_url() -> String {
    std::env::var("EBB_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

pub struct MariaDb {
    /// The test database's URL, for `[sources.*] url`.
    pub url: String,
    pub pool: MySqlPool,
}

impl MariaDb {
    /// Creates database `ebb_t_<id>` (dropped first if a failed run left it).
    pub async fn create(id: &str) -> MariaDb {
        let server = server_url();
        let admin = MySqlPool::connect(&server)
            .await
            .expect("connect to the local MariaDB (scripts/ensure-services.sh starts it)");
        let db = format!("ebb_t_{id}");
        for statement in [
            format!("DROP DATABASE IF EXISTS {db}"),
            format!("CREATE DATABASE {db} CHARACTER SET utf8mb4"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&admin)
                .await
                .expect("create the test database");
        }
        admin.close().await;
        let url = format!("{server}/{db}");
        let pool = MySqlPool::connect(&url)
            .await
            .expect("connect to the test database");
        MariaDb { url, pool }
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `customers(id, email, first_name, plan, ltv)` with `n` rows, the same
    /// values `seed_customers` puts in the Postgres warehouse.
    pub async fn seed_customers(&self, n: i64) {
        self.exec(
            "CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(255), first_name TEXT, \
             plan VARCHAR(16), ltv DECIMAL(12,2))",
        )
        .await;
        let mut conn = self.pool.acquire().await.expect("a connection");
        // MariaDB stops recursive queries at 1,000 iterations unless told more.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET SESSION max_recursive_iterations = {}",
            n.max(1000)
        )))
        .execute(&mut *conn)
        .await
        .expect("allow the recursion");
        sqlx::query(
            "INSERT INTO customers \
             WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?) \
             SELECT n, CONCAT('user', n, '@example.com'), CONCAT('Name', n), \
                    IF(n % 2 = 0, 'free', 'pro'), n * 1.5 FROM g",
        )
        .bind(n)
        .execute(&mut *conn)
        .await
        .expect("seed customers");
    }
}
