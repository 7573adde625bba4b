//! The `snowflake` source: Snowflake through its SQL API v2. The model runs
//! as one statement (tagged so its cost is found in `QUERY_HISTORY`); a
//! long one is polled until it finishes; its result is read a partition at
//! a time, and each value is rendered into the payload by its column's
//! type, as the `postgres` source would render the matching type.
//!
//! - `config.rs`: account, user, key or token, warehouse, role, database,
//!   schema, query tag.
//! - `auth.rs`: the key-pair JWT or the OAuth token.
//! - `api.rs`: statements, polling, partitions and retries.
//! - `value.rs`: a jsonv2 value as a [`canonical::Value`].

mod api;
mod auth;
pub mod config;
mod value;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::config::{FieldMapping, SyncConfig};
use crate::sources::source::{positions, record_from};
use crate::sources::{Column, Source, SourceError, SourceRow};
use api::{Api, ApiError, ColumnType, Rows};

pub use config::{SnowflakeAuth, SnowflakeSourceConfig};

/// Put before the model to describe it without reading rows: one line.
const DESCRIBE_PREFIX: &str = "SELECT * FROM (\n";

pub struct SnowflakeSource {
    name: String,
    base_url: String,
    api: Api,
    query_tag: Option<String>,
}

impl SnowflakeSource {
    pub fn connect(name: &str, config: &SnowflakeSourceConfig) -> Result<Self, SourceError> {
        let api = Api::new(config).map_err(|message| SourceError::Connect {
            source_name: name.to_owned(),
            url: config.base_url.clone(),
            message,
        })?;
        Ok(SnowflakeSource {
            name: name.to_owned(),
            base_url: config.base_url.clone(),
            api,
            query_tag: config.query_tag.clone(),
        })
    }

    fn tag(&self, sync: &SyncConfig) -> String {
        self.query_tag
            .clone()
            .unwrap_or_else(|| format!("ebb:{}", sync.name))
    }

    async fn describe_model(&self, sync: &SyncConfig) -> Result<Vec<Column>, SourceError> {
        let statement = format!(
            "{DESCRIBE_PREFIX}{}\n) AS ebb_model LIMIT 0",
            sync.model.as_subquery()
        );
        let result = self
            .api
            .execute(&statement, &self.tag(sync))
            .await
            .map_err(|e| self.error(sync, e, 1))?;
        Ok(row_type(&result.result_set_meta_data)
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                type_name: type_name(c),
            })
            .collect())
    }

    fn stream_model<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
    ) -> BoxStream<'a, Result<SourceRow, SourceError>> {
        futures::stream::try_unfold(Reading::Start, move |reading| async move {
            let (rows, next) = match reading {
                Reading::Start => {
                    let result = self
                        .api
                        .execute(sync.model.as_subquery(), &self.tag(sync))
                        .await
                        .map_err(|e| self.error(sync, e, 0))?;
                    let columns = row_type(&result.result_set_meta_data).to_vec();
                    let picks = picks(sync, mapping, &columns)?;
                    let row_counts: Vec<u64> = result
                        .result_set_meta_data
                        .as_ref()
                        .map(|m| m.partition_info.iter().map(|p| p.row_count).collect())
                        .unwrap_or_default();
                    let handle = result.statement_handle.unwrap_or_default();
                    check_count(&result.data, &row_counts, 0)?;
                    let next = Reading::Partition {
                        handle,
                        index: 1,
                        row_counts,
                        columns,
                        picks,
                    };
                    (result.data, next)
                }
                Reading::Partition {
                    handle,
                    index,
                    row_counts,
                    columns,
                    picks,
                } => {
                    if index >= row_counts.len() {
                        return Ok(None);
                    }
                    let rows = self
                        .api
                        .partition(&handle, index)
                        .await
                        .map_err(|e| SourceError::Read(format!("partition {index}: {e}")))?;
                    check_count(&rows, &row_counts, index)?;
                    let next = Reading::Partition {
                        handle,
                        index: index + 1,
                        row_counts,
                        columns,
                        picks,
                    };
                    (rows, next)
                }
            };
            let Reading::Partition { columns, picks, .. } = &next else {
                return Ok(None);
            };
            let batch: Vec<Result<SourceRow, SourceError>> = rows
                .into_iter()
                .map(|row| source_row(&row, columns, picks, mapping))
                .collect();
            Ok(Some((futures::stream::iter(batch), next)))
        })
        .try_flatten()
        .boxed()
    }

    /// A SQL API error as a source error: credentials at the connection,
    /// a statement's error at the model's file and line (Snowflake says
    /// `line L at position P`, counted in the statement sent, whose first
    /// `prefix_lines` lines are Ebb's).
    fn error(&self, sync: &SyncConfig, error: ApiError, prefix_lines: usize) -> SourceError {
        match error {
            ApiError::Auth { .. } => SourceError::Connect {
                source_name: self.name.clone(),
                url: self.base_url.clone(),
                message: format!(
                    "{error} (check the account, the user and its key or token, and what the role may use)"
                ),
            },
            ApiError::Statement { ref message, .. } => {
                let location = statement_position(sync.model.as_subquery(), message, prefix_lines)
                    .map(|p| sync.model.locate(p))
                    .unwrap_or_else(|| sync.model.describe_origin());
                SourceError::ModelSql {
                    sync: sync.name.clone(),
                    location,
                    message: error.to_string(),
                    hint: String::new(),
                }
            }
            ApiError::Other(message) => SourceError::Read(format!(
                "source `{}` ({}): {message}",
                self.name, self.base_url
            )),
        }
    }
}

