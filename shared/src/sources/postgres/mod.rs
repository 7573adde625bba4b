//! The `postgres` source: describes a model's columns and streams its rows
//! as `(primary key, mapped payload)` with one `COPY … TO STDOUT`.
//!
//! - `config.rs`: the warehouse URL.
//! - `payload.rs`: the model's `COPY` statement, and records from its rows.
//! - `crate::copy_text`: reading `COPY`'s text format.

pub mod config;
mod payload;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolCopyExt, PgPoolOptions};
use sqlx::{Column as _, Executor, Statement};

use crate::config::{FieldMapping, SyncConfig};
use crate::copy_text;
use crate::secret::redact_url;
use crate::sources::{Column, Source, SourceError, SourceRow};
pub use config::PostgresSourceConfig;
use payload::{KeyOrder, ModelCopy, RecordReader};

/// Prefix put before the model SQL when it is wrapped as a subquery; error
/// positions are shifted back by its length.
const DESCRIBE_PREFIX: &str = "SELECT * FROM (\n";

pub struct PostgresSource {
    name: String,
    pool: PgPool,
    /// The warehouse's text sorts in `C` by the same bytes the planner
    /// reads (UTF-8 or SQL_ASCII): only then can it read in key order.
    sorts_as_read: bool,
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
        let options = crate::db::options(&pg.url)
            .map_err(|e: sqlx::Error| connect_error(e.to_string()))?
            .application_name("ebb-planner");
        let (pool, encoding) = connect_pool(options)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(PostgresSource {
            name: name.to_owned(),
            pool,
            // Another server encoding is converted to UTF-8 on the way out,
            // and its `C` order (its own bytes) need not be UTF-8's.
            sorts_as_read: matches!(encoding.to_ascii_uppercase().as_str(), "UTF8" | "SQL_ASCII"),
        })
    }

    async fn describe_model(&self, sync: &SyncConfig) -> Result<Vec<Column>, SourceError> {
        describe(&self.pool, sync).await
    }

    /// Streams the model with `COPY … TO STDOUT`: rows arrive as the
    /// warehouse sends them, and nothing is buffered beyond one chunk.
    fn stream_model<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
        order: KeyOrder,
    ) -> BoxStream<'a, Result<SourceRow, SourceError>> {
        let start = async move {
            // `describe` prepares the model as one statement, so the COPY
            // below (simple protocol, which would run several) runs only
            // the model.
            let columns = describe(&self.pool, sync).await?;
            let copy = ModelCopy::new(sync, mapping, &columns, order)?;
            // Text comes as UTF-8, or as it is from a SQL_ASCII warehouse
            // (see `connect_pool`).
            let chunks = self
                .pool
                .copy_out_raw(&copy.statement)
                .await
                .map_err(|e| model_error(sync, e, copy.prefix_chars))?;
            Ok::<_, SourceError>(records(chunks, copy.reader))
        };
        futures::stream::once(start).try_flatten().boxed()
    }
}

/// The source's connections. A SQL_ASCII warehouse's text has no encoding
/// at all: sending it as UTF-8 makes the server check it, and one value
/// that is not UTF-8 fails the whole COPY. So a connection to one sets the
/// client to SQL_ASCII too, and the server sends the bytes as they are:
/// such a value costs only its record (see the planner's snapshot). Any
/// other server encoding is converted to UTF-8 by the server. Returns the
/// pool and the server's encoding.
async fn connect_pool(options: PgConnectOptions) -> Result<(PgPool, String), sqlx::Error> {
    let seen = std::sync::Arc::new(std::sync::OnceLock::new());
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(15))
        .after_connect({
            let seen = seen.clone();
            move |conn, _| {
                let seen = seen.clone();
                Box::pin(async move {
                    let encoding: String =
                        sqlx::query_scalar("SELECT current_setting('server_encoding')")
                            .fetch_one(&mut *conn)
                            .await?;
                    if encoding.eq_ignore_ascii_case("SQL_ASCII") {
                        conn.execute("SET client_encoding = 'SQL_ASCII'").await?;
                    }
                    let _ = seen.set(encoding);
                    Ok(())
                })
            }
        })
        // Opens a first connection, so `seen` is set once this returns.
        .connect_with(options)
        .await?;
    let encoding = seen.get().cloned().unwrap_or_default();
    Ok((pool, encoding))
}

/// COPY messages read into records at a time, at most.
const CHUNKS_AT_ONCE: usize = 256;

/// The records of a model's COPY chunks, in order; a read that ends
/// half-way through a row is an error, not a shorter model.
fn records(
    chunks: BoxStream<'static, Result<bytes::Bytes, sqlx::Error>>,
    reader: RecordReader,
) -> BoxStream<'static, Result<SourceRow, SourceError>> {
    struct Reading {
        chunks: futures::stream::ReadyChunks<BoxStream<'static, Result<bytes::Bytes, sqlx::Error>>>,
        rows: copy_text::Rows,
        reader: RecordReader,
        ended: bool,
    }
    let reading = Reading {
        // COPY sends a message per row: the rows of all the messages at
        // hand go on at once, not each in a list of its own.
        chunks: chunks.ready_chunks(CHUNKS_AT_ONCE),
        rows: copy_text::Rows::default(),
        reader,
        ended: false,
    };
    futures::stream::unfold(reading, |mut reading| async move {
        if reading.ended {
            return None;
        }
        let records = match reading.chunks.next().await {
            Some(chunks) => {
                let mut records = Vec::with_capacity(chunks.len());
                let Reading {
                    rows,
                    reader,
                    ended,
                    ..
                } = &mut reading;
                for chunk in chunks {
                    match chunk {
                        Ok(chunk) => rows.push(&chunk, |row| records.push(reader.record(row))),
                        Err(e) => {
                            *ended = true;
                            records.push(Err(SourceError::Read(e.to_string())));
                            break;
                        }
                    }
                }
                records
            }
            None => {
                reading.ended = true;
                if !reading.rows.unfinished() {
                    return None;
                }
                vec![Err(SourceError::Read(
                    "the model's COPY ended in the middle of a row".to_owned(),
                ))]
            }
        };
        Some((futures::stream::iter(records), reading))
    })
    .flatten()
    .boxed()
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
        self.stream_model(sync, mapping, KeyOrder::AsStored)
    }

    fn stream_in_key_order<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
    ) -> Option<BoxStream<'a, Result<SourceRow, SourceError>>> {
        self.sorts_as_read
            .then(|| self.stream_model(sync, mapping, KeyOrder::Bytes))
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
