//! Pre-flight checks of a record as an Intercom contact, and the contact
//! body itself: Intercom's standard contact fields at the top level,
//! every other field under `custom_attributes`.

use serde_json::{Map, Value};

use super::config::MatchOn;
use crate::destinations::util::email::is_email;
use crate::destinations::util::vendor::identifier;

/// The contact fields Intercom's create and update take at the top level.
pub const STANDARD_FIELDS: &[&str] = &[
    "external_id",
    "email",
    "phone",
    "name",
    "avatar",
    "signed_up_at",
    "last_seen_at",
    "owner_id",
    "unsubscribed_from_emails",
];

/// Intercom keeps at most 255 characters in a string data attribute.
pub const MAX_STRING_CHARS: usize = 255;

/// A record as an Intercom contact.
#[derive(Debug, Clone)]
pub struct Contact {
    /// The value of the match field, for the search.
    pub match_value: String,
    /// The create or update body (without `role`, added on create).
    pub body: Map<String, Value>,
}

pub fn contact(match_on: MatchOn, fields: &Map<String, Value>) -> Result<Contact, String> {
    let field = match_on.field();
    let match_value = identifier(fields, field, "Intercom matches contacts on it")?;
    let mut body = Map::new();
    let mut custom = Map::new();
    for (name, value) in fields {
        let value = if name == field {
            Value::String(match_value.clone())
        } else {
            value.clone()
        };
        if STANDARD_FIELDS.contains(&name.as_str()) {
            check_standard(name, &value)?;
            body.insert(name.clone(), value);
        } else {
            check_custom(name, &value)?;
            custom.insert(name.clone(), value);
        }
    }
    if !custom.is_empty() {
        body.insert("custom_attributes".into(), Value::Object(custom));
    }
    Ok(Contact { match_value, body })
}

fn check_standard(name: &str, value: &Value) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let ok = match name {
        "email" => value.as_str().is_some_and(is_email),
        "signed_up_at" | "last_seen_at" => value.as_i64().is_some(),
        "unsubscribed_from_emails" => value.is_boolean(),
        _ => value.is_string() || value.is_number(),
    };
    if ok {
        return Ok(());
    }
    Err(match name {
        "email" => format!("`email` ({value}) is not a valid email address"),
        "signed_up_at" | "last_seen_at" => {
            format!(
                "`{name}` is {value}; Intercom takes a Unix timestamp in seconds (e.g. extract(epoch from …)::bigint)"
            )
        }
        "unsubscribed_from_emails" => format!("`{name}` is {value}; Intercom takes true or false"),
        _ => format!("`{name}` is {value}; Intercom takes text"),
    })
}

fn check_custom(name: &str, value: &Value) -> Result<(), String> {
    match value {
        Value::Array(_) | Value::Object(_) => Err(format!(
            "custom attribute `{name}` is a list or an object; Intercom's data attributes take text, numbers, booleans or dates"
        )),
        Value::String(s) if s.chars().count() > MAX_STRING_CHARS => Err(format!(
            "custom attribute `{name}` has {} characters; Intercom keeps at most {MAX_STRING_CHARS}",
            s.chars().count()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn standard_fields_go_on_top_and_the_rest_are_custom_attributes() {
        let c = contact(
            MatchOn::ExternalId,
            &fields(
                json!({"external_id": 42, "email": "a@example.com", "name": "Ann", "plan": "pro"}),
            ),
        )
        .unwrap();
        assert_eq!(c.match_value, "42");
        assert_eq!(
            Value::Object(c.body),
            json!({"external_id": "42", "email": "a@example.com", "name": "Ann", "custom_attributes": {"plan": "pro"}})
        );
    }

    #[test]
    fn intercom_rules_are_checked_before_sending() {
        let refused = |value: Value| contact(MatchOn::ExternalId, &fields(value)).unwrap_err();
        assert!(refused(json!({"external_id": null})).contains("`external_id` is empty"));
        assert!(
            refused(json!({"external_id": "1", "email": "nope"})).contains("not a valid email")
        );
        assert!(
            refused(json!({"external_id": "1", "signed_up_at": "2026-01-01"}))
                .contains("Unix timestamp")
        );
        assert!(refused(json!({"external_id": "1", "tags": ["a"]})).contains("list or an object"));
        assert!(
            refused(json!({"external_id": "1", "bio": "x".repeat(256)})).contains("256 characters")
        );
        assert!(
            contact(
                MatchOn::Email,
                &fields(json!({"email": "b@example.com", "plan": null}))
            )
            .is_ok()
        );
    }
}
