//! The `customerio` destination: people of one Customer.io workspace,
//! written through the Track API v2 batch endpoint.
//!
//! - `config.rs`: the Site ID and key, region, the identifier.
//! - `validate.rs`: Customer.io's documented limits, checked before
//!   sending, and each batch entry.
//! - `service.rs`: calling the Track API and classifying its answers.
//!
//! How a record is written:
//! - added or changed: an `identify` entry (`type: person`, its `id` or
//!   `email` as identifier, the other fields as attributes) in `POST
//!   /api/v2/batch`, entries packed into requests under Customer.io's 500
//!   KB. An identify creates or updates, so a lost answer is simply sent
//!   again. Customer.io answers 207 with the entries it refused
//!   (`batch_index`): those records go to the DLQ with its message, the
//!   others are delivered;
//! - removed from the model (mirror mode): a `delete` entry by the
//!   identifier it was delivered with.

pub mod config;
mod service;
mod validate;

use std::collections::HashMap;
use std::sync::Arc;

pub use config::{CustomerIoConfig, IdentifyBy, Region};
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::vendor::{
    PrepareRules, RequestBudget, VendorDestination, conclude, first_per_name, prepare,
};
pub use service::Failure;

/// A batch request is at most 500 KB.
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;

pub struct CustomerIoDestination {
    client: reqwest::Client,
    config: CustomerIoConfig,
    limiter: Arc<Limiter>,
}

type Answers = Vec<Option<RecordAnswer>>;

/// An entry of a batch request: its record's position, its size, and what
/// its record is answered when Customer.io takes it.
struct Entry {
    index: usize,
    entry: Value,
    bytes: usize,
    applied: RecordAnswer,
}

#[derive(Debug, Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    errors: Vec<Value>,
}

impl CustomerIoDestination {
    pub fn new(client: reqwest::Client, config: &CustomerIoConfig, limiter: Arc<Limiter>) -> Self {
        Self {
            client,
            config: config.clone(),
            limiter,
        }
    }

    async fn try_send(
        &self,
        ctx: &BatchContext,
        records: &[OutboundRecord],
    ) -> Result<Vec<RecordAnswer>, Failure> {
        let budget = &RequestBudget::new(&self.limiter);
        let mut answers: Answers = vec![None; records.len()];
        let written = self.write(budget, ctx, records, &mut answers).await;
        conclude(answers, written)
    }

    async fn write(
        &self,
        budget: &RequestBudget<'_>,
        ctx: &BatchContext,
        records: &[OutboundRecord],
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let rules = PrepareRules {
            target: "Customer.io",
            unknown_id: "no Customer.io identifier is known for this record, so the person cannot be deleted \
                         (it was never delivered, or was delivered before Ebb kept identifiers); delete them in Customer.io by hand",
        };
        let identify_by = self.config.identify_by;
        let prepared = prepare(
            ctx,
            records,
            answers,
            &rules,
            |_| Vec::new(),
            |_, fields| validate::person(identify_by, fields),
        )?;
        let mut entries: Vec<Entry> = Vec::new();
        for (index, identifier) in prepared.removals {
            let entry = validate::deletion(identify_by, identifier);
            entries.push(Entry {
                index,
                bytes: entry.to_string().len(),
                entry,
                applied: RecordAnswer::Applied {
                    destination_id: None,
                    looked_up: false,
                },
            });
        }
        let people = prepared
            .updates
            .into_iter()
            .chain(prepared.writes)
            .map(|(index, record, person)| (index, record.key.as_str(), person))
            .collect();
        let people = first_per_name(
            people,
            identify_by.field(),
            |p| &p.identifier,
            "Customer.io would write both to one person",
            answers,
        );
        for (index, _, person) in people {
            entries.push(Entry {
                index,
                entry: person.entry,
                bytes: person.bytes,
                applied: RecordAnswer::Applied {
                    destination_id: Some(person.identifier),
                    looked_up: false,
                },
            });
        }
        for request in pack(entries) {
            self.batch(budget, request, answers).await?;
        }
        Ok(())
    }

