//! The `meta_custom_audience` destination: the members of one customer-list
//! Custom Audience, following the model.
//!
//! - `config.rs`: the audience, token and API version.
//! - `normalize.rs`: Meta's keys and its normalisation rules, then SHA-256.
//! - `service.rs`: calling the Graph API and classifying its errors.
//!
//! How a record is written (membership follows the model; see
//! `util/audience.rs`):
//! - added: `POST /{audience_id}/users` with `payload: {schema, data}`,
//!   a row of hashed identifiers per record, 10,000 a request;
//! - removed from the model (mirror mode), or its identifiers changed:
//!   `DELETE /{audience_id}/users` with the identifiers it was added with
//!   (kept, hashed, as its destination id), and, for a change, a `POST` of
//!   the new ones.
//!
//! Adding a member twice is harmless (Meta keeps one), so a lost answer is
//! sent again.

pub mod config;
pub mod normalize;
mod service;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use config::MetaCustomAudienceConfig;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::audience::{self, Change, Member};
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::vendor::{RequestBudget, VendorDestination, conclude};
use normalize::{KEYS, encode, key_of};
pub use service::Failure;

pub struct MetaCustomAudienceDestination {
    client: reqwest::Client,
    config: MetaCustomAudienceConfig,
    limiter: Arc<Limiter>,
}

type Answers = Vec<Option<RecordAnswer>>;

#[derive(Debug, Deserialize)]
struct UsersAnswer {
    #[serde(default)]
    num_invalid_entries: u64,
    #[serde(default)]
    invalid_entry_samples: Value,
}

/// A record's mapped fields as the member it is in the audience: each
/// non-empty key normalised and hashed.
pub fn member(fields: &Map<String, Value>) -> Result<Member, String> {
    let mut member = Member::default();
    for (field, value) in fields {
        let Some(key) = key_of(field) else {
            return Err(format!(
                "`{field}` is not one of Meta's customer-list keys; map identifiers only"
            ));
        };
        if let Some(encoded) = encode(key, value)? {
            member.0.insert(key.to_owned(), encoded);
        }
    }
    if member.0.is_empty() {
        let mapped: Vec<&str> = fields.keys().map(String::as_str).collect();
        return Err(format!(
            "no identifier to match on: {} {} empty",
            mapped.join(", "),
            if mapped.len() == 1 { "is" } else { "are" }
        ));
    }
    Ok(member)
}

impl MetaCustomAudienceDestination {
    pub fn new(
        client: reqwest::Client,
        config: &MetaCustomAudienceConfig,
        limiter: Arc<Limiter>,
    ) -> Self {
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
        let changes = audience::plan(ctx, records, answers, "the Meta Custom Audience", member)?;
        let mut refused = BTreeMap::new();
        for (add, positions) in audience::groups(&changes) {
            self.send_members(budget, &changes, &positions, add, &mut refused)
                .await?;
        }
        audience::answer(&changes, &refused, answers);
        Ok(())
    }

    /// One `POST` (adds) or `DELETE` (removals) of the members at
    /// `positions`; the entries Meta counts invalid are refused.
    async fn send_members(
        &self,
        budget: &RequestBudget<'_>,
        changes: &[Change],
        positions: &[usize],
        add: bool,
        refused: &mut BTreeMap<usize, String>,
    ) -> Result<(), Failure> {
        let schema: Vec<&str> = KEYS
            .iter()
            .copied()
            .filter(|key| {
                positions
                    .iter()
                    .any(|&i| changes[i].member.get(key).is_some())
            })
            .collect();
        let data: Vec<Vec<&str>> = positions
            .iter()
            .map(|&i| {
                schema
                    .iter()
                    .map(|key| changes[i].member.get(key).unwrap_or(""))
                    .collect()
            })
            .collect();
        let body = json!({ "payload": { "schema": schema, "data": data } });
        let method = if add { Method::POST } else { Method::DELETE };
        budget.spend().await;
        let path = format!("{}/users", self.config.audience_id);
        let text = service::call(&self.client, &self.config, method, &path, Some(&body)).await?;
        let answer: UsersAnswer = parse_answer("Meta", "a members request", &text)?;
        if answer.num_invalid_entries == 0 {
            return Ok(());
        }
        // Samples name invalid entries by a value of theirs, with the reason.
        let samples: Vec<(String, String)> = match &answer.invalid_entry_samples {
            Value::Object(map) => map
                .iter()
                .map(|(value, reason)| {
                    (
                        value.clone(),
                        reason.as_str().unwrap_or("invalid").to_owned(),
                    )
                })
                .collect(),
            Value::Array(values) => values
                .iter()
                .filter_map(Value::as_str)
                .map(|value| (value.to_owned(), "invalid".to_owned()))
                .collect(),
            _ => Vec::new(),
        };
        let mut placed = 0;
        for &i in positions {
            let sample = samples
                .iter()
                .find(|(value, _)| changes[i].member.0.values().any(|v| v == value));
            if let Some((_, reason)) = sample {
                refused.insert(i, format!("Meta counted this member invalid: {reason}"));
                placed += 1;
            }
        }
        if placed < answer.num_invalid_entries {
            tracing::warn!(
                audience = %self.config.audience_id,
                invalid = answer.num_invalid_entries,
                placed,
                "Meta counted entries invalid without naming them all; those it did not name count as delivered"
            );
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct AudienceAnswer {
    #[serde(default)]
    name: String,
    #[serde(default)]
    subtype: String,
}

/// `ebb check --connect`: reads the audience; one that is not a customer
/// list (`CUSTOM`) cannot take members.
pub async fn audience_problems(
    client: &reqwest::Client,
    config: &MetaCustomAudienceConfig,
) -> Result<(Vec<String>, String), Failure> {
    let path = format!(
        "{}?fields=name,subtype,operation_status",
        config.audience_id
    );
    let text = service::call(client, config, Method::GET, &path, None).await?;
    let audience: AudienceAnswer = parse_answer("Meta", "the audience request", &text)?;
    let mut problems = Vec::new();
    if audience.subtype != "CUSTOM" {
        problems.push(format!(
            "Custom Audience {} is a {} audience; Meta adds members only to customer-list audiences (subtype CUSTOM)",
            config.audience_id, audience.subtype
        ));
    }
    Ok((problems, audience.name))
}

impl VendorDestination for MetaCustomAudienceDestination {
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

    #[test]
    fn a_record_becomes_a_member_of_hashed_identifiers_only() {
        let fields =
            json!({"email": " User7@Example.com ", "fn": "Name7", "country": "US", "extern_id": 7});
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let member = member(&fields).unwrap();
        let id = member.to_id();
        for raw in ["user7@example.com", "User7", "name7", "Name7"] {
            assert!(!id.contains(raw), "{raw} in {id}");
        }
        assert_eq!(
            member.get("EMAIL"),
            Some(audience::sha256_hex("user7@example.com").as_str())
        );
        assert_eq!(
            member.get("COUNTRY"),
            Some(audience::sha256_hex("us").as_str())
        );
        assert_eq!(member.get("EXTERN_ID"), Some("7"));
        let empty = json!({"email": null, "phone": ""});
        let Value::Object(empty) = empty else {
            unreachable!()
        };
        assert_eq!(
            super::member(&empty).unwrap_err(),
            "no identifier to match on: email, phone are empty"
        );
    }
}
