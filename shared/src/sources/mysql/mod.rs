//! The `mysql` source (MySQL and MariaDB): describes a model's columns and
//! streams its rows, each typed value rendered into the payload as the
//! Postgres source would render the matching type (`sources::canonical`),
//! so a record's hash and payload do not depend on the warehouse.
//!
//! - `config.rs`: the warehouse URL.
//! - `value.rs`: a MySQL column value as a [`canonical::Value`].

pub mod config;
mod value;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Column as _, Executor, Statement, TypeInfo};

use crate::config::{FieldMapping, SyncConfig};
use crate::secret::redact_url;
use crate::sources::source::record_from;
use crate::sources::{Column, Source, SourceError, SourceRow};
pub use config::MySqlSourceConfig;

/// Put before the model SQL when it is wrapped as a derived table: one
/// line, which MySQL's "at line N" counts.
const WRAP_PREFIX: &str = "SELECT * FROM (\n";

pub struct MySqlSource {
    name: String,
    pool: MySqlPool,
}

impl MySqlSource {
    pub async fn connect(
        name: &str,
        config: &MySqlSourceConfig,
    ) -> Result<MySqlSource, SourceError> {
        let connect_error = |message: String| SourceError::Connect {
            source_name: name.to_owned(),
            url: redact_url(config.url.expose()),
            message,
        };
        let url = config.url.expose().replacen("mariadb://", "mysql://", 1);
        let options: MySqlConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| connect_error(e.to_string()))?;
        // TIMESTAMP values arrive in UTC (sqlx sets the session's time zone
        // to +00:00), and text in utf8mb4.
        let options = options.charset("utf8mb4");
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await
            .map_err(|e| connect_error(connect_message(&e)))?;
        Ok(MySqlSource {
            name: name.to_owned(),
            pool,
        })
    }

    async fn describe_model(&self, sync: &SyncConfig) -> Result<Vec<Column>, SourceError> {
        let sql = format!("{WRAP_PREFIX}{}\n) AS ebb_model", sync.model.as_subquery());
        let statement = self
            .pool
            .prepare(sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(sql)))
            .await
            .map_err(|e| model_error(sync, e))?;
        Ok(statement
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_owned(),
                type_name: c.type_info().name().to_owned(),
            })
            .collect())
    }

    /// Streams the model: the key column, then each mapped column, as the
    /// server sends the rows (nothing is buffered beyond the driver's read
    /// buffer).
    fn stream_model<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
    ) -> BoxStream<'a, Result<SourceRow, SourceError>> {
        let mut columns = vec![format!("ebb_model.{}", quote_ident(&sync.primary_key))];
        columns.extend(
            mapping
                .iter()
                .map(|m| format!("ebb_model.{}", quote_ident(&m.column))),
        );
        // Identifiers are quoted; only the model is user SQL.
        let sql = format!(
            "SELECT {} FROM (\n{}\n) AS ebb_model",
            columns.join(", "),
            sync.model.as_subquery()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch(&self.pool)
            .map_err(|e| SourceError::Read(e.to_string()))
            .and_then(move |row| std::future::ready(source_row(&row, mapping)))
            .boxed()
    }
}

fn source_row(row: &MySqlRow, mapping: &[FieldMapping]) -> Result<SourceRow, SourceError> {
    record_from(mapping, |i| value::read(row, i))
}

impl Source for MySqlSource {
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

/// A MySQL identifier in backticks.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn connect_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR
            Some("28000") | Some("42000") => format!(
                "{} (check the user and password in the URL, and that the user may read the database)",
                db.message()
            ),
            _ => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

/// Points a MySQL error on the model at the model's file and line: syntax
/// errors say `near '…' at line N` (N counted in the wrapped SQL), unknown
/// columns and tables name what to look for.
fn model_error(sync: &SyncConfig, error: sqlx::Error) -> SourceError {
    let message = match &error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    let sql = sync.model.as_subquery();
    let position = syntax_error_position(sql, &message).or_else(|| named_position(sql, &message));
    SourceError::ModelSql {
        sync: sync.name.clone(),
        location: match position {
            Some(p) => sync.model.locate(p),
            None => sync.model.describe_origin(),
        },
        message,
        hint: String::new(),
    }
}

/// The 1-based character position in `sql` of a syntax error's `near '…'
/// at line N`. The line is where the parser stood, which can be the line
/// after the offending text, so the text is looked for first: its
/// occurrence closest before the end of line N.
fn syntax_error_position(sql: &str, message: &str) -> Option<usize> {
    let (before, line) = message.rsplit_once(" at line ")?;
    let line: usize = line.trim().parse().ok()?;
    // The lines of WRAP_PREFIX come first.
    let model_line = line
        .saturating_sub(WRAP_PREFIX.matches('\n').count())
        .max(1);
    let end_of_line: usize = sql
        .split('\n')
        .take(model_line)
        .map(|l| l.len() + 1)
        .sum::<usize>()
        .min(sql.len());
    let near = before
        .rsplit_once("near '")
        .map(|(_, near)| near.trim_end_matches('\''))
        .and_then(|near| near.split('\n').next())
        .unwrap_or("")
        .trim();
    let byte = if near.is_empty() {
        // Nothing left to read: the model ended too early.
        sql.len()
    } else {
        sql[..end_of_line].rfind(near).or_else(|| sql.find(near))?
    };
    Some(sql[..byte].chars().count() + 1)
}

/// The position in `sql` of the column or table an error names
/// (`Unknown column 'x' in 'field list'`, `Table 'db.t' doesn't exist`).
fn named_position(sql: &str, message: &str) -> Option<usize> {
    let name = message.split('\'').nth(1)?;
    let name = name.rsplit('.').next().unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let byte = sql.find(name)?;
    Some(sql[..byte].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn before_position(sql: &str, message: &str) -> String {
        let position = syntax_error_position(sql, message).expect("a position");
        sql.chars().take(position - 1).collect()
    }

    #[test]
    fn a_syntax_error_points_at_its_near_text() {
        let sql = "SELECT id,\n       email\nFORM analytics.customers";
        let near = "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'FORM analytics.customers\n) AS ebb_model' at line 4";
        assert!(before_position(sql, near).ends_with("email\n"));
        // MariaDB may name the line after the offending text.
        let sql = "SELECT id, plan\nFORM customers WHERE plan = 'customers'";
        let near = "... near 'customers WHERE plan = 'customers'\n) AS ebb_model' at line 3";
        assert_eq!(before_position(sql, near), "SELECT id, plan\nFORM ");
        let sql = "SELECT id FROM t WHERE";
        assert_eq!(before_position(sql, "... near '' at line 2"), sql);
    }

    #[test]
    fn an_unknown_column_points_at_its_name() {
        let sql = "SELECT id,\n  emial\nFROM t";
        let position = named_position(sql, "Unknown column 'emial' in 'field list'").unwrap();
        assert_eq!(position, 14);
    }

    #[test]
    fn identifiers_are_quoted_with_backticks() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
    }
}
