//! The bodies of HubSpot's CRM v3 batch endpoints, and what their answers
//! hold. Every create and upsert input carries an `objectWriteTraceId` (the
//! record's position in the request), which HubSpot echoes in the result or
//! error for that input: results do not come back in input order.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// `POST /crm/v3/objects/{type}/batch/upsert`: create or update by a
/// unique property (`idProperty`).
pub fn upsert(match_on: &str, inputs: &[(usize, &str, &Map<String, Value>)]) -> Value {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|(trace, match_value, properties)| {
            json!({
                "idProperty": match_on,
                "id": match_value,
                "properties": properties,
                "objectWriteTraceId": trace.to_string(),
            })
        })
        .collect();
    json!({ "inputs": inputs })
}

/// `POST /crm/v3/objects/{type}/batch/create`.
pub fn create(inputs: &[(usize, &Map<String, Value>)]) -> Value {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|(trace, properties)| {
            json!({ "properties": properties, "objectWriteTraceId": trace.to_string() })
        })
        .collect();
    json!({ "inputs": inputs })
}

/// `POST /crm/v3/objects/{type}/batch/update`, by HubSpot's record id.
pub fn update(inputs: &[(&str, &Map<String, Value>)]) -> Value {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|(id, properties)| json!({ "id": id, "properties": properties }))
        .collect();
    json!({ "inputs": inputs })
}

/// `POST /crm/v3/objects/{type}/batch/archive`.
pub fn archive(ids: &[&str]) -> Value {
    let inputs: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    json!({ "inputs": inputs })
}

/// `POST /crm/v3/objects/{type}/search`: records whose `property` is one of
/// `values` (at most 100 values per `IN` filter).
pub fn search(property: &str, values: &[&str]) -> Value {
    json!({
        "filterGroups": [{ "filters": [{
            "propertyName": property, "operator": "IN", "values": values,
        }]}],
        "properties": [property],
        "sorts": [{ "propertyName": "hs_object_id", "direction": "ASCENDING" }],
        "limit": 200,
    })
}

/// The answer of a batch endpoint (200, 201 or 207 multi-status) or a search.
#[derive(Debug, Deserialize)]
pub struct BatchAnswer {
    #[serde(default)]
    pub results: Vec<ObjectResult>,
    #[serde(default)]
    pub errors: Vec<BatchError>,
}

#[derive(Debug, Deserialize)]
pub struct ObjectResult {
    pub id: String,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(rename = "objectWriteTraceId", default)]
    pub trace: Option<String>,
    /// When HubSpot created the record (search and batch answers carry it).
    #[serde(rename = "createdAt", default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct BatchError {
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub context: Value,
    #[serde(rename = "objectWriteTraceId", default)]
    pub trace: Option<String>,
}

impl BatchError {
    /// The record ids an error is about (`context.ids`).
    pub fn ids(&self) -> Vec<&str> {
        self.context
            .get("ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        format!("HubSpot {}: {}", self.category, self.message)
    }
}
