//! Pre-flight checks of a record as Braze's user attributes object
//! (<https://www.braze.com/docs/api/objects_filters/user_attributes_object/>),
//! made before sending so a refusal costs no request and says which field
//! is wrong, and the attribute object itself.

use serde_json::{Map, Value};

use super::config::MatchBy;
use crate::destinations::util::email::is_email;
use crate::destinations::util::vendor::identifier;

/// Braze truncates or refuses custom attribute strings over 255 characters.
pub const MAX_STRING_CHARS: usize = 255;

/// A record as one attribute object of `/users/track`.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The identifier's value (external id, address or alias name): the
    /// record's destination id, which a mirror removal deletes.
    pub identifier: String,
    pub object: Map<String, Value>,
}

/// Builds a record's attribute object, or says why Braze would refuse it.
pub fn profile(
    match_by: &MatchBy,
    update_existing_only: bool,
    fields: &Map<String, Value>,
) -> Result<Profile, String> {
    let field = match_by.field();
    let identifier = identifier(
        fields,
        field,
        "Braze needs it to know which profile to write",
    )?;
    let mut object = Map::new();
    for (name, value) in fields {
        if name == field {
            continue;
        }
        check_attribute(name, value)?;
        object.insert(name.clone(), value.clone());
    }
    match match_by {
        MatchBy::ExternalId => {
            object.insert("external_id".into(), Value::String(identifier.clone()));
        }
        MatchBy::Email => {
            if !is_email(&identifier) {
                return Err(format!(
                    "`email` ({identifier}) is not a valid email address; Braze matches profiles on it"
                ));
            }
            object.insert("email".into(), Value::String(identifier.clone()));
        }
        MatchBy::UserAlias { label } => {
            object.insert(
                "user_alias".into(),
                serde_json::json!({ "alias_name": identifier, "alias_label": label }),
            );
        }
    }
    // Braze's default is `true` for alias-only and email-only objects,
    // which would never create the profile: always say what is meant.
    object.insert(
        "_update_existing_only".into(),
        Value::Bool(update_existing_only),
    );
    Ok(Profile { identifier, object })
}

/// Braze's rules for the standard attributes Ebb can check offline, and
/// the length of custom string attributes.
fn check_attribute(name: &str, value: &Value) -> Result<(), String> {
    if value.is_null() {
        // `null` removes the attribute from the profile.
        return Ok(());
    }
    let text = value.as_str();
    match name {
        "email" => match text {
            Some(email) if is_email(email) => Ok(()),
            _ => Err(format!(
                "`email` ({}) is not a valid email address",
                shown(value)
            )),
        },
        "email_subscribe" | "push_subscribe" => match text {
            Some("opted_in" | "subscribed" | "unsubscribed") => Ok(()),
            _ => Err(format!(
                "`{name}` is {}; Braze takes `opted_in`, `subscribed` or `unsubscribed`",
                shown(value)
            )),
        },
        "gender" => match text {
            Some("M" | "F" | "O" | "N" | "P") => Ok(()),
            _ => Err(format!(
                "`gender` is {}; Braze takes M, F, O (other), N (not applicable) or P (prefer not to say)",
                shown(value)
            )),
        },
        "dob" => match text {
            Some(day) if chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok() => Ok(()),
            _ => Err(format!(
                "`dob` is {}; Braze takes a date of birth as YYYY-MM-DD",
                shown(value)
            )),
        },
        "country" => match text {
            Some(code) if code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase()) => Ok(()),
            _ => Err(format!(
                "`country` is {}; Braze takes an ISO-3166-1 alpha-2 code such as US or DE",
                shown(value)
            )),
        },
        _ => match text {
            Some(s) if s.chars().count() > MAX_STRING_CHARS => Err(format!(
                "`{name}` has {} characters; Braze keeps at most {MAX_STRING_CHARS} in a string attribute",
                s.chars().count()
            )),
            _ => Ok(()),
        },
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{s}`"),
        other => other.to_string(),
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
    fn a_profile_carries_its_identifier_and_says_whether_to_create() {
        let p = profile(
            &MatchBy::ExternalId,
            false,
            &fields(json!({"external_id": 42, "email": "a@example.com", "plan": "pro"})),
        )
        .unwrap();
        assert_eq!(p.identifier, "42");
        assert_eq!(
            Value::Object(p.object),
            json!({"external_id": "42", "email": "a@example.com", "plan": "pro", "_update_existing_only": false})
        );
        let p = profile(
            &MatchBy::UserAlias {
                label: "warehouse_id".into(),
            },
            false,
            &fields(json!({"alias_name": "7", "first_name": "Ann"})),
        )
        .unwrap();
        assert_eq!(
            Value::Object(p.object),
            json!({"user_alias": {"alias_name": "7", "alias_label": "warehouse_id"}, "first_name": "Ann", "_update_existing_only": false})
        );
    }

    #[test]
    fn braze_rules_are_checked_before_sending() {
        let refused = |match_by: MatchBy, value: Value| {
            profile(&match_by, false, &fields(value)).unwrap_err()
        };
        assert!(
            refused(MatchBy::ExternalId, json!({"external_id": null}))
                .contains("`external_id` is empty")
        );
        assert!(
            refused(MatchBy::Email, json!({"email": "nope"})).contains("not a valid email address")
        );
        assert!(
            refused(
                MatchBy::ExternalId,
                json!({"external_id": "1", "email": "nope"})
            )
            .contains("`email` (`nope`)")
        );
        assert!(
            refused(
                MatchBy::ExternalId,
                json!({"external_id": "1", "email_subscribe": "yes"})
            )
            .contains("`opted_in`")
        );
        assert!(
            refused(
                MatchBy::ExternalId,
                json!({"external_id": "1", "gender": "male"})
            )
            .contains("M, F, O")
        );
        assert!(
            refused(
                MatchBy::ExternalId,
                json!({"external_id": "1", "dob": "1980-13-01"})
            )
            .contains("YYYY-MM-DD")
        );
        assert!(
            refused(
                MatchBy::ExternalId,
                json!({"external_id": "1", "country": "Germany"})
            )
            .contains("alpha-2")
        );
        let long = "x".repeat(256);
        assert!(
            refused(
                MatchBy::ExternalId,
                json!({"external_id": "1", "bio": long})
            )
            .contains("256 characters")
        );
        // null clears an attribute, whatever its rules.
        assert!(
            profile(
                &MatchBy::ExternalId,
                true,
                &fields(json!({"external_id": "1", "gender": null, "dob": "1980-01-31"}))
            )
            .is_ok()
        );
    }
}
