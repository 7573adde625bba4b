//! The `postgres` source: describes a model's columns and streams its rows
//! as `(primary key, mapped payload)`, with the mapping done by the
//! warehouse.
//!
//! - `config.rs`: the warehouse URL.

pub mod config;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Column as _, Executor, Statement};

use crate::config::{FieldMapping, SyncConfig};
use crate::secret::redact_url;
use crate::sources::{Column, Source, SourceError, SourceRow};
use crate::sql::quote_ident;
pub use config::PostgresSourceConfig;

/// Prefix put before the model SQL when it is wrapped as a subquery; error
/// positions are shifted back by its length.
const DESCRIBE_PREFIX: &str = "SELECT * FROM (\n";

/// jsonb_build_object takes at most 100 arguments (50 fields).
const FIELDS_PER_OBJECT: usize = 50;

pub struct PostgresSource {
    name: String,
    pool: PgPool,
    /// The warehouse keeps text in SQL_ASCII: bytes with no encoding at all.
    sql_ascii: bool,
}

impl PostgresSource {
    pub async fn connect(
        name: &str,
        pg: &PostgresSourceConfig,
    ) -> Result<PostgresSource, SourceError> {
        let connect_error = |message: String| SourceError::Connect {
            source_name: name.to_owned(),
            url: redact_url(pg.url.expose()),
            message,
        };
        let options =
            crate::db::options(&pg.url).map_err(|e: sqlx::Error| connect_error(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options.application_name("ebb-planner"))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let encoding: String = sqlx::query_scalar("SELECT current_setting('server_encoding')")
            .fetch_one(&pool)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(PostgresSource {
            name: name.to_owned(),
            pool,
            sql_ascii: encoding.eq_ignore_ascii_case("SQL_ASCII"),
        })
    }

    async fn describe_model(&self, sync: &SyncConfig) -> Result<Vec<Column>, SourceError> {
        describe(&self.pool, sync).await
    }

    /// Streams the model. Rows arrive as the warehouse sends them; nothing
    /// is buffered beyond the driver's read buffer.
    fn stream_model<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
    ) -> BoxStream<'a, Result<SourceRow, SourceError>> {
        let mut objects = Vec::new();
        let mut param = 1;
        for chunk in mapping.chunks(FIELDS_PER_OBJECT) {
            let args: Vec<String> = chunk
                .iter()
                .map(|m| {
                    let arg = format!("${param}::text, ebb_model.{}", quote_ident(&m.column));
                    param += 1;
                    arg
                })
                .collect();
            objects.push(format!("jsonb_build_object({})", args.join(", ")));
        }
        let payload = if objects.is_empty() {
            "'{}'::jsonb".to_owned()
        } else {
            objects.join(" || ")
        };
        // Identifiers are quoted and field names are bind parameters; only
        // the model itself is user SQL, which is the point of a model.
        // Rows arrive as bytes, so that one value that is not UTF-8
        // reaches the planner as that record's problem instead of failing
        // the whole result. A SQL_ASCII warehouse's text has no encoding:
        // any conversion to UTF-8 (even the server's own, for text results)
        // refuses such bytes, so they are taken as they are; any other
        // server encoding is converted to UTF-8.
        let bytes_in = if self.sql_ascii { "SQL_ASCII" } else { "UTF8" };
        let sql = format!(
            "SELECT convert_to((ebb_model.{})::text, '{bytes_in}') AS ebb_key, \
                    convert_to(({payload})::text, '{bytes_in}') AS ebb_payload FROM (\n{}\n) AS ebb_model",
            quote_ident(&sync.primary_key),
            sync.model.as_subquery()
        );
        let mut query = sqlx::query_as::<_, (Option<Vec<u8>>, Vec<u8>)>(sqlx::AssertSqlSafe(sql));
        for m in mapping {
            query = query.bind(m.field.clone());
        }
        query
            .fetch(&self.pool)
            .map_ok(|(key, payload)| SourceRow { key, payload })
            .map_err(|e| SourceError::Read(e.to_string()))
            .boxed()
    }
}

impl Source for PostgresSource {
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

/// The model's columns with their Postgres type names (`INT8`, `TEXT`,
/// …), or an error located in the model SQL; the statement is prepared,
/// never run (the `redshift` source describes the same way).
pub(crate) async fn describe(pool: &PgPool, sync: &SyncConfig) -> Result<Vec<Column>, SourceError> {
    let sql = format!(
        "{DESCRIBE_PREFIX}{}\n) AS ebb_model",
        sync.model.as_subquery()
    );
    let statement = pool
        .prepare(sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(sql)))
        .await
        .map_err(|e| model_error(sync, e, DESCRIBE_PREFIX.chars().count()))?;
    Ok(statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_info().to_string(),
        })
        .collect())
}

/// Turns a database error on the model into one that points at the model's
/// file and line.
fn model_error(sync: &SyncConfig, error: sqlx::Error, prefix_chars: usize) -> SourceError {
    match &error {
        sqlx::Error::Database(db) => {
            let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
            let position = pg.and_then(|pg| match pg.position() {
                Some(sqlx::postgres::PgErrorPosition::Original(p)) => Some(p),
                _ => None,
            });
            let location = match position {
                Some(p) if p > prefix_chars => sync.model.locate(p - prefix_chars),
                _ => sync.model.describe_origin(),
            };
            let hint = pg
                .and_then(|pg| pg.hint())
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_default();
            SourceError::ModelSql {
                sync: sync.name.clone(),
                location,
                message: db.message().to_owned(),
                hint,
            }
        }
        _ => SourceError::ModelSql {
            sync: sync.name.clone(),
            location: sync.model.describe_origin(),
            message: error.to_string(),
            hint: String::new(),
        },
    }
}