enum Reading {
    Start,
    Partition {
        handle: String,
        index: usize,
        /// Each partition's rows, as the result's metadata announced them.
        row_counts: Vec<u64>,
        columns: Vec<ColumnType>,
        /// The key's column, then each mapped field's.
        picks: Vec<usize>,
    },
}

/// A partition with fewer or more rows than announced was cut or mixed up
/// on the way: reading on would take deletes for real ones.
fn check_count(rows: &Rows, row_counts: &[u64], index: usize) -> Result<(), SourceError> {
    match row_counts.get(index) {
        Some(&expected) if expected != rows.len() as u64 => Err(SourceError::Read(format!(
            "partition {index} has {} rows where Snowflake announced {expected}",
            rows.len()
        ))),
        _ => Ok(()),
    }
}

fn row_type(meta: &Option<api::Metadata>) -> &[ColumnType] {
    meta.as_ref().map(|m| m.row_type.as_slice()).unwrap_or(&[])
}

/// `FIXED(38,2)`, `TEXT`, `TIMESTAMP_NTZ`: Snowflake's names, upper case.
fn type_name(column: &ColumnType) -> String {
    let kind = column.kind.to_ascii_uppercase();
    match column.scale {
        Some(scale) if kind == "FIXED" => format!("FIXED(38,{scale})"),
        _ => kind,
    }
}

fn picks(
    sync: &SyncConfig,
    mapping: &[FieldMapping],
    columns: &[ColumnType],
) -> Result<Vec<usize>, SourceError> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    positions(sync, mapping, &names)
}

fn source_row(
    row: &[Option<String>],
    columns: &[ColumnType],
    picks: &[usize],
    mapping: &[FieldMapping],
) -> Result<SourceRow, SourceError> {
    record_from(mapping, |i| {
        let at = picks[i];
        Ok(value::read(
            row.get(at).and_then(|c| c.as_deref()),
            &columns[at],
        ))
    })
}

/// The 1-based character position in `sql` of Snowflake's `line L at
/// position P` (P counted from 0).
fn statement_position(sql: &str, message: &str, prefix_lines: usize) -> Option<usize> {
    let (_, after) = message.split_once("line ")?;
    let (line, after) = after.split_once(" at position ")?;
    let line: usize = line.trim().parse().ok()?;
    let column: usize = after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let model_line = line.checked_sub(prefix_lines)?.max(1);
    let line_start: usize = sql
        .split('\n')
        .take(model_line - 1)
        .map(|l| l.chars().count() + 1)
        .sum();
    Some(line_start + column + 1)
}

impl Source for SnowflakeSource {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflake_positions_point_into_the_model() {
        let sql = "SELECT id,\n  emial\nFROM customers";
        let message =
            "SQL compilation error: error line 2 at position 2\ninvalid identifier 'EMIAL'";
        let p = statement_position(sql, message, 0).unwrap();
        assert_eq!(sql.chars().skip(p - 1).take(5).collect::<String>(), "emial");
        // The describe statement has one line of Ebb's before the model.
        let message =
            "SQL compilation error:\nsyntax error line 4 at position 0 unexpected 'FORM'.";
        let sql = "SELECT id,\n  email\nFORM customers";
        let p = statement_position(sql, message, 1).unwrap();
        assert_eq!(sql.chars().skip(p - 1).take(4).collect::<String>(), "FORM");
    }
}
