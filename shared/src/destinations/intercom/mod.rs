//! The `intercom` destination: contacts of one Intercom workspace, one
//! request per record (Intercom has no batch endpoint for contacts).
//!
//! - `config.rs`: the token, region, match field and role.
//! - `validate.rs`: Intercom's rules for a contact, checked before sending,
//!   and its body (standard fields, then `custom_attributes`).
//! - `service.rs`: calling Intercom and classifying its answers.
//!
//! How a record is written:
//! - never delivered: searched by its match field (`external_id` or
//!   `email`); updated when found, created (with `role`) otherwise. A
//!   create whose answer was lost is found by the next attempt's search
//!   and updated, so no contact is created twice; a 409 `conflict` on
//!   create is searched again the same way;
//! - delivered before (its contact id is in the ledger): `PUT
//!   /contacts/{id}`; a contact deleted in Intercom since (404) is searched
//!   and created again;
//! - removed from the model (mirror mode): `DELETE /contacts/{id}` (a 404
//!   is already done).

pub mod config;
mod service;
mod validate;

use std::sync::Arc;

pub use config::{IntercomConfig, MatchOn};
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::destinations::record::{BatchContext, OutboundRecord};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::outcome::RecordAnswer;
use crate::destinations::util::vendor::{
    OneByOne, PrepareRules, RequestBudget, VendorDestination, conclude, prepare,
};
pub use service::Failure;
use validate::Contact;

pub struct IntercomDestination {
    client: reqwest::Client,
    config: IntercomConfig,
    limiter: Arc<Limiter>,
}

type Answers = Vec<Option<RecordAnswer>>;

#[derive(Debug, Deserialize)]
struct ContactAnswer {
    id: String,
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    #[serde(default)]
    data: Vec<ContactAnswer>,
}

fn applied(id: String, looked_up: bool) -> RecordAnswer {
    RecordAnswer::Applied {
        destination_id: Some(id),
        looked_up,
    }
}

impl IntercomDestination {
    pub fn new(client: reqwest::Client, config: &IntercomConfig, limiter: Arc<Limiter>) -> Self {
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
            target: "Intercom",
            unknown_id: "no Intercom contact id is known for this record, so it cannot be deleted \
                         (it was delivered before Ebb kept contact ids); delete it in Intercom by hand",
        };
        let match_on = self.config.match_on;
        let prepared = prepare(
            ctx,
            records,
            answers,
            &rules,
            |_| Vec::new(),
            |_, fields| validate::contact(match_on, fields),
        )?;
        let mut calls = OneByOne::default();
        for (index, id) in prepared.removals {
            answers[index] = Some(if calls.held_back() {
                OneByOne::not_sent()
            } else {
                calls.answer(self.delete(budget, id).await)?
            });
        }
        for (index, record, contact) in &prepared.updates {
            answers[*index] = Some(if calls.held_back() {
                OneByOne::not_sent()
            } else {
                let id = record.destination_id.as_deref().unwrap_or_default();
                calls.answer(self.update_by_id(budget, id, contact).await)?
            });
        }
        for (index, _, contact) in &prepared.writes {
            answers[*index] = Some(if calls.held_back() {
                OneByOne::not_sent()
            } else {
                calls.answer(self.upsert(budget, contact).await)?
            });
        }
        Ok(())
    }

    async fn request(
        &self,
        budget: &RequestBudget<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::destinations::util::api::Answer, Failure> {
        budget.spend().await;
        service::send(&self.client, &self.config, method, path, body).await
    }

    async fn delete(&self, budget: &RequestBudget<'_>, id: &str) -> Result<RecordAnswer, Failure> {
        let answer = self
            .request(budget, Method::DELETE, &format!("/contacts/{id}"), None)
            .await?;
        let gone = answer.status == 404
            && service::error_code(&answer.body).as_deref() == Some("not_found");
        if answer.is_success() || gone {
            return Ok(RecordAnswer::Applied {
                destination_id: None,
                looked_up: false,
            });
        }
        Err(service::classify(
            answer.status,
            answer.retry_after,
            &answer.body,
        ))
    }

    /// `PUT /contacts/{id}`; a contact Intercom no longer has is searched
    /// and created again.
    async fn update_by_id(
        &self,
        budget: &RequestBudget<'_>,
        id: &str,
        contact: &Contact,
    ) -> Result<RecordAnswer, Failure> {
        let body = Value::Object(contact.body.clone());
        let answer = self
            .request(budget, Method::PUT, &format!("/contacts/{id}"), Some(&body))
            .await?;
        if answer.is_success() {
            let updated: ContactAnswer =
                parse_answer("Intercom", "a contact update", &answer.body)?;
            return Ok(applied(updated.id, false));
        }
        if answer.status == 404 && service::error_code(&answer.body).as_deref() == Some("not_found")
        {
            return self.upsert(budget, contact).await;
        }
        Err(service::classify(
            answer.status,
            answer.retry_after,
            &answer.body,
        ))
    }

    /// Searches the contact by its match field; updates it when found,
    /// creates it otherwise.
    async fn upsert(
        &self,
        budget: &RequestBudget<'_>,
        contact: &Contact,
    ) -> Result<RecordAnswer, Failure> {
        if let Some(id) = self.search(budget, contact).await? {
            return self.put_found(budget, &id, contact).await;
        }
        let mut body = contact.body.clone();
        body.insert("role".into(), Value::String(self.config.role.clone()));
        let answer = self
            .request(
                budget,
                Method::POST,
                "/contacts",
                Some(&Value::Object(body)),
            )
            .await?;
        if answer.is_success() {
            let created: ContactAnswer =
                parse_answer("Intercom", "a contact create", &answer.body)?;
            return Ok(applied(created.id, false));
        }
        if answer.status == 409 {
            // Created meanwhile, or by an attempt whose answer was lost and
            // that Intercom's search does not show yet: its conflict names
            // the contact ("… already exists with id=…").
            let existing = match conflicting_id(&answer.body) {
                Some(id) => Some(id),
                None => self.search(budget, contact).await?,
            };
            if let Some(id) = existing {
                return self.put_found(budget, &id, contact).await;
            }
        }
        Err(service::classify(
            answer.status,
            answer.retry_after,
            &answer.body,
        ))
    }

    async fn put_found(
        &self,
        budget: &RequestBudget<'_>,
        id: &str,
        contact: &Contact,
    ) -> Result<RecordAnswer, Failure> {
        let body = Value::Object(contact.body.clone());
        let text = self
            .call(budget, Method::PUT, &format!("/contacts/{id}"), Some(&body))
            .await?;
        let updated: ContactAnswer = parse_answer("Intercom", "a contact update", &text)?;
        Ok(applied(updated.id, true))
    }

    async fn call(
        &self,
        budget: &RequestBudget<'_>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<String, Failure> {
        budget.spend().await;
        service::call(&self.client, &self.config, method, path, body).await
    }

    async fn search(
        &self,
        budget: &RequestBudget<'_>,
        contact: &Contact,
    ) -> Result<Option<String>, Failure> {
        let body = json!({
            "query": { "field": self.config.match_on.field(), "operator": "=", "value": contact.match_value }
        });
        let text = self
            .call(budget, Method::POST, "/contacts/search", Some(&body))
            .await?;
        let found: SearchAnswer = parse_answer("Intercom", "a contact search", &text)?;
        Ok(found.data.into_iter().next().map(|c| c.id))
    }
}

