//! Pre-flight validation of a member against the audience's merge fields,
//! so a bad value costs no API call and names its field.

use serde_json::{Map, Value};

use super::schema::{EMAIL, MergeField, Schema, TAGS};
use crate::destinations::util::email::is_email;

/// Mailchimp's limit for a text merge field.
const MAX_TEXT_CHARS: usize = 255;

/// A member ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub email: String,
    pub merge_fields: Map<String, Value>,
    pub tags: Vec<String>,
}

/// Checks one record; `new` members must fill the required merge fields.
pub fn member(schema: &Schema, fields: &Map<String, Value>, new: bool) -> Result<Member, String> {
    let email = match fields.get(EMAIL) {
        Some(Value::String(e)) if !e.trim().is_empty() => e.trim().to_owned(),
        _ => {
            return Err(format!(
                "`{EMAIL}` is empty, and Mailchimp members are keyed by it"
            ));
        }
    };
    if !is_email(&email) {
        return Err(format!("`{EMAIL}`: `{email}` is not a valid email address"));
    }
    let tags = match fields.get(TAGS) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| {
                v.as_str()
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
            })
            .collect(),
        Some(_) => {
            return Err(format!(
                "`{TAGS}` must be text (comma-separated) or an array of text"
            ));
        }
    };
    let mut merge_fields = Map::new();
    for (name, value) in fields {
        if name == EMAIL || name == TAGS {
            continue;
        }
        // Unknown merge tags are configuration errors, caught per batch.
        let Some(field) = schema.get(name) else {
            continue;
        };
        let value = merge_value(field, value).map_err(|e| format!("`{name}`: {e}"))?;
        merge_fields.insert(name.clone(), value);
    }
    if new {
        for field in schema.required() {
            let filled = merge_fields
                .get(&field.tag)
                .is_some_and(|v| !matches!(v, Value::String(s) if s.is_empty()));
            if !filled {
                return Err(format!(
                    "`{}` is required by the audience for new members and is empty",
                    field.tag
                ));
            }
        }
    }
    Ok(Member {
        email,
        merge_fields,
        tags,
    })
}

fn merge_value(field: &MergeField, value: &Value) -> Result<Value, String> {
    let text = match value {
        Value::Null => return Ok(Value::String(String::new())),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        // An address merge field takes an object (addr1, city, state, zip).
        Value::Object(_) if field.kind == "address" => return Ok(value.clone()),
        Value::Array(_) | Value::Object(_) => {
            return Err("merge fields take a single value, not a JSON array or object".into());
        }
    };
    if text.is_empty() {
        return Ok(Value::String(text));
    }
    match field.kind.as_str() {
        "number" => {
            if text.trim().parse::<f64>().map(f64::is_finite) != Ok(true) {
                return Err(format!("`{text}` is not a number"));
            }
        }
        "dropdown" | "radio" => {
            if !field.options.choices.iter().any(|c| c == &text) {
                return Err(format!(
                    "`{text}` is not a choice of this merge field; choices are: {}",
                    field.options.choices.join(", ")
                ));
            }
        }
        "date" => {
            if chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").is_err() {
                return Err(format!("`{text}` is not a date (YYYY-MM-DD)"));
            }
        }
        _ => {
            if text.chars().count() > MAX_TEXT_CHARS {
                return Err(format!(
                    "{} characters, over Mailchimp's limit of {MAX_TEXT_CHARS}",
                    text.chars().count()
                ));
            }
        }
    }
    Ok(Value::String(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::new(
            serde_json::from_value(json!([
                {"tag": "FNAME", "type": "text", "required": true},
                {"tag": "LTV", "type": "number"},
                {"tag": "PLAN", "type": "dropdown", "options": {"choices": ["free", "pro"]}},
                {"tag": "RENEWAL", "type": "date"},
            ]))
            .unwrap(),
        )
    }

    fn check(fields: Value, new: bool) -> Result<Member, String> {
        member(&schema(), fields.as_object().unwrap(), new)
    }

    #[test]
    fn members_are_built_from_mapped_fields() {
        let m = check(
            json!({"email_address": "A@Example.com", "FNAME": "Ada", "LTV": 12.5, "PLAN": "pro", "tags": "vip, beta"}),
            true,
        )
        .unwrap();
        assert_eq!(m.email, "A@Example.com");
        assert_eq!(m.merge_fields["LTV"], "12.5");
        assert_eq!(m.tags, vec!["vip", "beta"]);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                json!({"email_address": "nope", "FNAME": "A"}),
                "`email_address`: `nope` is not a valid email address",
            ),
            (
                json!({"email_address": "", "FNAME": "A"}),
                "`email_address` is empty",
            ),
            (
                json!({"email_address": "a@b.co", "FNAME": "A", "LTV": "lots"}),
                "`LTV`: `lots` is not a number",
            ),
            (
                json!({"email_address": "a@b.co", "FNAME": "A", "PLAN": "gold"}),
                "`PLAN`: `gold` is not a choice of this merge field; choices are: free, pro",
            ),
            (
                json!({"email_address": "a@b.co", "FNAME": "A", "RENEWAL": "01/02/2026"}),
                "`RENEWAL`: `01/02/2026` is not a date",
            ),
            (
                json!({"email_address": "a@b.co", "FNAME": null}),
                "`FNAME` is required by the audience for new members",
            ),
        ];
        for (fields, expected) in cases {
            let err = check(fields.clone(), true).unwrap_err();
            assert!(err.starts_with(expected), "{fields}: {err}");
        }
        // An existing member keeps its value when a required field is empty here.
        assert!(check(json!({"email_address": "a@b.co", "FNAME": null}), false).is_ok());
    }

    #[test]
    fn unknown_merge_tags_are_named_with_a_hint() {
        let problems = schema().check_fields(["email_address", "tags", "fname", "PLAN"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].blocks_delivery());
        assert!(problems[0].to_string().contains(
            "no merge field `fname` (merge tags are case-sensitive: did you mean `FNAME`?)"
        ));
    }
}
