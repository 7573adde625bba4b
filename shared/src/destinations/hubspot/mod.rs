//! The `hubspot` destination: CRM v3 objects (contacts, companies, deals,
//! custom objects) written with the batch endpoints, 100 inputs a request.
//!
//! - `schema.rs`: the object type's property definitions.
//! - `validate.rs`: pre-flight checks of each record against them.
//! - `request_builder.rs`: the batch bodies and their answers.
//! - `service.rs`: calling HubSpot and classifying its answers.
//! - `read_back.rs`: objects read back for `ebb verify`.
//!
//! How a record is written:
//! - known HubSpot id (in the ledger): `batch/update` by id, so a record
//!   whose match key changed (a new email) updates the same HubSpot record;
//!   an id HubSpot no longer knows (deleted or merged there) is created again;
//! - no id, match property unique (a contact's `email`, or a property with
//!   unique values): `batch/upsert` by `idProperty`, idempotent;
//! - no id, match property not unique (e.g. a company's `domain`):
//!   `batch/create`, with a create intent committed first; a record whose
//!   earlier create had an unknown outcome is searched for by its match
//!   value and updated if found (see `state::intents`);
//! - removed from the model (mirror mode): `batch/archive` by id.

pub mod config;
mod read_back;
mod request_builder;
pub mod schema;
mod service;
mod validate;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Limits, RateLimit};
pub use config::HubSpotConfig;
use futures::future::BoxFuture;
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
use crate::state::intents::IntentLog;
use request_builder::BatchAnswer;
use schema::Schema;
pub use service::Failure;

/// HubSpot's search index trails writes by a few seconds: a lookup waits
/// until the earlier create it is looking for is at least this old.
const SEARCH_INDEX_LAG: Duration = Duration::from_secs(5);

/// How far HubSpot's clock may run behind the state database's when
/// telling the record an earlier create made (created after its intent)
/// from a record that was there before (created earlier).
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

pub struct HubSpotDestination {
    client: reqwest::Client,
    config: HubSpotConfig,
    intents: IntentLog,
    limiter: Arc<Limiter>,
    /// HubSpot's separate limit on search requests, per account.
    search_limiter: Limiter,
    schema: SchemaCache<Schema>,
}

/// HubSpot allows 5 search requests per second per account; Ebb keeps to 4.
pub fn search_limits() -> Limits {
    Limits {
        max_concurrency: 1000,
        rate_limit: Some(RateLimit {
            requests: 4,
            per: Duration::from_secs(1),
        }),
        adaptive_concurrency: false,
    }
}

/// A record on its way to HubSpot, validated.
struct Pending<'a> {
    index: usize,
    key: &'a str,
    properties: Map<String, Value>,
    match_value: String,
    id: Option<String>,
    looked_up: bool,
}

type Answers = Vec<Option<RecordAnswer>>;

impl HubSpotDestination {
    pub fn new(
        client: reqwest::Client,
        config: &HubSpotConfig,
        intents: IntentLog,
        limiter: Arc<Limiter>,
        search_limiter: Limiter,
    ) -> Self {
        Self {
            client,
            config: config.clone(),
            intents,
            limiter,
            search_limiter,
            schema: SchemaCache::default(),
        }
    }

    fn path(&self, endpoint: &str) -> String {
        format!("/crm/v3/objects/{}/{endpoint}", self.config.object_type)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        budget: &RequestBudget<'_>,
        endpoint: &str,
        body: &Value,
    ) -> Result<T, Failure> {
        budget.spend().await;
        let (_, text) =
            service::post(&self.client, &self.config, &self.path(endpoint), body).await?;
        parse_answer("HubSpot", endpoint, &text)
    }

