//! The `mailchimp` destination: members of one audience (Marketing API
//! 3.0), keyed by subscriber hash (the MD5 of the lower-cased email).
//!
//! - `schema.rs`: the audience's merge fields.
//! - `validate.rs`: pre-flight checks, building each member.
//! - `request_builder.rs`: the request bodies and answers.
//! - `service.rs`: calling Mailchimp and classifying its answers.
//! - `read_back.rs`: members read back for `ebb verify`.
//!
//! How a record is written:
//! - never delivered: batch subscribe (`POST /lists/{id}`, 500 members a
//!   request, `update_existing: false`, status `status_if_new`). A member
//!   that already exists (added outside Ebb, or by an earlier attempt whose
//!   answer was lost) comes back `ERROR_CONTACT_EXISTS` and is updated with
//!   `PUT`, which never changes its status: nobody is resubscribed;
//! - delivered before (its hash is in the ledger): `PUT` on that hash, so
//!   a new email address changes the same member;
//! - removed from the model (mirror mode): archived, or deleted for good
//!   (`mirror_removal`).
//!
//! Every write is idempotent (the subscriber hash is the key), so a lost
//! answer is simply sent again. Each member's `PUT` (and tags) is its own
//! request: one that fails transiently is retried on its own, and the
//! members Mailchimp acknowledged are settled as delivered. A member whose
//! `PUT` went through but whose tags did not is retried for its tags only,
//! at the hash the `PUT` gave it.

pub mod config;
mod read_back;
mod request_builder;
pub mod schema;
mod service;
mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use config::{MailchimpConfig, MailchimpRemoval};
use futures::future::BoxFuture;
use md5::{Digest, Md5};
use reqwest::Method;
use serde_json::Value;

use crate::destinations::destination::ReadBack;
use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::value_class::column_problems;
use crate::destinations::util::vendor::{
    OneByOne, PrepareRules, RequestBudget, SchemaCache, VendorDestination, conclude,
    first_per_name, prepare,
};
use request_builder::{BatchSubscribeAnswer, MemberAnswer};
use schema::Schema;
pub use service::Failure;
use validate::Member;

/// The subscriber hash Mailchimp addresses a member by.
pub fn subscriber_hash(email: &str) -> String {
    crate::hex::encode(&Md5::digest(email.trim().to_lowercase().as_bytes()))
}

pub struct MailchimpDestination {
    client: reqwest::Client,
    config: MailchimpConfig,
    limiter: Arc<Limiter>,
    schema: SchemaCache<Schema>,
    /// Members whose `PUT` was applied but whose tags were not, by run and
    /// record key: the hash the `PUT` gave them (a new address moves the
    /// member), so the retry adds the tags there instead of `PUT`ting again
    /// at the old hash.
    tags_pending: Mutex<HashMap<(i64, String), String>>,
}

type Answers = Vec<Option<RecordAnswer>>;

fn applied(id: String) -> RecordAnswer {
    RecordAnswer::Applied {
        destination_id: Some(id),
        looked_up: false,
    }
}

impl MailchimpDestination {
    pub fn new(client: reqwest::Client, config: &MailchimpConfig, limiter: Arc<Limiter>) -> Self {
        Self {
            client,
            config: config.clone(),
            limiter,
            schema: SchemaCache::default(),
            tags_pending: Mutex::new(HashMap::new()),
        }
    }