/// The contact id a 409 `conflict` names: `A contact matching those details
/// already exists with id=5f7f0d217289f8d2f4262080`.
fn conflicting_id(body: &str) -> Option<String> {
    let message = service::error_message(409, body);
    let (_, rest) = message.rsplit_once("id=")?;
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

#[derive(Debug, Deserialize)]
struct DataAttribute {
    name: String,
    #[serde(default)]
    api_writable: bool,
    #[serde(default)]
    custom: bool,
}

#[derive(Debug, Deserialize)]
struct DataAttributes {
    #[serde(default)]
    data: Vec<DataAttribute>,
}

/// `ebb check --connect`: reads the contact data attributes and names each
/// mapped custom attribute Intercom does not have or will not let the API
/// write.
pub async fn mapping_problems(
    client: &reqwest::Client,
    config: &IntercomConfig,
    fields: &[(&str, &str)],
) -> Result<Vec<String>, Failure> {
    let text = service::call(
        client,
        config,
        Method::GET,
        "/data_attributes?model=contact",
        None,
    )
    .await?;
    let attributes: DataAttributes = parse_answer("Intercom", "the data attributes", &text)?;
    let mut problems = Vec::new();
    for (field, _) in fields {
        if validate::STANDARD_FIELDS.contains(field) {
            continue;
        }
        match attributes.data.iter().find(|a| a.custom && a.name == *field) {
            None => problems.push(format!(
                "Intercom has no custom data attribute `{field}` for contacts; create it (Settings → Data → People) or map a standard field"
            )),
            Some(a) if !a.api_writable => problems.push(format!(
                "Intercom's data attribute `{field}` is not writable through the API"
            )),
            Some(_) => {}
        }
    }
    Ok(problems)
}

impl VendorDestination for IntercomDestination {
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
    fn a_conflict_names_the_existing_contact() {
        let body = r#"{"type":"error.list","errors":[{"code":"conflict","message":"A contact matching those details already exists with id=5f7f0d217289f8d2f4262080"}]}"#;
        assert_eq!(
            conflicting_id(body).as_deref(),
            Some("5f7f0d217289f8d2f4262080")
        );
        assert_eq!(
            conflicting_id(r#"{"errors":[{"code":"conflict","message":"exists"}]}"#),
            None
        );
    }
}
