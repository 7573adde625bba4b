//! sObject Collections bodies (up to 200 records, `allOrNone: false`, so
//! each record succeeds or fails on its own) and their answers: one
//! `SaveResult` per record, in request order.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// `PATCH /composite/sobjects/{object}/{externalIdField}`: upsert by the
/// external id, which each record carries among its fields.
pub fn upsert(object: &str, records: &[&Map<String, Value>]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|fields| {
            let mut record = (*fields).clone();
            record.insert("attributes".into(), json!({ "type": object }));
            Value::Object(record)
        })
        .collect();
    json!({ "allOrNone": false, "records": records })
}

/// `PATCH /composite/sobjects`: update by Salesforce record id.
pub fn update(object: &str, records: &[(&str, &Map<String, Value>)]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, fields)| {
            let mut record = (*fields).clone();
            record.insert("attributes".into(), json!({ "type": object }));
            record.insert("id".into(), Value::String((*id).to_owned()));
            Value::Object(record)
        })
        .collect();
    json!({ "allOrNone": false, "records": records })
}

/// `DELETE /composite/sobjects?ids=…&allOrNone=false`.
pub fn delete_path(ids: &[&str]) -> String {
    format!("/composite/sobjects?ids={}&allOrNone=false", ids.join(","))
}

#[derive(Debug, Deserialize)]
pub struct SaveResult {
    #[serde(default)]
    pub id: Option<String>,
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<SaveError>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaveError {
    #[serde(default)]
    pub status_code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

impl SaveResult {
    pub fn has_error(&self, codes: &[&str]) -> bool {
        self.errors
            .iter()
            .any(|e| codes.contains(&e.status_code.as_str()))
    }

    /// `Salesforce REQUIRED_FIELD_MISSING: Required fields are missing: [LastName] (LastName)`.
    pub fn describe(&self) -> String {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|e| {
                let fields = if e.fields.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.fields.join(", "))
                };
                format!("{}: {}{fields}", e.status_code, e.message)
            })
            .collect();
        format!("Salesforce {}", errors.join("; "))
    }
}
