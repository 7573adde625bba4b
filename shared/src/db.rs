//! Connecting to Ebb's state database and keeping its schema current; and
//! a statement tried under a savepoint, for any Postgres connection.

use std::time::Duration;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{ConnectOptions, Postgres};

use crate::error::StateError;
use crate::secret::{Secret, redact_url};

/// Ebb's schema migrations, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connection options every Ebb connection to Postgres starts from: sqlx
/// logs statements slower than 1 s as warnings with their full text, which
/// for a model stream of millions of rows is expected, not alarming.
pub fn options(url: &Secret) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.expose().parse()?;
    Ok(options.log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(10)))
}

/// Opens a pool on a Postgres URL from config; errors show the URL without
/// its password.
pub async fn connect(url: &Secret, max_connections: u32) -> Result<PgPool, StateError> {
    let options = self::options(url).map_err(|source| StateError::Connect {
        url: redact_url(url.expose()),
        source,
    })?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.application_name("ebb"))
        .await
        .map_err(|source| StateError::Connect {
            url: redact_url(url.expose()),
            source,
        })
}

/// Connects and applies pending migrations, the step every command that
/// touches state starts with.
pub async fn connect_and_migrate(url: &Secret, max_connections: u32) -> Result<PgPool, StateError> {
    let pool = connect(url, max_connections).await?;
    migrate(&pool).await?;
    Ok(pool)
}

pub async fn migrate(pool: &PgPool) -> Result<(), StateError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Runs `statement` (an insert) under a savepoint of the transaction on
/// `conn`: `false` when it broke a unique constraint, with the savepoint
/// rolled back so the transaction goes on and the caller can merge
/// instead. A plain insert that usually succeeds costs much less than the
/// `INSERT … ON CONFLICT` it stands in for.
pub async fn insert_unless_duplicate(
    conn: &mut PgConnection,
    statement: Query<'_, Postgres, PgArguments>,
) -> Result<bool, sqlx::Error> {
    let mut attempt = sqlx::Connection::begin(&mut *conn).await?;
    match statement.execute(&mut *attempt).await {
        Ok(_) => attempt.commit().await.map(|()| true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            attempt.rollback().await.map(|()| false)
        }
        Err(e) => Err(e),
    }
}
