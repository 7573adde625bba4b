//! An audience's merge fields (`GET /lists/{list_id}/merge-fields`): what
//! pre-flight validation checks values against and `ebb check --connect`
//! checks a mapping against.

use std::collections::HashMap;

use super::MailchimpConfig;
use reqwest::Method;
use serde::Deserialize;

use super::service::{self, Failure};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::value_class::ValueClass;
use crate::destinations::util::vendor::SchemaProblem;

/// Mapping fields that are not merge fields.
pub const EMAIL: &str = "email_address";
pub const TAGS: &str = "tags";

#[derive(Debug, Clone, Deserialize)]
pub struct MergeField {
    pub tag: String,
    /// `text`, `number`, `address`, `phone`, `date`, `url`, `imageurl`,
    /// `radio`, `dropdown`, `birthday`, `zip`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub options: MergeFieldOptions,
}

impl MergeField {
    pub fn value_class(&self) -> ValueClass {
        match self.kind.as_str() {
            "number" => ValueClass::Number,
            "date" => ValueClass::Date,
            _ => ValueClass::Text,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MergeFieldOptions {
    #[serde(default)]
    pub choices: Vec<String>,
}

#[derive(Deserialize)]
struct MergeFieldsPage {
    merge_fields: Vec<MergeField>,
}

#[derive(Debug)]
pub struct Schema {
    by_tag: HashMap<String, MergeField>,
}

impl Schema {
    pub fn new(fields: Vec<MergeField>) -> Schema {
        Schema {
            by_tag: fields.into_iter().map(|f| (f.tag.clone(), f)).collect(),
        }
    }

    pub fn get(&self, tag: &str) -> Option<&MergeField> {
        self.by_tag.get(tag)
    }

    /// Required merge fields: a new member needs a value for each.
    pub fn required(&self) -> impl Iterator<Item = &MergeField> {
        self.by_tag.values().filter(|f| f.required)
    }

    /// Problems with writing `fields` (mapping field names).
    pub fn check_fields<'a>(
        &self,
        fields: impl IntoIterator<Item = &'a str>,
    ) -> Vec<SchemaProblem> {
        let mut problems = Vec::new();
        for field in fields {
            if field == EMAIL || field == TAGS || self.by_tag.contains_key(field) {
                continue;
            }
            let hint = self
                .by_tag
                .keys()
                .find(|tag| tag.eq_ignore_ascii_case(field))
                .map(|tag| format!(" (merge tags are case-sensitive: did you mean `{tag}`?)"))
                .unwrap_or_default();
            problems.push(SchemaProblem::Unwritable(format!(
                "the audience has no merge field `{field}`{hint}; map `email_address`, `tags` or a merge tag ({})",
                self.tags().join(", ")
            )));
        }
        problems
    }

    fn tags(&self) -> Vec<&str> {
        let mut tags: Vec<&str> = self.by_tag.keys().map(String::as_str).collect();
        tags.sort_unstable();
        tags
    }
}

pub async fn fetch(client: &reqwest::Client, config: &MailchimpConfig) -> Result<Schema, Failure> {
    let path = format!("/lists/{}/merge-fields?count=1000", config.list_id);
    let body = service::call(client, config, Method::GET, &path, None).await?;
    let page: MergeFieldsPage = parse_answer(
        "Mailchimp",
        &format!("the merge fields of audience {}", config.list_id),
        &body,
    )?;
    Ok(Schema::new(page.merge_fields))
}
