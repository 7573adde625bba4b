//! The bodies of the Braze calls Ebb makes, and what their answers hold.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::config::MatchBy;

/// `POST /users/track` with up to 75 attribute objects.
pub fn track(objects: &[&Map<String, Value>]) -> Value {
    json!({ "attributes": objects })
}

/// `POST /users/delete` with up to 50 identifiers, all of one kind.
pub fn delete(match_by: &MatchBy, identifiers: &[&str]) -> Value {
    match match_by {
        MatchBy::ExternalId => json!({ "external_ids": identifiers }),
        MatchBy::Email => json!({ "email_addresses": identifiers }),
        MatchBy::UserAlias { label } => {
            let aliases: Vec<Value> = identifiers
                .iter()
                .map(|name| json!({ "alias_name": name, "alias_label": label }))
                .collect();
            json!({ "user_aliases": aliases })
        }
    }
}

/// `/users/track`'s answer: `message` is `success` when the request was
/// taken, and `errors` lists the objects Braze skipped (a partial success).
#[derive(Debug, Deserialize)]
pub struct TrackAnswer {
    pub message: String,
    #[serde(default)]
    pub errors: Vec<MinorError>,
}

/// One skipped object: its array and position in the request.
#[derive(Debug, Deserialize)]
pub struct MinorError {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub input_array: String,
    pub index: Option<usize>,
}

/// `/users/delete`'s answer.
#[derive(Debug, Deserialize)]
pub struct DeleteAnswer {
    pub message: String,
}
