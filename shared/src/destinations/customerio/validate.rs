//! Pre-flight checks of a record as a Track API v2 `person` entry, from
//! Customer.io's documented limits, and the entry itself.

use serde_json::{Map, Value, json};

use super::config::IdentifyBy;
use crate::destinations::util::email::is_email;
use crate::destinations::util::vendor::identifier;

/// "cannot identify more than 300 attributes in one request".
pub const MAX_ATTRIBUTES: usize = 300;
/// "attribute name cannot be longer than 150 bytes".
pub const MAX_NAME_BYTES: usize = 150;
/// "value for attribute … cannot be longer than 1000 bytes".
pub const MAX_VALUE_BYTES: usize = 1000;
/// Each entry of a batch request is at most 32 KB.
pub const MAX_ENTRY_BYTES: usize = 32 * 1024;

/// A record as one `identify` entry of a batch request.
#[derive(Debug, Clone)]
pub struct Person {
    /// The identifier's value: the record's destination id.
    pub identifier: String,
    pub entry: Value,
    /// The entry's size as JSON, for cutting requests at 500 KB.
    pub bytes: usize,
}

/// Builds a record's `identify` entry, or says why Customer.io would
/// refuse it.
pub fn person(identify_by: IdentifyBy, fields: &Map<String, Value>) -> Result<Person, String> {
    let field = identify_by.field();
    let identifier = identifier(fields, field, "Customer.io identifies people by it")?;
    if identify_by == IdentifyBy::Email && !is_email(&identifier) {
        return Err(format!(
            "`email` ({identifier}) is not a valid email address; Customer.io identifies people by it"
        ));
    }
    let mut attributes = Map::new();
    for (name, value) in fields {
        if name == field {
            continue;
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "attribute name `{name}` has {} bytes; Customer.io takes at most {MAX_NAME_BYTES}",
                name.len()
            ));
        }
        let bytes = match value {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        if bytes > MAX_VALUE_BYTES {
            return Err(format!(
                "`{name}` has {bytes} bytes; Customer.io keeps at most {MAX_VALUE_BYTES} per attribute value"
            ));
        }
        if name == "email" && !value.is_null() && !value.as_str().is_some_and(is_email) {
            return Err(format!("`email` ({value}) is not a valid email address"));
        }
        attributes.insert(name.clone(), value.clone());
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "the record has {} attributes; Customer.io takes at most {MAX_ATTRIBUTES} in one request",
            attributes.len()
        ));
    }
    let entry = json!({
        "type": "person",
        "identifiers": { field: identifier },
        "action": "identify",
        "attributes": attributes,
    });
    let bytes = entry.to_string().len();
    if bytes > MAX_ENTRY_BYTES {
        return Err(format!(
            "the record takes {bytes} bytes as a Customer.io entry; it takes at most {MAX_ENTRY_BYTES}"
        ));
    }
    Ok(Person {
        identifier,
        entry,
        bytes,
    })
}

/// A removed record as a `delete` entry.
pub fn deletion(identify_by: IdentifyBy, identifier: &str) -> Value {
    json!({
        "type": "person",
        "identifiers": { identify_by.field(): identifier },
        "action": "delete",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_person_is_identified_by_its_field_and_carries_the_rest_as_attributes() {
        let p = person(
            IdentifyBy::Id,
            &fields(json!({"id": 42, "email": "a@example.com", "plan": "pro"})),
        )
        .unwrap();
        assert_eq!(p.identifier, "42");
        assert_eq!(
            p.entry,
            json!({"type": "person", "identifiers": {"id": "42"}, "action": "identify",
                   "attributes": {"email": "a@example.com", "plan": "pro"}})
        );
        assert_eq!(p.bytes, p.entry.to_string().len());
        assert_eq!(
            deletion(IdentifyBy::Email, "a@example.com"),
            json!({"type": "person", "identifiers": {"email": "a@example.com"}, "action": "delete"})
        );
    }

    #[test]
    fn customerio_limits_are_checked_before_sending() {
        let refused = |by: IdentifyBy, value: Value| person(by, &fields(value)).unwrap_err();
        assert!(refused(IdentifyBy::Id, json!({"id": ""})).contains("`id` is empty"));
        assert!(refused(IdentifyBy::Email, json!({"email": "nope"})).contains("not a valid email"));
        assert!(
            refused(IdentifyBy::Id, json!({"id": "1", "email": "nope"}))
                .contains("not a valid email")
        );
        let long_name = "n".repeat(151);
        assert!(refused(IdentifyBy::Id, json!({"id": "1", long_name: 1})).contains("151 bytes"));
        assert!(
            refused(IdentifyBy::Id, json!({"id": "1", "bio": "é".repeat(501)}))
                .contains("`bio` has 1002 bytes")
        );
        let mut many = Map::new();
        many.insert("id".into(), json!("1"));
        for i in 0..301 {
            many.insert(format!("a{i}"), json!(i));
        }
        assert!(
            person(IdentifyBy::Id, &many)
                .unwrap_err()
                .contains("301 attributes")
        );
    }
}
