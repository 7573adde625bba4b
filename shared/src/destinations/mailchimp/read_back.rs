//! Reading delivered members back for `ebb verify`: `GET` on each member's
//! subscriber hash (Mailchimp has no batch read by hash). A member that is
//! gone (404) or archived is missing; what it holds comes back in the
//! shape records are delivered in: `email_address`, each merge field, and
//! `tags` as comma-separated names.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::schema::{EMAIL, TAGS};
use super::{MailchimpDestination, subscriber_hash};
use crate::destinations::destination::ReadBack;
use crate::destinations::record::OutboundRecord;
use crate::destinations::util::api::{Failure, parse_answer};
use crate::destinations::util::vendor::{RequestBudget, fields_of};

#[derive(Deserialize)]
struct Member {
    email_address: String,
    status: String,
    #[serde(default)]
    merge_fields: Map<String, Value>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    name: String,
}

impl MailchimpDestination {
    pub(super) async fn read_members(&self, records: &[OutboundRecord]) -> ReadBack {
        let budget = RequestBudget::new(&self.limiter);
        let mut found = Vec::with_capacity(records.len());
        for record in records {
            let hash = match &record.destination_id {
                Some(hash) => hash.clone(),
                None => match delivered_email(record) {
                    Some(email) => subscriber_hash(&email),
                    None => {
                        found.push(None);
                        continue;
                    }
                },
            };
            let path = format!("/members/{hash}");
            let member = match self.call(&budget, Method::GET, &path, None).await {
                Ok(text) => parse_answer::<Member>("Mailchimp", "a member", &text)
                    .map_err(|f| describe(f, &self.config.base_url))?,
                Err(Failure::NotFound(_)) => {
                    found.push(None);
                    continue;
                }
                Err(failure) => return Err(describe(failure, &self.config.base_url)),
            };
            found.push((member.status != "archived").then(|| as_delivered(member)));
        }
        Ok(found)
    }
}

fn delivered_email(record: &OutboundRecord) -> Option<String> {
    fields_of(record)
        .ok()?
        .get(EMAIL)?
        .as_str()
        .map(str::to_owned)
}

fn as_delivered(member: Member) -> Map<String, Value> {
    let mut fields = member.merge_fields;
    fields.insert(EMAIL.into(), Value::String(member.email_address));
    let mut tags: Vec<String> = member.tags.into_iter().map(|t| t.name).collect();
    tags.sort();
    fields.insert(TAGS.into(), Value::String(tags.join(", ")));
    fields
}

fn describe(failure: Failure, base_url: &str) -> String {
    let problem = failure.connection_problem(base_url, "a member");
    format!(
        "Mailchimp member read failed ({}): {}",
        problem.kind, problem.message
    )
}

/// Tags compare as sets of names (delivered as text or an array); other
/// fields as Mailchimp keeps them, as text.
pub fn same_value(field: &str, delivered: &Value, found: &Value) -> bool {
    if field == TAGS {
        return tag_names(delivered) == tag_names(found);
    }
    crate::destinations::util::verify::same_as_text(field, delivered, found)
}

fn tag_names(value: &Value) -> Vec<String> {
    let mut names: Vec<String> = match value {
        Value::String(text) => text.split(',').map(|t| t.trim().to_owned()).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|t| t.trim().to_owned())
            .collect(),
        _ => Vec::new(),
    };
    names.retain(|t| !t.is_empty());
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tags_compare_as_sets_and_merge_fields_as_text() {
        assert!(same_value("tags", &json!("vip, beta"), &json!("beta, vip")));
        assert!(same_value("tags", &json!(null), &json!("")));
        assert!(!same_value("tags", &json!("vip"), &json!("beta, vip")));
        assert!(same_value("LTV", &json!(12.5), &json!("12.5")));
    }
}
