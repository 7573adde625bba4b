//! The `zendesk` destination: users or organizations of one Zendesk
//! Support account.
//!
//! - `config.rs`: subdomain, credentials, object and match field.
//! - `validate.rs`: a record as a Zendesk user or organization, checked
//!   before sending.
//! - `service.rs`: calling the API and classifying its answers.
//! - `jobs.rs`: the background jobs of the bulk endpoints, polled until
//!   done, and their per-item results.
//! - `connection.rs`: what `ebb check --connect` reads.
//!
//! How a record is written:
//! - users, added or changed: `POST /api/v2/users/create_or_update_many`
//!   (100 a request), which creates the user or updates the one with the
//!   record's `external_id` (or `email`); the answer is a background job,
//!   polled until done; its results (one per user, in order) give each
//!   user's id, or Zendesk's reason for refusing it (to the DLQ). An
//!   upsert: a lost answer is simply sent again;
//! - organizations, added or changed: `POST
//!   /api/v2/organizations/create_or_update`, one request per record
//!   (Zendesk's bulk create is not an upsert: a lost answer would create
//!   the organization twice);
//! - removed from the model (mirror mode): `DELETE
//!   /api/v2/{users,organizations}/destroy_many?ids=…` by the ids Zendesk
//!   gave, 100 a request, and its job.

pub mod config;
mod connection;
mod jobs;
mod service;
mod validate;

use std::collections::HashMap;
use std::sync::Arc;

pub use config::{MatchBy, ZendeskConfig, ZendeskObject};
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::vendor::{
    OneByOne, PrepareRules, RequestBudget, VendorDestination, conclude, first_per_name, prepare,
};
use jobs::{ItemResult, item_result, placed, result_id};
pub use service::Failure;
use validate::ZendeskRecord;

pub struct ZendeskDestination {
    client: reqwest::Client,
    config: ZendeskConfig,
    limiter: Arc<Limiter>,
}

type Answers = Vec<Option<RecordAnswer>>;

#[derive(Debug, Deserialize)]
struct Written {
    id: u64,
}

#[derive(Debug, Deserialize)]
struct OrganizationAnswer {
    organization: Written,
}

fn applied(destination_id: Option<String>) -> RecordAnswer {
    RecordAnswer::Applied {
        destination_id,
        looked_up: false,
    }
}

impl ZendeskDestination {
    pub fn new(client: reqwest::Client, config: &ZendeskConfig, limiter: Arc<Limiter>) -> Self {
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
        let object = self.config.object;
        let match_by = self.config.match_by;
        let unknown_id = format!(
            "no Zendesk id is known for this record, so the {} cannot be deleted \
             (it was never delivered, or was delivered before Ebb kept ids); delete it in Zendesk by hand",
            object.singular()
        );
        let rules = PrepareRules {
            target: "Zendesk",
            unknown_id: &unknown_id,
        };
        let prepared = prepare(
            ctx,
            records,
            answers,
            &rules,
            |_| Vec::new(),
            |_, fields| validate::record(object, match_by, fields),
        )?;
        for chunk in prepared.removals.chunks(config::MAX_BATCH) {
            self.destroy_many(budget, chunk, answers).await?;
        }
        let upserts = prepared
            .updates
            .into_iter()
            .chain(prepared.writes)
            .map(|(index, record, item)| (index, record.key.as_str(), item))
            .collect();
        let merged = format!("Zendesk would write both to one {}", object.singular());
        let upserts = first_per_name(
            upserts,
            match_by.field(),
            |item: &ZendeskRecord| item.identifier.as_str(),
            &merged,
            answers,
        );
        match object {
            ZendeskObject::Users => {
                for chunk in upserts.chunks(config::MAX_BATCH) {
                    self.create_or_update_users(budget, chunk, answers).await?;
                }
            }
            ZendeskObject::Organizations => {
                let mut calls = OneByOne::default();
                for (index, _, organization) in &upserts {
                    answers[*index] = Some(if calls.held_back() {
                        OneByOne::not_sent()
                    } else {
                        calls.answer(
                            self.create_or_update_organization(budget, organization)
                                .await,
                        )?
                    });
                }
            }
        }
        Ok(())
    }

    /// One `create_or_update_many` and its job: each user answered by its
    /// result.
    async fn create_or_update_users(
        &self,
        budget: &RequestBudget<'_>,
        users: &[(usize, &str, ZendeskRecord)],
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let bodies: Vec<&serde_json::Map<String, Value>> =
            users.iter().map(|(_, _, user)| &user.body).collect();
        let body = json!({ "users": bodies });
        let results = self
            .run_job(
                budget,
                Method::POST,
                "/users/create_or_update_many",
                Some(&body),
            )
            .await?;
        for ((index, _, _), result) in users.iter().zip(placed(&results, users.len())?) {
            answers[*index] = Some(match result {
                ItemResult::Written { id } => applied(id),
                ItemResult::Failed(reason) => RecordAnswer::Rejected(format!("Zendesk: {reason}")),
            });
        }
        Ok(())
    }

    async fn create_or_update_organization(
        &self,
        budget: &RequestBudget<'_>,
        organization: &ZendeskRecord,
    ) -> Result<RecordAnswer, Failure> {
        budget.spend().await;
        let body = json!({ "organization": organization.body });
        let answer = service::call(
            &self.client,
            &self.config,
            Method::POST,
            "/organizations/create_or_update",
            Some(&body),
        )
        .await?;
        let written: OrganizationAnswer =
            parse_answer("Zendesk", "an organization create_or_update", &answer.body)?;
        Ok(applied(Some(written.organization.id.to_string())))
    }

    /// One `destroy_many` by Zendesk ids and its job. A record whose id
    /// Zendesk no longer knows (`RecordNotFound`) is gone already: done.
    async fn destroy_many(
        &self,
        budget: &RequestBudget<'_>,
        removals: &[(usize, &str)],
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let ids: Vec<&str> = removals.iter().map(|(_, id)| *id).collect();
        let path = format!(
            "/{}/destroy_many?ids={}",
            self.config.object.plural(),
            ids.join(",")
        );
        let results = self.run_job(budget, Method::DELETE, &path, None).await?;
        let mut by_id: HashMap<String, RecordAnswer> = HashMap::new();
        for result in &results {
            let Some(id) = result_id(result) else {
                continue;
            };
            let gone = result
                .get("error")
                .and_then(Value::as_str)
                .is_some_and(|e| e.contains("NotFound"));
            let answer = match item_result(result) {
                ItemResult::Failed(reason) if !gone => {
                    RecordAnswer::Rejected(format!("Zendesk: {reason}"))
                }
                _ => applied(None),
            };
            by_id.insert(id, answer);
        }
        for (index, id) in removals {
            // A completed job that does not mention an id went through all
            // of them.
            answers[*index] = Some(by_id.remove(*id).unwrap_or_else(|| applied(None)));
        }
        Ok(())
    }
}

impl VendorDestination for ZendeskDestination {
    fn send_records<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Result<Vec<RecordAnswer>, Failure>> {
        Box::pin(self.try_send(ctx, records))
    }
}
