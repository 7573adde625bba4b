//! Pre-flight checks of a record as a Zendesk user or organization, and
//! the object sent: Zendesk's standard fields at the top level, every
//! other field under `user_fields` or `organization_fields` (the account's
//! custom fields, by key).

use serde_json::{Map, Value};

use super::config::{MatchBy, ZendeskObject};
use crate::destinations::util::email::is_email;
use crate::destinations::util::vendor::identifier;

/// The user properties Zendesk's user endpoints take at the top level.
pub const USER_FIELDS: &[&str] = &[
    "name",
    "email",
    "external_id",
    "alias",
    "details",
    "notes",
    "phone",
    "shared_phone_number",
    "role",
    "custom_role_id",
    "organization_id",
    "default_group_id",
    "locale",
    "locale_id",
    "time_zone",
    "iana_time_zone",
    "tags",
    "signature",
    "verified",
    "moderator",
    "ticket_restriction",
    "only_private_comments",
    "restricted_agent",
    "suspended",
    "remote_photo_url",
];

/// The organization properties Zendesk's organization endpoints take at
/// the top level.
pub const ORGANIZATION_FIELDS: &[&str] = &[
    "name",
    "external_id",
    "details",
    "notes",
    "domain_names",
    "group_id",
    "shared_tickets",
    "shared_comments",
    "tags",
];

const BOOLEANS: &[&str] = &[
    "verified",
    "moderator",
    "only_private_comments",
    "restricted_agent",
    "suspended",
    "shared_phone_number",
    "shared_tickets",
    "shared_comments",
];

const IDS: &[&str] = &[
    "custom_role_id",
    "organization_id",
    "default_group_id",
    "group_id",
    "locale_id",
];

const ROLES: &[&str] = &["end-user", "agent", "admin"];
const TICKET_RESTRICTIONS: &[&str] = &["organization", "groups", "assigned", "requested"];

/// The standard fields of `object`.
pub fn standard_fields(object: ZendeskObject) -> &'static [&'static str] {
    match object {
        ZendeskObject::Users => USER_FIELDS,
        ZendeskObject::Organizations => ORGANIZATION_FIELDS,
    }
}

/// A record as the user or organization Zendesk is sent.
#[derive(Debug, Clone)]
pub struct ZendeskRecord {
    /// The value of the match field: what names the user or organization.
    pub identifier: String,
    pub body: Map<String, Value>,
}

pub fn record(
    object: ZendeskObject,
    match_by: MatchBy,
    fields: &Map<String, Value>,
) -> Result<ZendeskRecord, String> {
    let match_field = match_by.field();
    let identifier = identifier(
        fields,
        match_field,
        &format!("Zendesk matches {} on it", object.plural()),
    )?;
    match fields.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(Value::Number(_)) => {}
        _ => {
            return Err(format!(
                "`name` is empty; Zendesk requires a name for every {}",
                object.singular()
            ));
        }
    }
    let standard = standard_fields(object);
    let mut body = Map::new();
    let mut custom = Map::new();
    for (name, value) in fields {
        if name == match_field {
            body.insert(name.clone(), Value::String(identifier.clone()));
        } else if standard.contains(&name.as_str()) {
            body.insert(name.clone(), standard_value(name, value)?);
        } else {
            custom.insert(name.clone(), custom_value(name, value)?);
        }
    }
    if !custom.is_empty() {
        let key = match object {
            ZendeskObject::Users => "user_fields",
            ZendeskObject::Organizations => "organization_fields",
        };
        body.insert(key.into(), Value::Object(custom));
    }
    Ok(ZendeskRecord { identifier, body })
}

fn standard_value(name: &str, value: &Value) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    match name {
        "email" if !value.as_str().is_some_and(is_email) => {
            Err(format!("`email` ({value}) is not a valid email address"))
        }
        "role" if !value.as_str().is_some_and(|r| ROLES.contains(&r)) => Err(format!(
            "`role` is {value}; Zendesk's roles are `end-user`, `agent` and `admin`"
        )),
        "ticket_restriction"
            if !value
                .as_str()
                .is_some_and(|r| TICKET_RESTRICTIONS.contains(&r)) =>
        {
            Err(format!(
                "`ticket_restriction` is {value}; Zendesk takes `organization`, `groups`, `assigned` or `requested`"
            ))
        }
        "tags" | "domain_names" => words(name, value),
        _ if BOOLEANS.contains(&name) && !value.is_boolean() => {
            Err(format!("`{name}` is {value}; Zendesk takes true or false"))
        }
        _ if IDS.contains(&name) && value.as_u64().is_none() => Err(format!(
            "`{name}` is {value}; Zendesk takes the numeric id of an existing record"
        )),
        _ if value.is_array() || value.is_object() => Err(format!(
            "`{name}` is a list or an object; Zendesk takes text here"
        )),
        _ => Ok(value.clone()),
    }
}

