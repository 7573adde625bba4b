//! The `redshift` source: a Postgres-protocol warehouse without Postgres's
//! JSON functions and without `COPY … TO STDOUT` (Amazon Redshift). The
//! model is read through a cursor, `fetch_size` rows per `FETCH`, in the
//! text format of the simple query protocol, and each value is rendered
//! into the payload by its column's type (`sources::canonical`), the same
//! text the `postgres` source gets from the warehouse.
//!
//! - `config.rs`: the URL and the fetch size.
//! - `value.rs`: a text value as a [`canonical::Value`].

pub mod config;
mod value;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};

use crate::config::{FieldMapping, SyncConfig};
use crate::secret::redact_url;
use crate::sources::source::record_from;
use crate::sources::{Column, Source, SourceError, SourceRow};
use crate::sql::quote_ident;
pub use config::RedshiftSourceConfig;

const CURSOR: &str = "ebb_model_rows";
/// UTC, so `timestamptz` values come with `+00`; ISO dates; floats with
/// enough digits to read back exactly.
const SESSION: &str =
    "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, MDY'; SET extra_float_digits TO 2";

pub struct RedshiftSource {
    name: String,
    /// For describing models.
    pool: PgPool,
    /// Each stream reads on a connection of its own, closed with it, so
    /// that a stream dropped half way leaves no open transaction behind.
    options: PgConnectOptions,
    fetch_size: u32,
}

impl RedshiftSource {
    pub async fn connect(
        name: &str,
        config: &RedshiftSourceConfig,
    ) -> Result<RedshiftSource, SourceError> {
        let connect_error = |message: String| SourceError::Connect {
            source_name: name.to_owned(),
            url: redact_url(config.url.expose()),
            message,
        };
        let options = crate::db::options(&config.url)
            .map_err(|e: sqlx::Error| connect_error(e.to_string()))?
            .application_name("ebb-planner");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options.clone())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(RedshiftSource {
            name: name.to_owned(),
            pool,
            options,
            fetch_size: config.fetch_size,
        })
    }

    async fn describe_model(&self, sync: &SyncConfig) -> Result<Vec<Column>, SourceError> {
        crate::sources::postgres::describe(&self.pool, sync).await
    }

    fn stream_model<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
    ) -> BoxStream<'a, Result<SourceRow, SourceError>> {
        let select = select_sql(sync, mapping);
        let fetch = format!("FETCH FORWARD {} FROM {CURSOR}", self.fetch_size);
        let read_error = |e: sqlx::Error| SourceError::Read(e.to_string());
        futures::stream::try_unfold(None, move |open: Option<PgConnection>| {
            let select = select.clone();
            let fetch = fetch.clone();
            async move {
                let mut conn = match open {
                    Some(conn) => conn,
                    None => {
                        let mut conn = self.options.connect().await.map_err(read_error)?;
                        let start =
                            format!("{SESSION}; BEGIN; DECLARE {CURSOR} CURSOR FOR {select}");
                        sqlx::raw_sql(sqlx::AssertSqlSafe(start))
                            .execute(&mut conn)
                            .await
                            .map_err(read_error)?;
                        conn
                    }
                };
                let rows: Vec<PgRow> = sqlx::raw_sql(sqlx::AssertSqlSafe(fetch))
                    .fetch_all(&mut conn)
                    .await
                    .map_err(read_error)?;
                if rows.is_empty() {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CLOSE {CURSOR}; COMMIT")))
                        .execute(&mut conn)
                        .await
                        .map_err(read_error)?;
                    return Ok(None);
                }
                let batch: Vec<Result<SourceRow, SourceError>> =
                    rows.iter().map(|row| source_row(row, mapping)).collect();
                Ok(Some((futures::stream::iter(batch), Some(conn))))
            }
        })
        .try_flatten()
        .boxed()
    }
}

/// The key column, then each mapped column, of the model.
fn select_sql(sync: &SyncConfig, mapping: &[FieldMapping]) -> String {
    let mut columns = vec![format!("ebb_model.{}", quote_ident(&sync.primary_key))];
    columns.extend(
        mapping
            .iter()
            .map(|m| format!("ebb_model.{}", quote_ident(&m.column))),
    );
    format!(
        "SELECT {} FROM (\n{}\n) AS ebb_model",
        columns.join(", "),
        sync.model.as_subquery()
    )
}

fn source_row(row: &PgRow, mapping: &[FieldMapping]) -> Result<SourceRow, SourceError> {
    record_from(mapping, |i| value::read(row, i))
}

impl Source for RedshiftSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe<'a>(
        &'a self,
        sync: &'a SyncConfig,
    ) -> BoxFuture<'a, Result<Vec<Column>, SourceError>> {
        Box::pin(self.describe_model(sync))
    }

    fn stream<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
    ) -> BoxStream<'a, Result<SourceRow, SourceError>> {
        self.stream_model(sync, mapping)
    }
}
