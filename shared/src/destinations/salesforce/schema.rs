//! An sObject's fields (`GET /sobjects/{object}/describe`): what pre-flight
//! validation checks values against, and what `ebb check --connect`
//! checks a mapping against. API names are case-insensitive in Salesforce;
//! Ebb sends each field under its describe name.

use std::collections::HashMap;

use reqwest::Method;
use serde::Deserialize;

use super::SalesforceConfig;
use super::auth::TokenSource;
use super::service::{self, Failure};
use crate::destinations::util::value_class::ValueClass;
use crate::destinations::util::vendor::SchemaProblem;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    pub name: String,
    /// `string`, `email`, `picklist`, `multipicklist`, `boolean`, `int`,
    /// `double`, `currency`, `percent`, `date`, `datetime`, `id`, …
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub length: usize,
    #[serde(default)]
    pub nillable: bool,
    #[serde(default)]
    pub createable: bool,
    #[serde(default)]
    pub updateable: bool,
    #[serde(default)]
    pub defaulted_on_create: bool,
    #[serde(default)]
    pub external_id: bool,
    #[serde(default)]
    pub id_lookup: bool,
    #[serde(default)]
    pub restricted_picklist: bool,
    #[serde(default)]
    pub picklist_values: Vec<PicklistValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PicklistValue {
    pub value: String,
    #[serde(default = "active")]
    pub active: bool,
}

fn active() -> bool {
    true
}

impl Field {
    pub fn value_class(&self) -> ValueClass {
        match self.kind.as_str() {
            "int" | "double" | "currency" | "percent" => ValueClass::Number,
            "boolean" => ValueClass::Bool,
            "date" => ValueClass::Date,
            "datetime" => ValueClass::DateTime,
            _ => ValueClass::Text,
        }
    }

    /// Needed to create a record: not nillable, and not filled by Salesforce.
    pub fn required_on_create(&self) -> bool {
        self.createable && !self.nillable && !self.defaulted_on_create && self.kind != "boolean"
    }
}

#[derive(Deserialize)]
struct Describe {
    fields: Vec<Field>,
}

#[derive(Debug)]
pub struct Schema {
    object: String,
    /// Lower-cased API name → field.
    by_name: HashMap<String, Field>,
}

impl Schema {
    pub fn new(object: &str, fields: Vec<Field>) -> Schema {
        Schema {
            object: object.to_owned(),
            by_name: fields
                .into_iter()
                .map(|f| (f.name.to_ascii_lowercase(), f))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Field> {
        self.by_name.get(&name.to_ascii_lowercase())
    }

    pub fn required_on_create(&self) -> impl Iterator<Item = &Field> {
        self.by_name.values().filter(|f| f.required_on_create())
    }

    /// Problems with writing `fields` upserted by `external_id`.
    pub fn check_fields<'a>(
        &self,
        fields: impl IntoIterator<Item = &'a str>,
        external_id: &str,
    ) -> Vec<SchemaProblem> {
        let object = &self.object;
        let mut problems = Vec::new();
        let fields: Vec<&str> = fields.into_iter().collect();
        for field in &fields {
            match self.get(field) {
                None => problems.push(SchemaProblem::Unwritable(format!(
                    "{object} has no field `{field}`"
                ))),
                Some(f) if !f.createable && !f.updateable => {
                    problems.push(SchemaProblem::Unwritable(format!(
                        "{object}.{} cannot be written (it is read-only for the integration user)",
                        f.name
                    )))
                }
                Some(_) => {}
            }
        }
        match self.get(external_id) {
            None => problems.push(SchemaProblem::Unwritable(format!(
                "external_id: {object} has no field `{external_id}`"
            ))),
            Some(f) if !(f.external_id || f.id_lookup) => {
                problems.push(SchemaProblem::Unwritable(format!(
                    "external_id: {object}.{} is not an External ID field; mark it External ID (and Unique) in Setup",
                    f.name
                )))
            }
            Some(_) => {}
        }
        for required in self.required_on_create() {
            if !fields
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&required.name))
            {
                problems.push(SchemaProblem::MissingRequired(format!(
                    "{object}.{} is required to create records, and the mapping does not fill it",
                    required.name
                )));
            }
        }
        problems
    }
}

pub async fn fetch(
    client: &reqwest::Client,
    config: &SalesforceConfig,
    tokens: &TokenSource,
) -> Result<Schema, Failure> {
    let path = format!("/sobjects/{}/describe", config.object);
    let body = service::call(
        client,
        config,
        tokens,
        Method::GET,
        &path,
        service::Payload::None,
    )
    .await?;
    let describe: Describe = serde_json::from_str(&body).map_err(|e| {
        Failure::Unexpected(format!(
            "Salesforce's describe of {} is not what its API documents: {e}",
            config.object
        ))
    })?;
    Ok(Schema::new(&config.object, describe.fields))
}