/// Tags and domain names: a list of words, or one text of words separated
/// by spaces or commas.
fn words(name: &str, value: &Value) -> Result<Value, String> {
    let list: Vec<String> = match value {
        Value::String(s) => s
            .split([',', ' '])
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) if !s.trim().is_empty() && !s.trim().contains(' ') => {
                    Ok(s.trim().to_owned())
                }
                other => Err(format!(
                    "`{name}` holds {other}; Zendesk takes words without spaces"
                )),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "`{name}` is {other}; Zendesk takes a list of words or one text of words separated by spaces or commas"
            ));
        }
    };
    Ok(Value::Array(list.into_iter().map(Value::String).collect()))
}

/// A custom field's value: text, a number, true or false, a date as text,
/// or a list of option values (multi-select fields).
fn custom_value(name: &str, value: &Value) -> Result<Value, String> {
    match value {
        Value::Object(_) => Err(format!(
            "custom field `{name}` is an object; Zendesk's custom fields take text, numbers, true or false, dates or a list of options"
        )),
        Value::Array(items) if !items.iter().all(Value::is_string) => Err(format!(
            "custom field `{name}` is a list of {value}; Zendesk's multi-select fields take a list of option values (text)"
        )),
        _ => Ok(value.clone()),
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
    fn standard_fields_go_on_top_and_the_rest_are_custom_fields() {
        let user = record(
            ZendeskObject::Users,
            MatchBy::ExternalId,
            &fields(json!({"external_id": 42, "email": "a@example.com", "name": "Ann", "tags": "vip, beta", "plan": "pro"})),
        )
        .unwrap();
        assert_eq!(user.identifier, "42");
        assert_eq!(
            Value::Object(user.body),
            json!({"external_id": "42", "email": "a@example.com", "name": "Ann", "tags": ["vip", "beta"], "user_fields": {"plan": "pro"}})
        );
        let org = record(
            ZendeskObject::Organizations,
            MatchBy::ExternalId,
            &fields(json!({"external_id": "acct-1", "name": "Acme", "domain_names": ["acme.com"], "tier": "gold"})),
        )
        .unwrap();
        assert_eq!(
            Value::Object(org.body),
            json!({"external_id": "acct-1", "name": "Acme", "domain_names": ["acme.com"], "organization_fields": {"tier": "gold"}})
        );
    }

    #[test]
    fn zendesk_rules_are_checked_before_sending() {
        let refused = |value: Value| {
            record(ZendeskObject::Users, MatchBy::ExternalId, &fields(value)).unwrap_err()
        };
        assert!(
            refused(json!({"external_id": null, "name": "A"})).contains("`external_id` is empty")
        );
        assert!(refused(json!({"external_id": "1", "name": " "})).contains("requires a name"));
        assert!(
            refused(json!({"external_id": "1", "name": "A", "email": "nope"}))
                .contains("not a valid email")
        );
        assert!(
            refused(json!({"external_id": "1", "name": "A", "role": "owner"}))
                .contains("`end-user`, `agent` and `admin`")
        );
        assert!(
            refused(json!({"external_id": "1", "name": "A", "suspended": "yes"}))
                .contains("true or false")
        );
        assert!(
            refused(json!({"external_id": "1", "name": "A", "organization_id": "acme"}))
                .contains("numeric id")
        );
        assert!(
            refused(json!({"external_id": "1", "name": "A", "tags": ["two words"]}))
                .contains("without spaces")
        );
        assert!(
            refused(json!({"external_id": "1", "name": "A", "plan": {"a": 1}}))
                .contains("custom field `plan` is an object")
        );
        assert!(
            record(
                ZendeskObject::Users,
                MatchBy::Email,
                &fields(json!({"email": "b@example.com", "name": "B", "phone": null, "colours": ["red"]}))
            )
            .is_ok()
        );
    }
}
