//! The `salesforce` destination: one sObject (Contact, Lead, Account, a
//! custom `__c` object) written with sObject Collections, 200 records a
//! request, `allOrNone: false`.
//!
//! - `auth.rs`: OAuth 2.0 refresh-token flow; a 401 refreshes the token.
//! - `schema.rs`: the sObject's describe.
//! - `validate.rs`: pre-flight checks against it.
//! - `request_builder.rs`: the collection bodies and their save results.
//! - `service.rs`: calling Salesforce and classifying its answers.
//! - `bulk.rs` and `csv.rs`: Bulk API 2.0 jobs, for `api = "bulk"`.
//! - `read_back.rs`: records read back for `ebb verify`.
//!
//! How a record is written:
//! - delivered before (its Salesforce id is in the ledger): update by id,
//!   so a changed external id or match value updates the same record; an
//!   id Salesforce no longer has (deleted or merged there) is upserted again;
//! - otherwise: upsert by the external id field, idempotent;
//! - removed from the model (mirror mode): deleted by id.
//!
//! With `api = "bulk"` each of these is one Bulk API 2.0 job per batch
//! instead of collection requests.

mod auth;
mod bulk;
pub mod config;
mod csv;
mod read_back;
mod request_builder;
pub mod schema;
mod service;
mod validate;

use std::sync::Arc;

pub use config::{SalesforceApi, SalesforceConfig};
use futures::future::BoxFuture;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::destinations::destination::ReadBack;
use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::value_class::column_problems;
use crate::destinations::util::vendor::{
    PrepareRules, RequestBudget, SchemaCache, VendorDestination, conclude, prepare, written_whole,
};
use auth::TokenSource;
use bulk::{JobRecord, Operation};
use request_builder::SaveResult;
use schema::Schema;
pub use service::Failure;
use service::Payload;

/// Save-result codes that mean the record id no longer exists.
const GONE: &[&str] = &[
    "ENTITY_IS_DELETED",
    "INVALID_CROSS_REFERENCE_KEY",
    "NOT_FOUND",
];

pub struct SalesforceDestination {
    client: reqwest::Client,
    config: SalesforceConfig,
    tokens: TokenSource,
    limiter: Arc<Limiter>,
    schema: SchemaCache<Schema>,
}

type Answers = Vec<Option<RecordAnswer>>;

struct Pending {
    index: usize,
    fields: Map<String, Value>,
    id: Option<String>,
}

/// The whole records of updates trimmed to their changed fields (see
/// `util::vendor::written_whole`).
type Wholes = std::collections::HashMap<usize, Result<Map<String, Value>, String>>;

impl SalesforceDestination {
    pub fn new(client: reqwest::Client, config: &SalesforceConfig, limiter: Arc<Limiter>) -> Self {
        Self {
            tokens: TokenSource::new(client.clone(), config),
            client,
            config: config.clone(),
            limiter,
            schema: SchemaCache::default(),
        }
    }

    async fn raw(
        &self,
        budget: &RequestBudget<'_>,
        method: Method,
        path: &str,
        body: Payload<'_>,
    ) -> Result<String, Failure> {
        budget.spend().await;
        service::call(&self.client, &self.config, &self.tokens, method, path, body).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        budget: &RequestBudget<'_>,
        method: Method,
        path: &str,
        body: Payload<'_>,
    ) -> Result<T, Failure> {
        let text = self.raw(budget, method, path, body).await?;
        parse_answer("Salesforce", path, &text)
    }