    async fn try_send<'a>(
        &self,
        ctx: &BatchContext,
        records: &'a [OutboundRecord],
    ) -> Result<Vec<RecordAnswer>, Failure> {
        let budget = &RequestBudget::new(&self.limiter);
        let schema = self
            .schema
            .get(budget, schema::fetch(&self.client, &self.config))
            .await?;
        let match_on = self.config.match_on.as_str();
        let mut answers: Answers = vec![None; records.len()];
        let rules = PrepareRules {
            target: "HubSpot",
            unknown_id: "no HubSpot record id is known for this record, so it cannot be archived \
                         (it was delivered before Ebb kept HubSpot ids); archive it in HubSpot by hand",
        };
        let mut prepared = prepare(
            ctx,
            records,
            &mut answers,
            &rules,
            |fields| schema.check_fields(fields.keys().map(String::as_str)),
            |_, fields| validate::properties(&schema, fields),
        )?;
        let pending =
            |(index, record, properties): (usize, &'a OutboundRecord, Map<String, Value>)| {
                let match_value = properties
                    .get(match_on)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                Pending {
                    index,
                    key: &record.key,
                    properties,
                    match_value,
                    id: record.destination_id.clone(),
                    looked_up: false,
                }
            };
        let archives = std::mem::take(&mut prepared.removals);
        let updates: Vec<Pending<'a>> = std::mem::take(&mut prepared.updates)
            .into_iter()
            .map(pending)
            .collect();
        let mut creates: Vec<Pending<'a>> = std::mem::take(&mut prepared.writes)
            .into_iter()
            .map(pending)
            .collect();
        let mut wholes = prepared.wholes;
        // A step that fails after others were answered leaves only the
        // records it had not answered to be sent again.
        let written: Result<(), Failure> = async {
            if !archives.is_empty() {
                let ids: Vec<&str> = archives.iter().map(|(_, id)| *id).collect();
                let _: Value = self
                    .call(budget, "batch/archive", &request_builder::archive(&ids))
                    .await?;
                for (index, _) in archives {
                    answers[index] = Some(RecordAnswer::Applied {
                        destination_id: None,
                        looked_up: false,
                    });
                }
            }
            if !updates.is_empty() {
                for mut gone in self.update(budget, updates, &mut answers).await? {
                    let Some(properties) =
                        written_whole(gone.index, gone.properties, &mut wholes, &mut answers)
                    else {
                        continue;
                    };
                    gone.match_value = properties
                        .get(match_on)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .trim()
                        .to_owned();
                    gone.properties = properties;
                    creates.push(gone);
                }
            }
            if !creates.is_empty() {
                self.create(budget, ctx, &schema, creates, &mut answers)
                    .await?;
            }
            Ok(())
        }
        .await;
        conclude(answers, written)
    }

    /// Updates records by HubSpot id; returns those HubSpot no longer knows,
    /// to be created again.
    async fn update<'a>(
        &self,
        budget: &RequestBudget<'_>,
        updates: Vec<Pending<'a>>,
        answers: &mut Answers,
    ) -> Result<Vec<Pending<'a>>, Failure> {
        let inputs: Vec<(&str, &Map<String, Value>)> = updates
            .iter()
            .filter_map(|p| Some((p.id.as_deref()?, &p.properties)))
            .collect();
        let answer: BatchAnswer = self
            .call(budget, "batch/update", &request_builder::update(&inputs))
            .await?;
        let updated: HashSet<&str> = answer.results.iter().map(|r| r.id.as_str()).collect();
        let mut errors = HashMap::new();
        for error in &answer.errors {
            for id in error.ids() {
                errors.insert(id, error);
            }
        }
        let mut gone = Vec::new();
        for mut pending in updates {
            let id = pending.id.clone().unwrap_or_default();
            if updated.contains(id.as_str()) {
                answers[pending.index] = Some(RecordAnswer::Applied {
                    destination_id: Some(id),
                    looked_up: pending.looked_up,
                });
                continue;
            }
            match errors.get(id.as_str()) {
                Some(error) if error.category == "OBJECT_NOT_FOUND" => {
                    tracing::info!(record = pending.key, hubspot_id = %id, "HubSpot no longer has this record (deleted or merged there); creating it again");
                    pending.id = None;
                    gone.push(pending);
                }
                Some(error) => {
                    answers[pending.index] = Some(RecordAnswer::Rejected(error.describe()))
                }
                None => {
                    return Err(Failure::Unexpected(format!(
                        "HubSpot's batch/update answer says nothing of record id {id}"
                    )));
                }
            }
        }
        Ok(gone)
    }

    async fn create(
        &self,
        budget: &RequestBudget<'_>,
        ctx: &BatchContext,
        schema: &Schema,
        creates: Vec<Pending<'_>>,
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let match_on = self.config.match_on.as_str();
        let mut first_with_value: HashMap<String, &str> = HashMap::new();
        let mut unique = Vec::with_capacity(creates.len());
        for pending in creates {
            if pending.match_value.is_empty() {
                answers[pending.index] = Some(RecordAnswer::Rejected(format!(
                    "`{match_on}` is empty, and HubSpot records are matched on it"
                )));
                continue;
            }
            match first_with_value.get(&normalize(&pending.match_value)) {
                Some(other) => {
                    answers[pending.index] = Some(RecordAnswer::Rejected(format!(
                        "record `{other}` of the same batch has the same `{match_on}` ({}); HubSpot would make them one record",
                        pending.match_value
                    )));
                }
                None => {
                    first_with_value.insert(normalize(&pending.match_value), pending.key);
                    unique.push(pending);
                }
            }
        }
        if unique.is_empty() {
            return Ok(());
        }
        if schema.upserts_by(match_on) {
            self.upsert(budget, unique, answers).await
        } else {
            self.create_after_lookup(budget, ctx, unique, answers).await
        }
    }

    /// Idempotent: HubSpot creates or updates by the unique match value.
    async fn upsert(
        &self,
        budget: &RequestBudget<'_>,
        pending: Vec<Pending<'_>>,
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let inputs: Vec<(usize, &str, &Map<String, Value>)> = pending
            .iter()
            .map(|p| (p.index, p.match_value.as_str(), &p.properties))
            .collect();
        let body = request_builder::upsert(&self.config.match_on, &inputs);
        let answer: BatchAnswer = self.call(budget, "batch/upsert", &body).await?;
        self.settle_writes("batch/upsert", &pending, &answer, answers)
    }

    /// Creates records, looking up first those whose earlier create had an
    /// unknown outcome.
    async fn create_after_lookup(
        &self,
        budget: &RequestBudget<'_>,
        ctx: &BatchContext,
        pending: Vec<Pending<'_>>,
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let keys: Vec<&str> = pending.iter().map(|p| p.key).collect();
        let unresolved = self
            .intents
            .unresolved(&ctx.sync, &keys)
            .await
            .map_err(state_failure)?;
        let mut to_create = Vec::new();
        let mut found = Vec::new();
        if unresolved.is_empty() {
            to_create = pending;
        } else {
            let youngest = unresolved
                .values()
                .map(|intent| intent.age)
                .min()
                .unwrap_or(SEARCH_INDEX_LAG);
            if youngest < SEARCH_INDEX_LAG {
                tokio::time::sleep(SEARCH_INDEX_LAG - youngest).await;
            }
            // By match value: since when a record made by the earlier
            // create can exist.
            let since: HashMap<String, chrono::DateTime<chrono::Utc>> = pending
                .iter()
                .filter_map(|p| {
                    let intent = unresolved.get(p.key)?;
                    Some((normalize(&p.match_value), intent.at - CLOCK_SKEW))
                })
                .collect();
            let existing = self.search(budget, &since).await?;
            for mut p in pending {
                if unresolved.contains_key(p.key) {
                    p.looked_up = true;
                    if let Some(id) = existing.get(&normalize(&p.match_value)) {
                        tracing::info!(sync = %ctx.sync, record = p.key, hubspot_id = %id, "an earlier create with an unknown outcome did happen; updating that record");
                        p.id = Some(id.clone());
                        found.push(p);
                        continue;
                    }
                }
                to_create.push(p);
            }
        }
        if !found.is_empty() {
            to_create.extend(self.update(budget, found, answers).await?);
        }
        if to_create.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = to_create.iter().map(|p| p.key).collect();
        self.intents
            .record(&ctx.sync, ctx.run_id, &keys)
            .await
            .map_err(state_failure)?;
        let inputs: Vec<(usize, &Map<String, Value>)> =
            to_create.iter().map(|p| (p.index, &p.properties)).collect();
        let answer: BatchAnswer = self
            .call(budget, "batch/create", &request_builder::create(&inputs))
            .await?;
        self.settle_writes("batch/create", &to_create, &answer, answers)
    }

    /// By match value: the HubSpot id of the record an earlier create
    /// made, if it did. That is the first record with the value created
    /// since the create's intent (`since`, already widened by the clock
    /// skew), not any record with the value: a company that was there
    /// before and shares the domain is someone else's, and updating it
    /// would leave the created one as a duplicate.
    async fn search(
        &self,
        budget: &RequestBudget<'_>,
        since: &HashMap<String, chrono::DateTime<chrono::Utc>>,
    ) -> Result<HashMap<String, String>, Failure> {
        let values: Vec<&str> = since.keys().map(String::as_str).collect();
        let body = request_builder::search(&self.config.match_on, &values);
        self.search_limiter.take_rate_token().await;
        let answer: BatchAnswer = self.call(budget, "search", &body).await?;
        let mut found: HashMap<String, (chrono::DateTime<chrono::Utc>, String)> = HashMap::new();
        for result in answer.results {
            let Some(value) = result
                .properties
                .get(&self.config.match_on)
                .and_then(Value::as_str)
                .map(normalize)
            else {
                continue;
            };
            let (Some(created), Some(since)) = (result.created_at, since.get(&value)) else {
                continue;
            };
            if created < *since {
                continue;
            }
            let earlier = found.get(&value).is_some_and(|(seen, _)| *seen <= created);
            if !earlier {
                found.insert(value, (created, result.id));
            }
        }
        Ok(found
            .into_iter()
            .map(|(value, (_, id))| (value, id))
            .collect())
    }

    /// Maps a create or upsert answer back to its records by
    /// `objectWriteTraceId` (or match value).
    fn settle_writes(
        &self,
        endpoint: &str,
        pending: &[Pending<'_>],
        answer: &BatchAnswer,
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let mut results = HashMap::new();
        for result in &answer.results {
            if let Some(trace) = &result.trace {
                results.insert(trace.clone(), result.id.clone());
            } else if let Some(value) = result
                .properties
                .get(&self.config.match_on)
                .and_then(Value::as_str)
            {
                results.insert(normalize(value), result.id.clone());
            }
        }
        let errors: HashMap<&str, _> = answer
            .errors
            .iter()
            .filter_map(|e| Some((e.trace.as_deref()?, e)))
            .collect();
        for p in pending {
            let trace = p.index.to_string();
            let id = results
                .get(&trace)
                .or_else(|| results.get(&normalize(&p.match_value)));
            answers[p.index] = Some(match (id, errors.get(trace.as_str())) {
                (Some(id), _) => RecordAnswer::Applied {
                    destination_id: Some(id.clone()),
                    looked_up: p.looked_up,
                },
                (None, Some(error)) => RecordAnswer::Rejected(error.describe()),
                (None, None) => {
                    return Err(Failure::Unexpected(format!(
                        "HubSpot's {endpoint} answer says nothing of record `{}`",
                        p.key
                    )));
                }
            });
        }
        Ok(())
    }
}