    async fn call(
        &self,
        budget: &RequestBudget<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<String, Failure> {
        budget.spend().await;
        let path = format!("/lists/{}{path}", self.config.list_id);
        service::call(&self.client, &self.config, method, &path, body).await
    }

    async fn try_send(
        &self,
        ctx: &BatchContext,
        records: &[OutboundRecord],
    ) -> Result<Vec<RecordAnswer>, Failure> {
        let budget = &RequestBudget::new(&self.limiter);
        let schema = self
            .schema
            .get(budget, schema::fetch(&self.client, &self.config))
            .await?;
        let mut answers: Answers = vec![None; records.len()];
        let written = self
            .write(budget, ctx, &schema, records, &mut answers)
            .await;
        conclude(answers, written)
    }

    async fn write(
        &self,
        budget: &RequestBudget<'_>,
        ctx: &BatchContext,
        schema: &Schema,
        records: &[OutboundRecord],
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        let target = format!("the Mailchimp audience {}", self.config.list_id);
        let rules = PrepareRules {
            target: &target,
            unknown_id: "no subscriber hash is known for this record, so it cannot be removed from the audience \
                         (it was delivered before Ebb kept member ids); archive it in Mailchimp by hand",
        };
        let prepared = prepare(
            ctx,
            records,
            answers,
            &rules,
            |fields| schema.check_fields(fields.keys().map(String::as_str)),
            |record, fields| validate::member(schema, fields, record.destination_id.is_none()),
        )?;
        let removals = prepared.removals;
        let updates = prepared.updates;
        let subscribes: Vec<(usize, &str, Member)> = prepared
            .writes
            .into_iter()
            .map(|(index, record, member)| (index, record.key.as_str(), member))
            .collect();
        let mut calls = OneByOne::default();
        // Checked once per send, on the first member-not-found answer.
        let mut audience_seen = false;
        for (index, hash) in removals {
            answers[index] = Some(if calls.held_back() {
                OneByOne::not_sent()
            } else {
                calls.answer(self.remove(budget, hash, &mut audience_seen).await)?
            });
        }
        for (index, record, member) in &updates {
            answers[*index] = Some(if calls.held_back() {
                OneByOne::not_sent()
            } else {
                let hash = record.destination_id.as_deref().unwrap_or_default();
                calls.answer(self.put(budget, ctx, &record.key, hash, member).await)?
            });
        }
        if !subscribes.is_empty() {
            self.subscribe(budget, ctx, subscribes, answers, &mut calls)
                .await?;
        }
        Ok(())
    }

    /// Archives or permanently deletes a member. Mailchimp answers 404 both
    /// for a member it no longer has (the effect wanted: done) and for an
    /// audience that is gone; a 404 counts as done only when it is
    /// Mailchimp's own problem document and the audience still exists. Any
    /// other 404 (a proxy's, a deleted audience) fails the removal, and the
    /// ledger keeps the member.
    async fn remove(
        &self,
        budget: &RequestBudget<'_>,
        hash: &str,
        audience_seen: &mut bool,
    ) -> Result<RecordAnswer, Failure> {
        let (method, path) = match self.config.mirror_removal {
            MailchimpRemoval::Archive => (Method::DELETE, format!("/members/{hash}")),
            MailchimpRemoval::Delete => (
                Method::POST,
                format!("/members/{hash}/actions/delete-permanent"),
            ),
        };
        budget.spend().await;
        let path = format!("/lists/{}{path}", self.config.list_id);
        let answer = service::send(&self.client, &self.config, method, &path, None).await?;
        let gone = RecordAnswer::Applied {
            destination_id: None,
            looked_up: false,
        };
        if answer.is_success() {
            return Ok(gone);
        }
        if answer.status == 404 && service::is_problem_document(404, &answer.body) {
            if !*audience_seen {
                self.audience_exists(budget).await?;
                *audience_seen = true;
            }
            return Ok(gone);
        }
        Err(service::classify(
            answer.status,
            answer.retry_after,
            &answer.body,
        ))
    }

    /// Fails with a configuration error when the audience is gone.
    async fn audience_exists(&self, budget: &RequestBudget<'_>) -> Result<(), Failure> {
        match self.call(budget, Method::GET, "", None).await {
            Ok(_) => Ok(()),
            Err(Failure::NotFound(message)) => Err(Failure::NotFound(format!(
                "the audience {} no longer exists ({message}); nothing was removed",
                self.config.list_id
            ))),
            Err(other) => Err(other),
        }
    }

    /// Adds or updates the member at `hash` (its current hash: the email
    /// may be new), then adds its tags. A member whose `PUT` was applied on
    /// an earlier attempt of this run gets its tags only.
    async fn put(
        &self,
        budget: &RequestBudget<'_>,
        ctx: &BatchContext,
        key: &str,
        hash: &str,
        member: &Member,
    ) -> Result<RecordAnswer, Failure> {
        let pending_at = self.tags_pending().remove(&(ctx.run_id, key.to_owned()));
        let id = match pending_at {
            Some(id) => id,
            None => {
                let body = request_builder::put_member(member, &self.config.status_if_new);
                let path = format!("/members/{hash}");
                let answer = self.call(budget, Method::PUT, &path, Some(&body)).await?;
                let answer: MemberAnswer = parse_answer("Mailchimp", "a member PUT", &answer)?;
                answer.id
            }
        };
        if !member.tags.is_empty() {
            let tags = request_builder::add_tags(&member.tags);
            let path = format!("/members/{id}/tags");
            if let Err(failure) = self.call(budget, Method::POST, &path, Some(&tags)).await {
                if !matches!(failure, Failure::Rejected(_)) {
                    self.tags_pending().insert((ctx.run_id, key.to_owned()), id);
                }
                return Err(failure);
            }
        }
        Ok(applied(id))
    }

    fn tags_pending(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), String>> {
        // A panic elsewhere cannot leave the map half-written.
        self.tags_pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn subscribe(
        &self,
        budget: &RequestBudget<'_>,
        ctx: &BatchContext,
        subscribes: Vec<(usize, &str, Member)>,
        answers: &mut Answers,
        calls: &mut OneByOne,
    ) -> Result<(), Failure> {
        // One member per address per request; Mailchimp would merge them.
        let unique = first_per_name(
            subscribes,
            "email_address",
            |m| &m.email,
            "Mailchimp would make them one member",
            answers,
        );
        if unique.is_empty() {
            return Ok(());
        }
        let members: Vec<&Member> = unique.iter().map(|(_, _, m)| m).collect();
        let body = request_builder::batch_subscribe(&members, &self.config.status_if_new);
        let text = self.call(budget, Method::POST, "", Some(&body)).await?;
        let answer: BatchSubscribeAnswer = parse_answer("Mailchimp", "a batch subscribe", &text)?;
        let mut added: HashMap<String, String> = HashMap::new();
        for member in answer.new_members.into_iter().chain(answer.updated_members) {
            added.insert(member.email_address.to_lowercase(), member.id);
        }
        let errors: HashMap<String, _> = answer
            .errors
            .iter()
            .map(|e| (e.email_address.to_lowercase(), e))
            .collect();
        for (index, key, member) in &unique {
            let address = member.email.to_lowercase();
            answers[*index] = Some(match (added.get(&address), errors.get(&address)) {
                (Some(id), _) => applied(id.clone()),
                (None, Some(error)) if error.error_code == "ERROR_CONTACT_EXISTS" => {
                    if calls.held_back() {
                        OneByOne::not_sent()
                    } else {
                        let hash = subscriber_hash(&member.email);
                        calls.answer(self.put(budget, ctx, key, &hash, member).await)?
                    }
                }
                (None, Some(error)) => {
                    RecordAnswer::Rejected(format!("Mailchimp: {}", error.error))
                }
                (None, None) => {
                    return Err(Failure::Unexpected(format!(
                        "Mailchimp's batch subscribe answer says nothing of {}",
                        member.email
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
}

/// Reads the audience's merge fields and checks the mapping's `fields`.
pub async fn check_mapping(
    client: &reqwest::Client,
    config: &MailchimpConfig,
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
    for required in schema.required() {
        if !fields.contains(&required.tag.as_str()) {
            problems.push(format!(
                "the audience requires the merge field `{}` for new members, and the mapping does not fill it",
                required.tag
            ));
        }
    }
    problems.extend(column_problems(columns, |field| {
        schema.get(field).map(|f| f.value_class())
    }));
    Ok(MappingCheck { problems })
}

impl VendorDestination for MailchimpDestination {
    fn send_records<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Result<Vec<RecordAnswer>, Failure>> {
        Box::pin(self.try_send(ctx, records))
    }

    fn read_back<'a>(
        &'a self,
        _ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> Option<BoxFuture<'a, ReadBack>> {
        Some(Box::pin(self.read_members(records)))
    }

    fn same_value(&self, field: &str, delivered: &Value, found: &Value) -> bool {
        read_back::same_value(field, delivered, found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_hash_is_md5_of_the_lowercased_address() {
        // Mailchimp's documented example.
        assert_eq!(
            subscriber_hash("Urist.McVankab@freddiesjokes.com"),
            "62eeb292278cc15f5817cb78f7790b08"
        );
    }
}
