//! Comparing a delivered record with what the destination holds
//! (`ebb verify`): field by field, with values compared as JSON where the
//! destination keeps types (numbers by value, timestamps by instant).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::vendor::fields_of;
use crate::destinations::record::OutboundRecord;

/// A field whose value differs at the destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldDrift {
    pub field: String,
    /// What Ebb delivered (the model's current value, unchanged since).
    pub delivered: Value,
    /// What the destination holds (`null` when it has no such field).
    pub found: Value,
}

/// The fields of `delivered` whose value `found` does not hold, as
/// `same` compares them.
pub fn differences(
    delivered: &Map<String, Value>,
    found: &Map<String, Value>,
    same: impl Fn(&str, &Value, &Value) -> bool,
) -> Vec<FieldDrift> {
    delivered
        .iter()
        .filter_map(|(field, value)| {
            let held = found.get(field).unwrap_or(&Value::Null);
            (!same(field, value, held)).then(|| FieldDrift {
                field: field.clone(),
                delivered: value.clone(),
                found: held.clone(),
            })
        })
        .collect()
}

/// The fields `records` were delivered with, each name once, in the order
/// first seen: what a read asks the destination for.
pub fn delivered_field_names(records: &[OutboundRecord]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for fields in records.iter().filter_map(|r| fields_of(r).ok()) {
        for name in fields.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// The destination ids of `records`, for a read by id. A record delivered
/// without one (before Ebb kept them) cannot be read: [`by_destination_id`]
/// answers it missing.
pub fn destination_ids(records: &[OutboundRecord]) -> Vec<&str> {
    records
        .iter()
        .filter_map(|r| r.destination_id.as_deref())
        .collect()
}

/// What a read by id `found` (by destination id), in the order of
/// `records`: `None` for a record the destination no longer has.
pub fn by_destination_id(
    records: &[OutboundRecord],
    mut found: HashMap<String, Map<String, Value>>,
) -> Vec<Option<Map<String, Value>>> {
    records
        .iter()
        .map(|r| r.destination_id.as_ref().and_then(|id| found.remove(id)))
        .collect()
}

/// JSON equality where numbers compare by value (`1.50` = `1.5`) and
/// RFC 3339 timestamps by the instant they name.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::String(x), Value::String(y)) => x == y || same_instant(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn same_instant(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%#z"))
            .ok()
    };
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x == y)
}

/// A value as text, as APIs that keep every field as a string hold it
/// (HubSpot): strings as they are, `null` as empty, others as JSON.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether `found`, as an API that keeps every field as text holds it
/// (HubSpot's properties, Mailchimp's merge fields), is the value
/// delivered: numbers by value, booleans and e-mail addresses in any case.
pub fn same_as_text(field: &str, delivered: &Value, found: &Value) -> bool {
    let (delivered, found) = (as_text(delivered), as_text(found));
    if delivered == found {
        return true;
    }
    let lower = delivered.to_ascii_lowercase();
    if field.to_ascii_lowercase().contains("email") || lower == "true" || lower == "false" {
        return delivered.eq_ignore_ascii_case(&found);
    }
    matches!(
        (delivered.trim().parse::<f64>(), found.trim().parse::<f64>()),
        (Ok(a), Ok(b)) if a == b
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_compare_by_value_and_timestamps_by_instant() {
        assert!(same_json(&json!(1.5), &json!(1.50)));
        assert!(same_json(&json!(2), &json!(2.0)));
        assert!(!same_json(&json!(2), &json!("2")));
        assert!(same_json(
            &json!("2026-12-01T10:00:00Z"),
            &json!("2026-12-01T11:00:00+01:00")
        ));
        assert!(!same_json(
            &json!("2026-12-01T10:00:00Z"),
            &json!("2026-12-01T10:00:01Z")
        ));
        assert!(same_json(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
    }

    #[test]
    fn text_values_compare_as_the_api_holds_them() {
        assert!(same_as_text("plan", &json!("pro"), &json!("pro")));
        assert!(!same_as_text("plan", &json!("pro"), &json!("free")));
        assert!(same_as_text("ltv", &json!(12.5), &json!("12.50")));
        assert!(same_as_text(
            "email",
            &json!("Ada@Example.com"),
            &json!("ada@example.com")
        ));
        assert!(!same_as_text("firstname", &json!("Ada"), &json!("ada")));
        assert!(same_as_text("vip", &json!(true), &json!("true")));
        assert!(same_as_text("plan", &json!(null), &json!("")));
        assert!(!same_as_text("plan", &json!("pro"), &json!(null)));
    }

    #[test]
    fn differences_name_each_field_with_both_values() {
        let delivered = json!({"email": "a@x.io", "plan": "pro", "ltv": 1.5});
        let found = json!({"email": "a@x.io", "plan": "free", "ltv": 1.50});
        let drift = differences(
            delivered.as_object().unwrap(),
            found.as_object().unwrap(),
            |_, a, b| same_json(a, b),
        );
        assert_eq!(
            drift,
            vec![FieldDrift {
                field: "plan".into(),
                delivered: json!("pro"),
                found: json!("free"),
            }]
        );
        let drift = differences(delivered.as_object().unwrap(), &Map::new(), |_, a, b| {
            same_json(a, b)
        });
        assert_eq!(drift.len(), 3, "a field the destination lacks is drift");
    }
}