/// What `ebb check --connect` found for one sync's mapping.
pub struct MappingCheck {
    pub problems: Vec<String>,
    /// Whether records are upserted by the match property (idempotent) or
    /// created after a lookup when an earlier create's outcome is unknown.
    pub upserts: bool,
}

/// Reads the object type's properties and checks the mapping's `fields`
/// (HubSpot property names) against them.
pub async fn check_mapping(
    client: &reqwest::Client,
    config: &HubSpotConfig,
    columns: &[(&str, &str)],
) -> Result<MappingCheck, Failure> {
    let fields: Vec<&str> = columns.iter().map(|(field, _)| *field).collect();
    let fields = fields.as_slice();
    let schema = schema::fetch(client, config).await?;
    let mut problems: Vec<String> = schema
        .check_fields(fields.iter().copied())
        .iter()
        .map(ToString::to_string)
        .collect();
    let match_on = config.match_on.as_str();
    if schema.get(match_on).is_none() {
        problems.push(format!(
            "match_on: HubSpot {} have no property `{match_on}`",
            config.object_type
        ));
    } else if !fields.contains(&match_on) {
        problems.push(format!(
            "the mapping does not fill `{match_on}`, the property records are matched on"
        ));
    }
    problems.extend(column_problems(columns, |field| {
        schema.get(field).map(|f| f.value_class())
    }));
    Ok(MappingCheck {
        problems,
        upserts: schema.upserts_by(match_on),
    })
}

/// HubSpot compares emails and `IN` search values in lower case.
fn normalize(value: &str) -> String {
    value.trim().to_lowercase()
}

fn state_failure(e: sqlx::Error) -> Failure {
    Failure::Transient(format!("state database: {e}"), None)
}

impl VendorDestination for HubSpotDestination {
    fn send_records<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Result<Vec<RecordAnswer>, Failure>> {
        Box::pin(self.try_send(ctx, records))
    }

    /// `batch/update` sets the properties it is given, no others.
    fn takes_partial_updates(&self) -> bool {
        true
    }

    fn read_back<'a>(
        &'a self,
        _ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> Option<BoxFuture<'a, ReadBack>> {
        Some(Box::pin(self.read_objects(records)))
    }

    /// HubSpot keeps every property as a string, and e-mail addresses in
    /// lower case.
    fn same_value(&self, field: &str, delivered: &Value, found: &Value) -> bool {
        crate::destinations::util::verify::same_as_text(field, delivered, found)
    }
}
