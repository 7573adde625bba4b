//! HubSpot's property definitions for one object type
//! (`GET /crm/v3/properties/{objectType}`): what the pre-flight validation
//! checks values against, and what `ebb check` checks a mapping against.

use std::collections::HashMap;

use super::HubSpotConfig;
use serde::Deserialize;

use super::service::{self, Failure};
use crate::destinations::util::api::parse_answer;
use crate::destinations::util::value_class::ValueClass;
use crate::destinations::util::vendor::SchemaProblem;

#[derive(Debug, Clone, Deserialize)]
pub struct Property {
    pub name: String,
    /// `string`, `number`, `date`, `datetime`, `enumeration`, `bool`, …
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "fieldType", default)]
    pub field_type: String,
    #[serde(rename = "hasUniqueValue", default)]
    pub has_unique_value: bool,
    #[serde(rename = "modificationMetadata", default)]
    pub modification: Option<Modification>,
    #[serde(default)]
    pub calculated: bool,
    #[serde(default)]
    pub options: Vec<PropertyOption>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Modification {
    #[serde(rename = "readOnlyValue", default)]
    pub read_only_value: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PropertyOption {
    pub value: String,
}

impl Property {
    pub fn value_class(&self) -> ValueClass {
        match self.kind.as_str() {
            "number" => ValueClass::Number,
            "bool" => ValueClass::Bool,
            "date" => ValueClass::Date,
            "datetime" => ValueClass::DateTime,
            _ => ValueClass::Text,
        }
    }

    pub fn read_only(&self) -> bool {
        self.calculated
            || self
                .modification
                .as_ref()
                .is_some_and(|m| m.read_only_value)
    }
}

#[derive(Deserialize)]
struct PropertiesPage {
    results: Vec<Property>,
}

/// The properties of one object type, by name.
#[derive(Debug)]
pub struct Schema {
    object_type: String,
    by_name: HashMap<String, Property>,
}

impl Schema {
    pub fn new(object_type: &str, properties: Vec<Property>) -> Schema {
        Schema {
            object_type: object_type.to_owned(),
            by_name: properties
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Property> {
        self.by_name.get(name)
    }

    /// Whether HubSpot can upsert by `property` (`idProperty`): a property
    /// with unique values, or a contact's `email`.
    pub fn upserts_by(&self, property: &str) -> bool {
        (self.object_type == "contacts" && property == "email")
            || self.get(property).is_some_and(|p| p.has_unique_value)
    }

    /// Problems with writing `fields`: unknown or read-only properties.
    pub fn check_fields<'a>(
        &self,
        fields: impl IntoIterator<Item = &'a str>,
    ) -> Vec<SchemaProblem> {
        let mut problems = Vec::new();
        for field in fields {
            match self.get(field) {
                None => problems.push(SchemaProblem::Unwritable(format!(
                    "HubSpot {} have no property `{field}`{}",
                    self.object_type,
                    self.closest(field)
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default()
                ))),
                Some(p) if p.read_only() => problems.push(SchemaProblem::Unwritable(format!(
                    "HubSpot property `{field}` of {} is read-only",
                    self.object_type
                ))),
                Some(_) => {}
            }
        }
        problems
    }

    fn closest(&self, field: &str) -> Option<&str> {
        let wanted = field.to_ascii_lowercase().replace(['_', '-', ' '], "");
        self.by_name
            .keys()
            .find(|name| name.to_ascii_lowercase().replace(['_', '-', ' '], "") == wanted)
            .map(String::as_str)
    }
}

pub async fn fetch(client: &reqwest::Client, config: &HubSpotConfig) -> Result<Schema, Failure> {
    let path = format!("/crm/v3/properties/{}", config.object_type);
    let body = service::get(client, config, &path).await?;
    let page: PropertiesPage = parse_answer(
        "HubSpot",
        &format!("the property list of {}", config.object_type),
        &body,
    )?;
    Ok(Schema::new(&config.object_type, page.results))
}
