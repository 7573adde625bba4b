//! The `braze` destination: user profiles of one Braze workspace, written
//! through `/users/track` and, in mirror mode, removed through
//! `/users/delete`.
//!
//! - `config.rs`: the key, instance, how profiles are matched.
//! - `validate.rs`: Braze's rules for an attribute object, checked before
//!   sending, and building it.
//! - `request_builder.rs`: the request bodies and answers.
//! - `service.rs`: calling Braze and classifying its answers.
//!
//! How a record is written:
//! - added or changed: one attribute object in a `/users/track` request (up
//!   to 75 a request), named by its `external_id`, `email` or user alias.
//!   `/users/track` creates the profile or updates the attributes it is
//!   given, so a write is idempotent and a lost answer is simply sent
//!   again. Braze answers 201 for the request and lists the objects it
//!   skipped (`errors`, with their index): those records go to the DLQ with
//!   Braze's message, the others are delivered;
//! - removed from the model (mirror mode): deleted with `/users/delete`, 50
//!   identifiers a request, by the identifier it was delivered with.

pub mod config;
mod request_builder;
mod service;
mod validate;

use std::collections::HashMap;
use std::sync::Arc;

pub use config::{BrazeConfig, MatchBy};
use futures::future::BoxFuture;
use serde_json::json;

use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::vendor::{
    PrepareRules, RequestBudget, VendorDestination, conclude, first_per_name, prepare,
};
use request_builder::{DeleteAnswer, TrackAnswer};
pub use service::Failure;
use validate::Profile;

pub struct BrazeDestination {
    client: reqwest::Client,
    config: BrazeConfig,
    limiter: Arc<Limiter>,
}

type Answers = Vec<Option<RecordAnswer>>;

impl BrazeDestination {
    pub fn new(client: reqwest::Client, config: &BrazeConfig, limiter: Arc<Limiter>) -> Self {
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
            target: "Braze",
            unknown_id: "no Braze identifier is known for this record, so its profile cannot be deleted \
                         (it was never delivered, or was delivered before Ebb kept identifiers); delete it in Braze by hand",
        };
        let prepared = prepare(
            ctx,
            records,
            answers,
            &rules,
            |_| Vec::new(),
            |_, fields| {
                validate::profile(
                    &self.config.match_by,
                    self.config.update_existing_only,
                    fields,
                )
            },
        )?;
        for chunk in prepared.removals.chunks(config::MAX_DELETES) {
            let identifiers: Vec<&str> = chunk.iter().map(|(_, id)| *id).collect();
            self.delete(budget, &identifiers).await?;
            for (index, _) in chunk {
                answers[*index] = Some(RecordAnswer::Applied {
                    destination_id: None,
                    looked_up: false,
                });
            }
        }
        let profiles: Vec<(usize, &str, Profile)> = prepared
            .updates
            .into_iter()
            .chain(prepared.writes)
            .map(|(index, record, profile)| (index, record.key.as_str(), profile))
            .collect();
        let unique = first_per_name(
            profiles,
            self.config.match_by.field(),
            |p| &p.identifier,
            "Braze would write both to one profile",
            answers,
        );
        for chunk in unique.chunks(config::MAX_BATCH) {
            self.track(budget, chunk, answers).await?;
        }
        Ok(())
    }

    async fn delete(
        &self,
        budget: &RequestBudget<'_>,
        identifiers: &[&str],
    ) -> Result<(), Failure> {
        budget.spend().await;
        let body = request_builder::delete(&self.config.match_by, identifiers);
        let text = service::post(&self.client, &self.config, "/users/delete", &body).await?;
        let answer: DeleteAnswer = parse_answer("Braze", "a /users/delete", &text)?;
        if answer.message != "success" {
            return Err(Failure::Unexpected(format!(
                "Braze answered a /users/delete with message `{}`, not `success`",
                answer.message
            )));
        }
        Ok(())
    }

    /// One `/users/track` request; each object Braze lists in `errors` is
    /// refused with its message, the others are delivered.
    async fn track(
        &self,
        budget: &RequestBudget<'_>,
        profiles: &[(usize, &str, Profile)],
        answers: &mut Answers,
    ) -> Result<(), Failure> {
        budget.spend().await;
        let objects: Vec<_> = profiles.iter().map(|(_, _, p)| &p.object).collect();
        let body = request_builder::track(&objects);
        let text = service::post(&self.client, &self.config, "/users/track", &body).await?;
        let answer: TrackAnswer = parse_answer("Braze", "a /users/track", &text)?;
        if answer.message != "success" {
            return Err(Failure::Unexpected(format!(
                "Braze answered a /users/track with message `{}`, not `success`",
                answer.message
            )));
        }
        let mut skipped: HashMap<usize, Vec<String>> = HashMap::new();
        for error in answer.errors {
            match error.index {
                Some(i) if error.input_array == "attributes" && i < profiles.len() => {
                    skipped.entry(i).or_default().push(error.kind);
                }
                _ => {
                    return Err(Failure::Unexpected(format!(
                        "Braze's /users/track answer lists an error Ebb cannot place on a record: {} (array `{}`, index {:?})",
                        error.kind, error.input_array, error.index
                    )));
                }
            }
        }
        for (position, (index, _, profile)) in profiles.iter().enumerate() {
            answers[*index] = Some(match skipped.remove(&position) {
                Some(reasons) => RecordAnswer::Rejected(format!("Braze: {}", reasons.join("; "))),
                None => RecordAnswer::Applied {
                    destination_id: Some(profile.identifier.clone()),
                    looked_up: false,
                },
            });
        }
        Ok(())
    }
}

/// `ebb check --connect`: an empty `/users/track`. Braze checks the key and
/// its permission before the body, so a 400 for the missing data means the
/// key may write profiles, and nothing was written.
pub async fn check_key(client: &reqwest::Client, config: &BrazeConfig) -> Result<(), Failure> {
    let body = json!({ "attributes": [] });
    match service::post(client, config, "/users/track", &body).await {
        Ok(_) | Err(Failure::Rejected(_)) => Ok(()),
        Err(other) => Err(other),
    }
}

impl VendorDestination for BrazeDestination {
    fn send_records<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Result<Vec<RecordAnswer>, Failure>> {
        Box::pin(self.try_send(ctx, records))
    }
}
