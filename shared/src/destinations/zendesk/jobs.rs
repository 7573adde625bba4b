//! Zendesk's background jobs: a bulk request (`create_or_update_many`,
//! `destroy_many`) answers with a `job_status` to poll at
//! `GET /api/v2/job_statuses/{id}` until it is `completed` (its `results`
//! say what happened to each item), `failed` or `killed`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::ZendeskDestination;
use super::service::{self, Failure};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::vendor::RequestBudget;

/// The first poll comes this long after the job was queued; each later
/// one waits twice as long as the one before, up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(500);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub results: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct JobAnswer {
    job_status: JobStatus,
}

impl JobStatus {
    fn finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "killed")
    }
}

impl ZendeskDestination {
    /// Sends a bulk request and waits for its job; returns the job's
    /// `results` (one per item, in the order sent, for
    /// `create_or_update_many`).
    pub(super) async fn run_job(
        &self,
        budget: &RequestBudget<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Vec<Value>, Failure> {
        budget.spend().await;
        let answer = service::call(&self.client, &self.config, method, path, body).await?;
        let queued: JobAnswer = parse_answer("Zendesk", "a bulk request", &answer.body)?;
        let job = self.await_job(budget, queued.job_status).await?;
        match job.status.as_str() {
            "completed" => Ok(job.results.unwrap_or_default()),
            // Nothing says which items the job wrote before it stopped; the
            // writes are upserts and deletes, safe to send again.
            status => Err(Failure::Transient(
                format!(
                    "Zendesk's background job {} {status}: {}",
                    job.id,
                    job.message.as_deref().unwrap_or("(no message)")
                ),
                None,
            )),
        }
    }

    async fn await_job(
        &self,
        budget: &RequestBudget<'_>,
        mut job: JobStatus,
    ) -> Result<JobStatus, Failure> {
        let started = Instant::now();
        let mut wait = FIRST_WAIT;
        while !job.finished() {
            if started.elapsed() + wait > self.config.job_timeout {
                return Err(Failure::Transient(
                    format!(
                        "Zendesk's background job {} was still {} after {} s (job_timeout_secs); its records are sent again",
                        job.id,
                        job.status,
                        self.config.job_timeout.as_secs()
                    ),
                    None,
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LONGEST_WAIT);
            budget.spend().await;
            let path = format!("/job_statuses/{}", job.id);
            let answer =
                service::call(&self.client, &self.config, Method::GET, &path, None).await?;
            job = parse_answer::<JobAnswer>("Zendesk", "a job status request", &answer.body)?
                .job_status;
        }
        Ok(job)
    }
}

/// What one item of a job's `results` says: written (with the record's
/// Zendesk id) or refused (with Zendesk's words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Written { id: Option<String> },
    Failed(String),
}

pub fn item_result(result: &Value) -> ItemResult {
    let status = result.get("status").and_then(Value::as_str).unwrap_or("");
    let failed = status.eq_ignore_ascii_case("failed")
        || result.get("success").and_then(Value::as_bool) == Some(false)
        || result.get("error").is_some();
    if failed {
        let reason = service::describe(result);
        return ItemResult::Failed(if reason.is_empty() {
            format!("Zendesk's job says the item failed: {result}")
        } else {
            reason
        });
    }
    ItemResult::Written {
        id: result_id(result),
    }
}

/// A job result's `id` (a number, or a string) as text.
pub fn result_id(result: &Value) -> Option<String> {
    match result.get("id")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// A job's results placed on the items sent: by `index` when each result
/// has one, else by position when there is one per item (Zendesk keeps the
/// order of `create_or_update_many`).
pub fn placed(results: &[Value], sent: usize) -> Result<Vec<ItemResult>, Failure> {
    let indexed = results.iter().all(|r| r.get("index").is_some());
    if !indexed && results.len() == sent {
        return Ok(results.iter().map(item_result).collect());
    }
    let mut placed: Vec<Option<ItemResult>> = vec![None; sent];
    for result in results {
        match result.get("index").and_then(Value::as_u64) {
            Some(i) if (i as usize) < sent => placed[i as usize] = Some(item_result(result)),
            _ => {
                return Err(Failure::Unexpected(format!(
                    "Zendesk's job gave {} results for {sent} items, and one Ebb cannot place: {result}",
                    results.len()
                )));
            }
        }
    }
    placed
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| {
                Failure::Unexpected(format!(
                    "Zendesk's job gave no result for item {i} of {sent}"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_results_are_read_in_order_or_by_index() {
        let results = vec![
            json!({"id": 1900233268488u64, "status": "Created", "email": "a@example.com"}),
            json!({"id": 902860577023u64, "status": "Updated", "email": "b@example.com"}),
            json!({"id": 2, "error": "UserUpdateError", "details": "Email: c@example.com_ is not properly formatted", "status": "Failed"}),
        ];
        assert_eq!(
            placed(&results, 3).unwrap(),
            vec![
                ItemResult::Written {
                    id: Some("1900233268488".into())
                },
                ItemResult::Written {
                    id: Some("902860577023".into())
                },
                ItemResult::Failed("Email: c@example.com_ is not properly formatted".into()),
            ]
        );
        let by_index = vec![
            json!({"index": 1, "id": 7, "status": "Updated"}),
            json!({"index": 0, "error": "NameMissing", "status": "Failed"}),
        ];
        assert_eq!(
            placed(&by_index, 2).unwrap(),
            vec![
                ItemResult::Failed("NameMissing".into()),
                ItemResult::Written {
                    id: Some("7".into())
                }
            ]
        );
        assert!(matches!(
            placed(&[json!({"id": 1, "status": "Created"})], 2),
            Err(Failure::Unexpected(_))
        ));
    }
}
