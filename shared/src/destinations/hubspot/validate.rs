//! Pre-flight validation: a record's values checked against HubSpot's
//! property definitions before any request, so a bad value costs no API
//! call and names its field. HubSpot takes every property value as a string.

use serde_json::{Map, Value};

use super::schema::{Property, Schema};
use crate::destinations::util::email::is_email;

/// HubSpot's limit for a text property value.
const MAX_TEXT_CHARS: usize = 65_536;

/// The record's properties as HubSpot strings, or why it cannot be sent.
pub fn properties(
    schema: &Schema,
    fields: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::with_capacity(fields.len());
    for (name, value) in fields {
        // Unknown and read-only properties are configuration errors, caught
        // for the whole batch before this.
        let Some(property) = schema.get(name) else {
            continue;
        };
        let text = property_value(property, value).map_err(|e| format!("`{name}`: {e}"))?;
        out.insert(name.clone(), Value::String(text));
    }
    Ok(out)
}

fn property_value(property: &Property, value: &Value) -> Result<String, String> {
    let text = match value {
        // An empty string clears a property in HubSpot.
        Value::Null => return Ok(String::new()),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(_) | Value::Object(_) => {
            return Err(
                "HubSpot properties take a single value, not a JSON array or object".into(),
            );
        }
    };
    if text.is_empty() {
        return Ok(text);
    }
    match property.kind.as_str() {
        "number" => {
            if text.trim().parse::<f64>().map(f64::is_finite) != Ok(true) {
                return Err(format!("`{}` is not a number", preview(&text)));
            }
        }
        "bool" => {
            if !matches!(text.to_ascii_lowercase().as_str(), "true" | "false") {
                return Err(format!("`{}` is not true or false", preview(&text)));
            }
            return Ok(text.to_ascii_lowercase());
        }
        "date" => {
            if !(is_date(&text) || is_epoch_millis(&text)) {
                return Err(format!(
                    "`{}` is not a date (YYYY-MM-DD, or epoch milliseconds at midnight UTC)",
                    preview(&text)
                ));
            }
        }
        "datetime" => {
            if !(is_date(&text)
                || is_epoch_millis(&text)
                || chrono::DateTime::parse_from_rfc3339(&text).is_ok())
            {
                return Err(format!(
                    "`{}` is not a datetime (ISO 8601 with a time zone, or epoch milliseconds)",
                    preview(&text)
                ));
            }
        }
        "enumeration" => {
            // Checkboxes take several options, separated by `;`.
            let chosen: Vec<&str> = if property.field_type == "checkbox" {
                text.split(';').collect()
            } else {
                vec![text.as_str()]
            };
            for option in chosen {
                if !property.options.iter().any(|o| o.value == option) {
                    let allowed: Vec<&str> = property
                        .options
                        .iter()
                        .take(12)
                        .map(|o| o.value.as_str())
                        .collect();
                    return Err(format!(
                        "`{}` is not an option of this property; options are: {}{}",
                        preview(option),
                        allowed.join(", "),
                        if property.options.len() > 12 {
                            ", …"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        _ => {
            if text.chars().count() > MAX_TEXT_CHARS {
                return Err(format!(
                    "{} characters, over HubSpot's limit of {MAX_TEXT_CHARS}",
                    text.chars().count()
                ));
            }
            if (property.name == "email" || property.field_type == "email") && !is_email(&text) {
                return Err(format!("`{}` is not a valid email address", preview(&text)));
            }
        }
    }
    Ok(text)
}

fn preview(text: &str) -> String {
    if text.chars().count() <= 80 {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(80).collect::<String>())
    }
}

fn is_date(text: &str) -> bool {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

fn is_epoch_millis(text: &str) -> bool {
    !text.is_empty() && text.len() <= 15 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::util::vendor::SchemaProblem;
    use serde_json::json;

    fn schema() -> Schema {
        let properties: Vec<Property> = serde_json::from_value(json!([
            {"name": "email", "type": "string", "fieldType": "text"},
            {"name": "employees", "type": "number", "fieldType": "number"},
            {"name": "vip", "type": "bool", "fieldType": "booleancheckbox"},
            {"name": "renewal", "type": "date", "fieldType": "date"},
            {"name": "plan", "type": "enumeration", "fieldType": "select",
             "options": [{"value": "free"}, {"value": "pro"}]},
            {"name": "channels", "type": "enumeration", "fieldType": "checkbox",
             "options": [{"value": "email"}, {"value": "sms"}]},
        ]))
        .unwrap();
        Schema::new("contacts", properties)
    }

    fn check(fields: Value) -> Result<Map<String, Value>, String> {
        properties(&schema(), fields.as_object().unwrap())
    }

    #[test]
    fn values_become_hubspot_strings() {
        let out = check(json!({
            "email": "a@example.com", "employees": 12, "vip": true,
            "renewal": "2026-01-31", "plan": "pro", "channels": "email;sms"
        }))
        .unwrap();
        assert_eq!(out["employees"], "12");
        assert_eq!(out["vip"], "true");
        assert_eq!(out["channels"], "email;sms");
        assert_eq!(check(json!({"plan": null})).unwrap()["plan"], "");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                json!({"email": "not-an-email"}),
                "`email`: `not-an-email` is not a valid email",
            ),
            (
                json!({"employees": "many"}),
                "`employees`: `many` is not a number",
            ),
            (json!({"vip": "yes"}), "`vip`: `yes` is not true or false"),
            (
                json!({"renewal": "31/01/2026"}),
                "`renewal`: `31/01/2026` is not a date",
            ),
            (
                json!({"plan": "gold"}),
                "`plan`: `gold` is not an option of this property; options are: free, pro",
            ),
            (
                json!({"channels": "email;fax"}),
                "`channels`: `fax` is not an option",
            ),
            (
                json!({"email": ["a@b.co"]}),
                "`email`: HubSpot properties take a single value",
            ),
        ];
        for (fields, expected) in cases {
            let err = check(fields.clone()).unwrap_err();
            assert!(err.starts_with(expected), "{fields}: {err}");
        }
    }

    #[test]
    fn schema_flags_unknown_and_read_only_properties() {
        let mut properties: Vec<Property> = serde_json::from_value(json!([
            {"name": "email", "type": "string"},
            {"name": "firstname", "type": "string"},
            {"name": "hs_object_id", "type": "number", "modificationMetadata": {"readOnlyValue": true}},
        ]))
        .unwrap();
        properties.truncate(3);
        let schema = Schema::new("contacts", properties);
        let problems = schema.check_fields(["email", "first_name", "hs_object_id"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(SchemaProblem::blocks_delivery));
        assert!(
            problems[0]
                .to_string()
                .contains("no property `first_name` (did you mean `firstname`?)")
        );
        assert!(
            problems[1]
                .to_string()
                .contains("`hs_object_id` of contacts is read-only")
        );
        assert!(schema.upserts_by("email"));
        assert!(!schema.upserts_by("firstname"));
    }
}
