//! Pre-flight validation of a record against the sObject's describe, so a
//! bad value costs no API call and names its field. Values are sent as the
//! JSON types Salesforce expects (numbers, booleans, strings, null).

use serde_json::{Map, Number, Value};

use super::schema::{Field, Schema};
use crate::destinations::util::email::is_email;

/// The record's fields under their describe names, typed, or why it cannot
/// be sent. `may_create`: the record may be created (required fields needed).
pub fn record(
    schema: &Schema,
    fields: &Map<String, Value>,
    may_create: bool,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::with_capacity(fields.len());
    for (name, value) in fields {
        // Unknown fields are configuration errors, caught per batch.
        let Some(field) = schema.get(name) else {
            continue;
        };
        let value = field_value(field, value).map_err(|e| format!("`{}`: {e}", field.name))?;
        out.insert(field.name.clone(), value);
    }
    if may_create {
        for required in schema.required_on_create() {
            if out
                .get(&required.name)
                .is_none_or(|v| v.is_null() || v == "")
            {
                return Err(format!(
                    "`{}` is required to create a record and is empty",
                    required.name
                ));
            }
        }
    }
    Ok(out)
}

fn field_value(field: &Field, value: &Value) -> Result<Value, String> {
    if value.is_null() || value == "" {
        if !field.nillable && field.kind != "boolean" && !field.defaulted_on_create {
            return Err("cannot be empty".into());
        }
        return Ok(Value::Null);
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err("Salesforce fields take a single value, not a JSON array or object".into());
        }
    };
    match field.kind.as_str() {
        "boolean" => match text.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("`{text}` is not true or false")),
        },
        "int" => text
            .trim()
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .map_err(|_| format!("`{text}` is not a whole number")),
        "double" | "currency" | "percent" => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("`{text}` is not a number")),
        "date" => chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(|_| Value::String(text.clone()))
            .map_err(|_| format!("`{text}` is not a date (YYYY-MM-DD)")),
        "datetime" => chrono::DateTime::parse_from_rfc3339(&text)
            .map(|_| Value::String(text.clone()))
            .map_err(|_| format!("`{text}` is not a datetime (ISO 8601 with a time zone)")),
        kind => {
            if field.length > 0 && text.chars().count() > field.length {
                return Err(format!(
                    "{} characters, over the field's length of {}",
                    text.chars().count(),
                    field.length
                ));
            }
            if kind == "email" && !is_email(&text) {
                return Err(format!("`{text}` is not a valid email address"));
            }
            if (kind == "picklist" || kind == "multipicklist") && field.restricted_picklist {
                let chosen: Vec<&str> = if kind == "multipicklist" {
                    text.split(';').collect()
                } else {
                    vec![text.as_str()]
                };
                for value in chosen {
                    if !field
                        .picklist_values
                        .iter()
                        .any(|p| p.active && p.value == value)
                    {
                        let allowed: Vec<&str> = field
                            .picklist_values
                            .iter()
                            .filter(|p| p.active)
                            .map(|p| p.value.as_str())
                            .collect();
                        return Err(format!(
                            "`{value}` is not a value of this restricted picklist; values are: {}",
                            allowed.join(", ")
                        ));
                    }
                }
            }
            Ok(Value::String(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::new(
            "Contact",
            serde_json::from_value(json!([
                {"name": "LastName", "type": "string", "length": 80, "nillable": false, "createable": true, "updateable": true},
                {"name": "Email", "type": "email", "length": 80, "nillable": true, "createable": true, "updateable": true},
                {"name": "Plan__c", "type": "picklist", "nillable": true, "createable": true, "updateable": true,
                 "restrictedPicklist": true, "picklistValues": [{"value": "free", "active": true}, {"value": "pro", "active": true}, {"value": "legacy", "active": false}]},
                {"name": "Seats__c", "type": "double", "nillable": true, "createable": true, "updateable": true},
                {"name": "Active__c", "type": "boolean", "nillable": false, "createable": true, "updateable": true, "defaultedOnCreate": true},
            ]))
            .unwrap(),
        )
    }

    fn check(fields: Value, may_create: bool) -> Result<Map<String, Value>, String> {
        record(&schema(), fields.as_object().unwrap(), may_create)
    }

    #[test]
    fn values_are_typed_under_their_describe_names() {
        let out = check(
            json!({"lastname": "Lovelace", "Seats__c": "12.5", "Active__c": "TRUE", "Email": null}),
            true,
        )
        .unwrap();
        assert_eq!(out["LastName"], "Lovelace");
        assert_eq!(out["Seats__c"], 12.5);
        assert_eq!(out["Active__c"], true);
        assert_eq!(out["Email"], Value::Null);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                json!({"LastName": "L", "Email": "nope"}),
                "`Email`: `nope` is not a valid email address",
            ),
            (
                json!({"LastName": "L", "Plan__c": "legacy"}),
                "`Plan__c`: `legacy` is not a value of this restricted picklist; values are: free, pro",
            ),
            (
                json!({"LastName": "L", "Seats__c": "many"}),
                "`Seats__c`: `many` is not a number",
            ),
            (
                json!({"LastName": "x".repeat(81)}),
                "`LastName`: 81 characters, over the field's length of 80",
            ),
            (json!({"LastName": ""}), "`LastName`: cannot be empty"),
            (
                json!({"Email": "a@b.co"}),
                "`LastName` is required to create a record",
            ),
        ];
        for (fields, expected) in cases {
            let err = check(fields.clone(), true).unwrap_err();
            assert!(err.starts_with(expected), "{fields}: {err}");
        }
        assert!(
            check(json!({"Email": "a@b.co"}), false).is_ok(),
            "updates need no required fields"
        );
    }

    #[test]
    fn an_unmapped_required_field_refuses_new_records_but_not_the_send() {
        let problems = schema().check_fields(["Email", "Nope__c"], "Email");
        let (blocking, per_record): (Vec<_>, Vec<_>) =
            problems.iter().partition(|p| p.blocks_delivery());
        let blocking: Vec<String> = blocking.iter().map(|p| p.to_string()).collect();
        assert!(
            blocking
                .iter()
                .any(|p| p == "Contact has no field `Nope__c`"),
            "{blocking:?}"
        );
        assert_eq!(per_record.len(), 1, "{problems:?}");
        assert!(
            per_record[0]
                .to_string()
                .starts_with("Contact.LastName is required to create records"),
            "{problems:?}"
        );
    }
}