    /// A collections call: one save result per record.
    async fn call(
        &self,
        budget: &RequestBudget<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Vec<SaveResult>, Failure> {
        let body = body.map_or(Payload::None, Payload::Json);
        self.json(budget, method, path, body).await
    }

    async fn try_send(
        &self,
        ctx: &BatchContext,
        records: &[OutboundRecord],
    ) -> Result<Vec<RecordAnswer>, Failure> {
        let budget = &RequestBudget::new(&self.limiter);
        let schema = self
            .schema
            .get(
                budget,
                schema::fetch(&self.client, &self.config, &self.tokens),
            )
            .await?;
        let mut answers: Answers = vec![None; records.len()];
        let rules = PrepareRules {
            target: "Salesforce",
            unknown_id: "no Salesforce id is known for this record, so it cannot be deleted \
                         (it was delivered before Ebb kept record ids); delete it in Salesforce by hand",
        };
        let mut prepared = prepare(
            ctx,
            records,
            &mut answers,
            &rules,
            |fields| {
                schema.check_fields(fields.keys().map(String::as_str), &self.config.external_id)
            },
            |record, fields| validate::record(&schema, fields, record.destination_id.is_none()),
        )?;
        let pending = |(index, record, fields): (usize, &OutboundRecord, _)| Pending {
            index,
            fields,
            id: record.destination_id.clone(),
        };
        let deletes = std::mem::take(&mut prepared.removals);
        let updates: Vec<Pending> = std::mem::take(&mut prepared.updates)
            .into_iter()
            .map(pending)
            .collect();
        let upserts: Vec<Pending> = std::mem::take(&mut prepared.writes)
            .into_iter()
            .map(pending)
            .collect();
        let wholes = &mut prepared.wholes;
        let written = if self.config.api == SalesforceApi::Bulk {
            self.send_bulk(budget, deletes, updates, upserts, wholes, &mut answers)
                .await
        } else {
            self.send_collections(budget, deletes, updates, upserts, wholes, &mut answers)
                .await
        };
        // A request that fails after others were answered leaves only the
        // records it had not answered to be sent again.
        conclude(answers, written)
    }

    async fn send_bulk(
        &self,
        budget: &RequestBudget<'_>,
        deletes: Vec<(usize, &str)>,
        updates: Vec<Pending>,
        mut upserts: Vec<Pending>,
        wholes: &mut Wholes,
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let with_id = |index: usize, id: &str, mut fields: Map<String, Value>| {
            fields.insert("Id".into(), Value::String(id.to_owned()));
            JobRecord { index, fields }
        };
        if !deletes.is_empty() {
            let records = deletes
                .iter()
                .map(|(index, id)| with_id(*index, id, Map::new()))
                .collect();
            for (index, answer) in self.run_job(budget, Operation::Delete, records).await? {
                answers[index] = Some(answer);
            }
        }
        if !updates.is_empty() {
            let mut by_index: std::collections::HashMap<usize, Pending> =
                updates.into_iter().map(|p| (p.index, p)).collect();
            let records = by_index
                .values()
                .filter_map(|p| Some(with_id(p.index, p.id.as_deref()?, p.fields.clone())))
                .collect();
            for (index, answer) in self.run_job(budget, Operation::Update, records).await? {
                let gone = matches!(&answer, RecordAnswer::Rejected(m) if GONE.iter().any(|c| m.contains(c)));
                match by_index.remove(&index) {
                    Some(mut pending) if gone => {
                        pending.id = None;
                        let updated = std::mem::take(&mut pending.fields);
                        if let Some(fields) = written_whole(index, updated, wholes, answers) {
                            pending.fields = fields;
                            upserts.push(pending);
                        }
                    }
                    _ => answers[index] = Some(answer),
                }
            }
        }
        if !upserts.is_empty() {
            let records = upserts
                .into_iter()
                .map(|p| JobRecord {
                    index: p.index,
                    fields: p.fields,
                })
                .collect();
            for (index, answer) in self.run_job(budget, Operation::Upsert, records).await? {
                answers[index] = Some(answer);
            }
        }
        Ok(())
    }

    async fn send_collections(
        &self,
        budget: &RequestBudget<'_>,
        deletes: Vec<(usize, &str)>,
        updates: Vec<Pending>,
        mut upserts: Vec<Pending>,
        wholes: &mut Wholes,
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        if !deletes.is_empty() {
            let ids: Vec<&str> = deletes.iter().map(|(_, id)| *id).collect();
            let results = self
                .call(
                    budget,
                    Method::DELETE,
                    &request_builder::delete_path(&ids),
                    None,
                )
                .await?;
            check_count(&results, deletes.len())?;
            for ((index, _), result) in deletes.iter().zip(results) {
                answers[*index] = Some(if result.success || result.has_error(GONE) {
                    RecordAnswer::Applied {
                        destination_id: None,
                        looked_up: false,
                    }
                } else {
                    RecordAnswer::Rejected(result.describe())
                });
            }
        }
        if !updates.is_empty() {
            for mut gone in self.update(budget, updates, answers).await? {
                let updated = std::mem::take(&mut gone.fields);
                if let Some(fields) = written_whole(gone.index, updated, wholes, answers) {
                    gone.fields = fields;
                    upserts.push(gone);
                }
            }
        }
        if !upserts.is_empty() {
            self.upsert(budget, upserts, answers).await?;
        }
        Ok(())
    }

    /// Updates by id; returns the records Salesforce no longer has.
    async fn update(
        &self,
        budget: &RequestBudget<'_>,
        updates: Vec<Pending>,
        answers: &mut Answers,
    ) -> Result<Vec<Pending>, Failure> {
        let records: Vec<(&str, &Map<String, Value>)> = updates
            .iter()
            .filter_map(|p| Some((p.id.as_deref()?, &p.fields)))
            .collect();
        let body = request_builder::update(&self.config.object, &records);
        let results = self
            .call(budget, Method::PATCH, "/composite/sobjects", Some(&body))
            .await?;
        check_count(&results, updates.len())?;
        let mut gone = Vec::new();
        for (mut pending, result) in updates.into_iter().zip(results) {
            if result.success {
                answers[pending.index] = Some(RecordAnswer::Applied {
                    destination_id: result.id.or(pending.id),
                    looked_up: false,
                });
            } else if result.has_error(GONE) {
                tracing::info!(object = %self.config.object, "a record Salesforce no longer has (deleted or merged there) is upserted again");
                pending.id = None;
                gone.push(pending);
            } else {
                answers[pending.index] = Some(RecordAnswer::Rejected(result.describe()));
            }
        }
        Ok(gone)
    }

    /// Upserts by the external id: idempotent.
    async fn upsert(
        &self,
        budget: &RequestBudget<'_>,
        upserts: Vec<Pending>,
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let records: Vec<&Map<String, Value>> = upserts.iter().map(|p| &p.fields).collect();
        let body = request_builder::upsert(&self.config.object, &records);
        let path = format!(
            "/composite/sobjects/{}/{}",
            self.config.object, self.config.external_id
        );
        let results = self.call(budget, Method::PATCH, &path, Some(&body)).await?;
        check_count(&results, upserts.len())?;
        for (pending, result) in upserts.iter().zip(results) {
            answers[pending.index] = Some(if result.success {
                RecordAnswer::Applied {
                    destination_id: result.id,
                    looked_up: false,
                }
            } else {
                RecordAnswer::Rejected(result.describe())
            });
        }
        Ok(())
    }
}

/// Save results come one per record, in order; anything else is not an
/// answer Ebb can map to records.
fn check_count(results: &[SaveResult], sent: usize) -> Result<(), Failure> {
    if results.len() == sent {
        Ok(())
    } else {
        Err(Failure::Unexpected(format!(
            "Salesforce answered {} save results for {sent} records",
            results.len()
        )))
    }
}

/// What `ebb check --connect` found for one sync's mapping.
pub struct MappingCheck {
    pub problems: Vec<String>,
}

/// Signs in (refresh-token flow), reads the sObject's describe and checks
/// the mapping's `fields` against it.
pub async fn check_mapping(
    client: &reqwest::Client,
    config: &SalesforceConfig,
    columns: &[(&str, &str)],
) -> Result<MappingCheck, Failure> {
    let fields: Vec<&str> = columns.iter().map(|(field, _)| *field).collect();
    let fields = fields.as_slice();
    let tokens = TokenSource::new(client.clone(), config);
    let schema = schema::fetch(client, config, &tokens).await?;
    let mut problems: Vec<String> = schema
        .check_fields(fields.iter().copied(), &config.external_id)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !fields
        .iter()
        .any(|f| f.eq_ignore_ascii_case(&config.external_id))
    {
        problems.push(format!(
            "the mapping does not fill `{}`, the external id records are upserted by",
            config.external_id
        ));
    }
    problems.extend(column_problems(columns, |field| {
        schema.get(field).map(|f| f.value_class())
    }));
    Ok(MappingCheck { problems })
}

impl VendorDestination for SalesforceDestination {
    fn send_records<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Result<Vec<RecordAnswer>, Failure>> {
        Box::pin(self.try_send(ctx, records))
    }

    /// An update by id sets the fields it is given (a collection record's
    /// keys; a bulk job's non-empty cells), no others.
    fn takes_partial_updates(&self) -> bool {
        true
    }

    fn read_back<'a>(
        &'a self,
        _ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> Option<BoxFuture<'a, ReadBack>> {
        Some(Box::pin(self.read_records(records)))
    }

    /// Salesforce answers typed JSON; numbers may come back as text where a
    /// field is text, and e-mail addresses in another case.
    fn same_value(&self, field: &str, delivered: &Value, found: &Value) -> bool {
        use crate::destinations::util::verify::{same_as_text, same_json};
        same_json(delivered, found) || same_as_text(field, delivered, found)
    }
}
