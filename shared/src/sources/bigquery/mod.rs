//! The `bigquery` source: Google BigQuery through its REST API v2. A model
//! is described by a dry run (free: nothing is read) and read by one query
//! job, labelled with the sync, page by page (`jobs.getQueryResults` with
//! page tokens), with `maximumBytesBilled` as a guardrail; each value is
//! rendered into the payload by its schema type, as the `postgres` source
//! renders the matching type.
//!
//! - `config.rs`: project, location, credentials, guardrail, page size.
//! - `api.rs`: jobs.query, jobs.getQueryResults, auth and retries.
//! - `value.rs`: a cell as a [`canonical::Value`].

mod api;
pub mod config;
mod value;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::config::{FieldMapping, SyncConfig};
use crate::sources::canonical;
use crate::sources::source::{positions, record_from};
use crate::sources::{Column, Source, SourceError, SourceRow};
use api::{Api, ApiError, Field, JobReference, QueryResponse};
pub use config::{BigQueryAuth, BigQuerySourceConfig};

pub struct BigQuerySource {
    name: String,
    base_url: String,
    api: Api,
}

enum Reading {
    Start,
    Page {
        job: JobReference,
        token: String,
        fields: Vec<Field>,
        picks: Vec<usize>,
    },
    Done,
}

impl BigQuerySource {
    pub fn connect(name: &str, config: &BigQuerySourceConfig) -> Result<Self, SourceError> {
        let api = Api::new(config).map_err(|message| SourceError::Connect {
            source_name: name.to_owned(),
            url: config.base_url.clone(),
            message,
        })?;
        Ok(BigQuerySource {
            name: name.to_owned(),
            base_url: config.base_url.clone(),
            api,
        })
    }

    async fn describe_model(&self, sync: &SyncConfig) -> Result<Vec<Column>, SourceError> {
        let plan = self
            .api
            .query(sync.model.as_subquery(), true, &sync.name)
            .await
            .map_err(|e| self.error(sync, e))?;
        Ok(plan
            .schema
            .map(|s| s.fields)
            .unwrap_or_default()
            .iter()
            .map(|f| Column {
                name: f.name.clone(),
                type_name: match f.mode.as_deref() {
                    Some("REPEATED") => format!("ARRAY<{}>", f.kind),
                    _ => f.kind.clone(),
                },
            })
            .collect())
    }

    /// Waits for the job to finish: the first page with the schema.
    async fn finished(
        &self,
        sync: &SyncConfig,
        mut response: QueryResponse,
    ) -> Result<(JobReference, QueryResponse), SourceError> {
        let job = response.job_reference.clone().ok_or_else(|| {
            SourceError::Read("BigQuery answered without a job reference".to_owned())
        })?;
        while !response.job_complete {
            response = self
                .api
                .results(&job, None)
                .await
                .map_err(|e| self.error(sync, e))?;
        }
        Ok((job, response))
    }

    fn stream_model<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
    ) -> BoxStream<'a, Result<SourceRow, SourceError>> {
        futures::stream::try_unfold(Reading::Start, move |reading| async move {
            let (response, job, fields, picks) = match reading {
                Reading::Done => return Ok(None),
                Reading::Start => {
                    let started = self
                        .api
                        .query(sync.model.as_subquery(), false, &sync.name)
                        .await
                        .map_err(|e| self.error(sync, e))?;
                    let (job, response) = self.finished(sync, started).await?;
                    let fields = response
                        .schema
                        .clone()
                        .map(|s| s.fields)
                        .unwrap_or_default();
                    let picks = picks(sync, mapping, &fields)?;
                    (response, job, fields, picks)
                }
                Reading::Page {
                    job,
                    token,
                    fields,
                    picks,
                } => {
                    let response = self
                        .api
                        .results(&job, Some(&token))
                        .await
                        .map_err(|e| SourceError::Read(format!("a page of results: {e}")))?;
                    (response, job, fields, picks)
                }
            };
            let batch: Vec<Result<SourceRow, SourceError>> = response
                .rows
                .iter()
                .map(|row| source_row(row, &fields, &picks, mapping))
                .collect();
            let next = match response.page_token {
                Some(token) => Reading::Page {
                    job,
                    token,
                    fields,
                    picks,
                },
                None => Reading::Done,
            };
            Ok(Some((futures::stream::iter(batch), next)))
        })
        .try_flatten()
        .boxed()
    }

    fn error(&self, sync: &SyncConfig, error: ApiError) -> SourceError {
        match error {
            ApiError::Auth { .. } => SourceError::Connect {
                source_name: self.name.clone(),
                url: self.base_url.clone(),
                message: format!(
                    "{error} (check the service account's key or the token, and that it may run jobs in the project and read the tables)"
                ),
            },
            ApiError::Query { ref message, .. } => SourceError::ModelSql {
                sync: sync.name.clone(),
                location: query_position(sync.model.as_subquery(), message)
                    .map(|p| sync.model.locate(p))
                    .unwrap_or_else(|| sync.model.describe_origin()),
                message: error.to_string(),
                hint: String::new(),
            },
            ApiError::Other(message) => SourceError::Read(format!(
                "source `{}` ({}): {message}",
                self.name, self.base_url
            )),
        }
    }
}

fn picks(
    sync: &SyncConfig,
    mapping: &[FieldMapping],
    fields: &[Field],
) -> Result<Vec<usize>, SourceError> {
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    positions(sync, mapping, &names)
}

fn source_row(
    row: &api::Row,
    fields: &[Field],
    picks: &[usize],
    mapping: &[FieldMapping],
) -> Result<SourceRow, SourceError> {
    record_from(mapping, |i| {
        let at = picks[i];
        Ok(match row.f.get(at) {
            Some(cell) => value::read(&cell.v, &fields[at]),
            None => canonical::Value::Null,
        })
    })
}

/// The 1-based character position in `sql` of BigQuery's `at [L:C]`
/// (both from 1).
fn query_position(sql: &str, message: &str) -> Option<usize> {
    let (_, after) = message.rsplit_once(" at [")?;
    let (line, after) = after.split_once(':')?;
    let column: usize = after.split(']').next()?.parse().ok()?;
    let line: usize = line.parse().ok()?;
    let line_start: usize = sql
        .split('\n')
        .take(line.checked_sub(1)?)
        .map(|l| l.chars().count() + 1)
        .sum();
    Some(line_start + column)
}

impl Source for BigQuerySource {
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
    fn bigquery_positions_point_into_the_model() {
        let sql = "SELECT id,\n  email\nFORM customers";
        let p = query_position(
            sql,
            "Syntax error: Expected end of input but got identifier \"FORM\" at [3:1]",
        )
        .unwrap();
        assert_eq!(sql.chars().skip(p - 1).take(4).collect::<String>(), "FORM");
        assert_eq!(query_position(sql, "Not found: Table x"), None);
    }
}
