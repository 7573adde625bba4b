//! Bulk API 2.0 ingest jobs, for large runs (`api = "bulk"`): one job per
//! batch and request kind. Create the job, upload the CSV, close it, poll
//! until Salesforce has processed it, then read the per-record successful
//! and failed results and map them back to the records. Every operation Ebb
//! runs this way (upsert by external id, update and delete by id) is
//! idempotent, so a job cut off by a crash is simply run again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::SalesforceDestination;
use super::csv;
use super::service::{Failure, Payload};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::vendor::RequestBudget;

/// How long a job may take before the batch is retried as a whole.
const MAX_JOB_TIME: Duration = Duration::from_secs(30 * 60);
/// Transient failures in a row while reading a job Ebb created (its state,
/// its results) before giving up on it. The job's id is known, so a failed
/// read is read again: creating a second job while the first may still
/// run would apply the batch twice over.
const READ_ATTEMPTS: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Upsert,
    Update,
    Delete,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Upsert => "upsert",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobInfo {
    id: String,
    state: String,
    #[serde(default)]
    error_message: Option<String>,
}

/// One record of a job: its position in the batch and its fields (with
/// `Id` for updates and deletes).
pub struct JobRecord {
    pub index: usize,
    pub fields: Map<String, Value>,
}

impl SalesforceDestination {
    /// Runs one job; answers each record by its batch position.
    pub(super) async fn run_job(
        &self,
        budget: &RequestBudget<'_>,
        operation: Operation,
        records: Vec<JobRecord>,
    ) -> Result<Vec<(usize, RecordAnswer)>, Failure> {
        let key_column = match operation {
            Operation::Upsert => self.config.external_id.clone(),
            Operation::Update | Operation::Delete => "Id".to_owned(),
        };
        let mut columns: Vec<String> = Vec::new();
        for record in &records {
            for name in record.fields.keys() {
                if !columns.contains(name) {
                    columns.push(name.clone());
                }
            }
        }
        columns.sort_unstable_by(|a, b| (a != &key_column, a).cmp(&(b != &key_column, b)));
        let rows: Vec<Vec<Option<&Value>>> = records
            .iter()
            .map(|r| columns.iter().map(|c| r.fields.get(c)).collect())
            .collect();
        let body = csv::write(&columns, &rows);

        let mut spec = json!({
            "object": self.config.object, "operation": operation.name(),
            "contentType": "CSV", "lineEnding": "LF", "columnDelimiter": "COMMA",
        });
        if operation == Operation::Upsert {
            spec["externalIdFieldName"] = Value::String(self.config.external_id.clone());
        }
        let job: JobInfo = self
            .json(budget, Method::POST, "/jobs/ingest", Payload::Json(&spec))
            .await?;
        tracing::info!(job = %job.id, operation = operation.name(), records = records.len(), "Salesforce bulk job created");
        self.raw(
            budget,
            Method::PUT,
            &format!("/jobs/ingest/{}/batches", job.id),
            Payload::Csv(&body),
        )
        .await?;
        let _: Value = self
            .json(
                budget,
                Method::PATCH,
                &format!("/jobs/ingest/{}", job.id),
                Payload::Json(&json!({ "state": "UploadComplete" })),
            )
            .await?;
        let started = Instant::now();
        let mut wait = Duration::from_millis(250);
        let job = loop {
            let info = self
                .read_job(budget, &format!("/jobs/ingest/{}", job.id))
                .await?;
            let info: JobInfo = parse_answer("Salesforce", "a bulk job's state", &info)?;
            match info.state.as_str() {
                "JobComplete" => break info,
                "Failed" | "Aborted" => {
                    return Err(Failure::Misconfigured(format!(
                        "Salesforce bulk job {} {}: {}",
                        info.id,
                        info.state.to_lowercase(),
                        info.error_message.unwrap_or_default()
                    )));
                }
                _ if started.elapsed() > MAX_JOB_TIME => {
                    return Err(Failure::Transient(
                        format!(
                            "Salesforce bulk job {} still {} after {} minutes",
                            info.id,
                            info.state,
                            MAX_JOB_TIME.as_secs() / 60
                        ),
                        None,
                    ));
                }
                _ => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        };
        let by_key: HashMap<String, usize> = records
            .iter()
            .filter_map(|r| Some((key_text(r.fields.get(&key_column)?), r.index)))
            .collect();
        let mut answers = Vec::with_capacity(records.len());
        let successes = self
            .read_job(
                budget,
                &format!("/jobs/ingest/{}/successfulResults/", job.id),
            )
            .await?;
        for (row, index) in result_rows(&successes, &key_column, &by_key) {
            let id = row.get("sf__Id").filter(|id| !id.is_empty()).cloned();
            let destination_id = if operation == Operation::Delete {
                None
            } else {
                id
            };
            answers.push((
                index,
                RecordAnswer::Applied {
                    destination_id,
                    looked_up: false,
                },
            ));
        }
        let failures = self
            .read_job(budget, &format!("/jobs/ingest/{}/failedResults/", job.id))
            .await?;
        for (row, index) in result_rows(&failures, &key_column, &by_key) {
            let error = row.get("sf__Error").cloned().unwrap_or_default();
            let gone = ["ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"]
                .iter()
                .any(|c| error.starts_with(c));
            answers.push((
                index,
                if operation == Operation::Delete && gone {
                    RecordAnswer::Applied {
                        destination_id: None,
                        looked_up: false,
                    }
                } else {
                    RecordAnswer::Rejected(format!("Salesforce {}", error.trim_end_matches(" --")))
                },
            ));
        }
        if answers.len() != records.len() {
            return Err(Failure::Unexpected(format!(
                "Salesforce bulk job {} reported {} of {} records",
                job.id,
                answers.len(),
                records.len()
            )));
        }
        Ok(answers)
    }
}

impl SalesforceDestination {
    /// A `GET` of a job Ebb created, read again after transient failures
    /// (outages, 429s, unreadable answers) up to [`READ_ATTEMPTS`] times.
    async fn read_job(&self, budget: &RequestBudget<'_>, path: &str) -> Result<String, Failure> {
        let mut attempt = 1;
        loop {
            let failure = match self.raw(budget, Method::GET, path, Payload::None).await {
                Ok(text) => return Ok(text),
                Err(failure) => failure,
            };
            let wait = match &failure {
                Failure::Throttled { retry_after } => retry_after.unwrap_or(Duration::from_secs(5)),
                Failure::Transient(_, retry_after) => retry_after.unwrap_or(Duration::ZERO),
                Failure::Unreachable(_) => Duration::ZERO,
                _ => return Err(failure),
            };
            if attempt >= READ_ATTEMPTS {
                return Err(failure);
            }
            let backoff = Duration::from_millis(250 * 2u64.pow(attempt.min(6)));
            tracing::warn!(path, attempt, error = ?failure, "reading a Salesforce bulk job failed; reading it again");
            tokio::time::sleep(wait.max(backoff).min(Duration::from_secs(60))).await;
            attempt += 1;
        }
    }
}

fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_lowercase(),
        other => other.to_string().to_lowercase(),
    }
}

/// Rows of a results CSV, as column → value, with the batch position of
/// the record each is about.
fn result_rows(
    text: &str,
    key_column: &str,
    by_key: &HashMap<String, usize>,
) -> Vec<(HashMap<String, String>, usize)> {
    let mut rows = csv::parse(text).into_iter();
    let Some(header) = rows.next() else {
        return Vec::new();
    };
    rows.filter_map(|cells| {
        let row: HashMap<String, String> = header.iter().cloned().zip(cells).collect();
        let key = row
            .iter()
            .find(|(column, _)| column.eq_ignore_ascii_case(key_column))
            .map(|(_, v)| v.to_lowercase())
            .or_else(|| row.get("sf__Id").map(|v| v.to_lowercase()))?;
        let index = *by_key.get(&key)?;
        Some((row, index))
    })
    .collect()
}