    /// One batch request; each entry Customer.io lists in `errors` is
    /// refused with its message, the others are delivered.
    async fn batch(
        &self,
        budget: &RequestBudget<'_>,
        entries: Vec<Entry>,
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        budget.spend().await;
        let batch: Vec<&Value> = entries.iter().map(|e| &e.entry).collect();
        let body = json!({ "batch": batch });
        let (status, text) = service::call(
            &self.client,
            &self.config,
            Method::POST,
            "/api/v2/batch",
            Some(&body),
        )
        .await?;
        let answer: BatchAnswer = if text.trim().is_empty() {
            BatchAnswer { errors: Vec::new() }
        } else {
            parse_answer("Customer.io", "a batch request", &text)?
        };
        let mut refused: HashMap<usize, Vec<String>> = HashMap::new();
        for error in &answer.errors {
            match error.get("batch_index").and_then(Value::as_u64) {
                Some(i) if (i as usize) < entries.len() => {
                    refused
                        .entry(i as usize)
                        .or_default()
                        .push(service::entry_error(error));
                }
                _ => {
                    return Err(Failure::Unexpected(format!(
                        "Customer.io's batch answer (HTTP {status}) lists an error Ebb cannot place on an entry: {error}"
                    )));
                }
            }
        }
        for (position, entry) in entries.into_iter().enumerate() {
            answers[entry.index] = Some(match refused.remove(&position) {
                Some(reasons) => {
                    RecordAnswer::Rejected(format!("Customer.io: {}", reasons.join("; ")))
                }
                None => entry.applied,
            });
        }
        Ok(())
    }
}

/// Packs entries, in order, into requests under [`MAX_REQUEST_BYTES`].
fn pack(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    // `{"batch":[` … `]}`, and a comma between entries.
    const ENVELOPE: usize = 12;
    let mut requests: Vec<Vec<Entry>> = Vec::new();
    let mut size = ENVELOPE;
    for entry in entries {
        let grows = entry.bytes + 1;
        match requests.last_mut() {
            Some(current) if size + grows <= MAX_REQUEST_BYTES => {
                size += grows;
                current.push(entry);
            }
            _ => {
                size = ENVELOPE + grows;
                requests.push(vec![entry]);
            }
        }
    }
    requests
}

#[derive(Debug, Deserialize)]
struct RegionAnswer {
    data_center: String,
}

/// `ebb check --connect`: `GET /api/v1/accounts/region` with the
/// credentials; a workspace in the other region is a problem of the config.
pub async fn region_problems(
    client: &reqwest::Client,
    config: &CustomerIoConfig,
) -> Result<Vec<String>, Failure> {
    let (_, text) =
        service::call(client, config, Method::GET, "/api/v1/accounts/region", None).await?;
    let answer: RegionAnswer = parse_answer("Customer.io", "the region request", &text)?;
    let found = answer.data_center.to_lowercase();
    if found == config.region.as_str() {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "the workspace's data is in the {} region, and the destination says region = \"{}\"; set region = \"{found}\"",
        found.to_uppercase(),
        config.region.as_str()
    )])
}

impl VendorDestination for CustomerIoDestination {
    fn send_records<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Result<Vec<RecordAnswer>, Failure>> {
        Box::pin(self.try_send(ctx, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: usize, bytes: usize) -> Entry {
        Entry {
            index,
            entry: Value::Null,
            bytes,
            applied: RecordAnswer::Applied {
                destination_id: None,
                looked_up: false,
            },
        }
    }

    #[test]
    fn requests_are_cut_under_500_kb_in_order() {
        let requests = pack((0..40).map(|i| entry(i, 30_000)).collect());
        let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
        // 17 entries of 30,000 bytes (and their commas) fit in 512,000.
        assert_eq!(sizes, vec![17, 17, 6]);
        assert_eq!(requests[1][0].index, 17, "order kept");
        for request in &requests {
            let total: usize = 12 + request.iter().map(|e| e.bytes + 1).sum::<usize>();
            assert!(total <= MAX_REQUEST_BYTES, "{total}");
        }
        assert!(pack(Vec::new()).is_empty());
    }
}
