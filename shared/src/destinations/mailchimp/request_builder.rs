//! The bodies of the Marketing API calls Ebb makes, and what their answers
//! hold.

use serde::Deserialize;
use serde_json::{Value, json};

use super::validate::Member;

/// `POST /lists/{list_id}` (batch subscribe), at most 500 members. With
/// `update_existing: false` an existing member is left alone (its status
/// above all) and answered `ERROR_CONTACT_EXISTS`.
pub fn batch_subscribe(members: &[&Member], status_if_new: &str) -> Value {
    let members: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({
                "email_address": m.email,
                "status": status_if_new,
                "merge_fields": m.merge_fields,
                "tags": m.tags,
            })
        })
        .collect();
    json!({ "members": members, "update_existing": false })
}

/// `PUT /lists/{list_id}/members/{subscriber_hash}`: add or update. The
/// hash addresses the member; `email_address` may differ from it (an email
/// change). `status_if_new` never changes an existing member's status, so an
/// unsubscribed person stays unsubscribed.
pub fn put_member(member: &Member, status_if_new: &str) -> Value {
    json!({
        "email_address": member.email,
        "status_if_new": status_if_new,
        "merge_fields": member.merge_fields,
    })
}

/// `POST /lists/{list_id}/members/{subscriber_hash}/tags`: tags are added,
/// never removed.
pub fn add_tags(tags: &[String]) -> Value {
    let tags: Vec<Value> = tags
        .iter()
        .map(|name| json!({ "name": name, "status": "active" }))
        .collect();
    json!({ "tags": tags })
}

/// A member as the API returns it (`id` is its subscriber hash).
#[derive(Debug, Deserialize)]
pub struct MemberAnswer {
    pub id: String,
    pub email_address: String,
}

#[derive(Debug, Deserialize)]
pub struct BatchSubscribeAnswer {
    #[serde(default)]
    pub new_members: Vec<MemberAnswer>,
    #[serde(default)]
    pub updated_members: Vec<MemberAnswer>,
    #[serde(default)]
    pub errors: Vec<MemberError>,
}

#[derive(Debug, Deserialize)]
pub struct MemberError {
    pub email_address: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_code: String,
}
