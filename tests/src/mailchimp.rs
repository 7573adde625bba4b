//! An emulator of Mailchimp's Marketing API 3.0 (audience members),
//! following Mailchimp's public documentation, not Ebb's code:
//!
//! - HTTP Basic auth with the API key as password: 401 "API Key Invalid";
//! - `GET /3.0/lists/{list_id}` and `GET /3.0/lists/{list_id}/merge-fields`;
//!   an unknown (or deleted) list is a 404 "Resource Not Found", as is an
//!   unknown member;
//! - `POST /3.0/lists/{list_id}` (batch subscribe, at most 500 members):
//!   answers 200 with `new_members`, `updated_members` and per-member
//!   `errors`; with `update_existing: false` an existing member is an
//!   `ERROR_CONTACT_EXISTS` error and is left alone;
//! - `PUT /3.0/lists/{list_id}/members/{subscriber_hash}` (add or update;
//!   `status_if_new` applies to new members only; a new `email_address`
//!   changes the member's address and hash);
//! - `DELETE …/members/{hash}` archives; `POST …/actions/delete-permanent`
//!   deletes for good, after which the address cannot be re-added ("Forgotten
//!   Email Not Subscribed"); `POST …/members/{hash}/tags`;
//! - validation: invalid or fake-looking addresses, merge fields of the
//!   wrong type or not among a dropdown's choices, missing required merge
//!   fields — as problem documents (`title`, `status`, `detail`);
//! - at most 10 simultaneous connections per key: the 11th is answered 429.
//!
//! Knobs: latency per request, apply-then-drop the connection, and a
//! share of member `PUT`s that fail transiently (a 503 before applying, or
//! the connection dropped after applying), as Mailchimp's API does a few
//! percent of the time; the choice is a hash of the member and the how
//! many-th `PUT` of it this is, so a test sees the same faults every run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

pub const API_KEY: &str = "0123456789abcdef0123456789abcdef-us6";
pub const LIST_ID: &str = "a1b2c3d4e5";
/// Domains Mailchimp refuses as fake or disposable.
const FAKE_DOMAINS: &[&str] = &["mailinator.com", "example.invalid"];

#[derive(Debug, Clone)]
pub struct StoredMember {
    pub email: String,
    /// subscribed, unsubscribed, pending, transactional, archived, …
    pub status: String,
    pub merge_fields: BTreeMap<String, String>,
    pub tags: BTreeSet<String>,
}

#[derive(Default)]
pub struct MailchimpState {
    /// Members by subscriber hash.
    pub members: BTreeMap<String, StoredMember>,
    /// Hashes of permanently deleted addresses.
    pub forgotten: BTreeSet<String>,
    /// Every request: method and path.
    pub requests: Vec<String>,
    pub latency: Duration,
    /// The next this many writes are applied, then the connection drops.
    pub drop_after_apply_left: u32,
    in_flight: u32,
    pub max_in_flight: u32,
    /// Requests over the 10-connection limit (answered 429).
    pub violations: u32,
    /// Percent of member `PUT`s that fail transiently.
    pub flaky_puts_percent: u32,
    /// Member `PUT`s received, by the subscriber hash in their path.
    pub puts: BTreeMap<String, u32>,
    /// Of those, the ones that failed on purpose (see `flaky_puts_percent`).
    pub failed_puts: BTreeMap<String, u32>,
    /// The next this many tag requests are answered 503.
    pub tags_unavailable_left: u32,
    /// The audience was deleted: every call on it is a 404.
    pub list_deleted: bool,
    /// The next this many requests meet a proxy's 404 (an HTML page, not
    /// Mailchimp's problem document), before reaching Mailchimp.
    pub proxy_not_found_left: u32,
}

/// How a flaky `PUT` fails.
enum PutFault {
    /// 503 before applying anything.
    Unavailable,
    /// Applied, then the connection drops before the answer.
    DropAfterApply,
}

/// Whether the `nth` `PUT` (0-based) of the member at `key` fails, and how.
fn put_fault(key: &str, nth: u32, percent: u32) -> Option<PutFault> {
    let digest = Md5::digest(format!("{key}/{nth}").as_bytes());
    let roll = u32::from(u16::from_be_bytes([digest[0], digest[1]])) % 100;
    (roll < percent).then(|| {
        if digest[2] % 2 == 0 {
            PutFault::Unavailable
        } else {
            PutFault::DropAfterApply
        }
    })
}

impl MailchimpState {
    pub fn member(&self, email: &str) -> Option<&StoredMember> {
        self.members.get(&hash(email))
    }

    /// Members not archived.
    pub fn active(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.status != "archived")
            .count()
    }

    pub fn calls(&self, needle: &str) -> usize {
        self.requests.iter().filter(|r| r.contains(needle)).count()
    }

    pub fn writes(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| !r.starts_with("GET"))
            .count()
    }

    /// Adds a member as someone using Mailchimp's own forms would.
    pub fn add(&mut self, email: &str, status: &str) {
        self.members.insert(
            hash(email),
            StoredMember {
                email: email.to_owned(),
                status: status.to_owned(),
                merge_fields: BTreeMap::new(),
                tags: BTreeSet::new(),
            },
        );
    }
}

pub fn hash(email: &str) -> String {
    Md5::digest(email.trim().to_lowercase().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Clone)]
pub struct Mailchimp {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MailchimpState>>,
}

type Shared = State<Arc<Mutex<MailchimpState>>>;

impl Mailchimp {
    pub async fn start() -> Mailchimp {
        let state = Arc::new(Mutex::new(MailchimpState::default()));
        let app = Router::new()
            .route("/3.0/lists/{list_id}", post(batch_subscribe).get(list_info))
            .route("/3.0/lists/{list_id}/merge-fields", get(merge_fields))
            .route(
                "/3.0/lists/{list_id}/members/{hash}",
                get(get_member).put(put_member).delete(archive),
            )
            .route(
                "/3.0/lists/{list_id}/members/{hash}/actions/delete-permanent",
                post(delete_permanent),
            )
            .route("/3.0/lists/{list_id}/members/{hash}/tags", post(tags))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        Mailchimp { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut MailchimpState) -> T) -> T {
        f(&mut self.state.lock().expect("mailchimp emulator lock"))
    }
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        axum::Json(json!({
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": title, "status": status.as_u16(), "detail": detail,
            "instance": uuid::Uuid::now_v7().to_string(),
        })),
    )
        .into_response()
}

/// Counts a connection for as long as its handler runs.
struct Connection(Arc<Mutex<MailchimpState>>);

impl Drop for Connection {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.in_flight -= 1;
        }
    }
}

/// Auth, the connection limit, the list id and latency: `Err` is the answer.
async fn admit(
    state: &Arc<Mutex<MailchimpState>>,
    headers: &HeaderMap,
    what: String,
    list_id: &str,
) -> Result<Connection, Response> {
    let (latency, connection) = {
        let mut s = state.lock().expect("lock");
        s.requests.push(what);
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let connection = Connection(state.clone());
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(decode_basic)
            .and_then(|user_pass| user_pass.split_once(':').map(|(_, key)| key.to_owned()));
        if key.as_deref() != Some(API_KEY) {
            drop(s);
            drop(connection);
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            ));
        }
        if s.in_flight > 10 {
            s.violations += 1;
            drop(s);
            drop(connection);
            return Err(problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests",
                "You have exceeded the limit of 10 simultaneous connections.",
            ));
        }
        if s.proxy_not_found_left > 0 {
            s.proxy_not_found_left -= 1;
            drop(s);
            drop(connection);
            return Err((
                StatusCode::NOT_FOUND,
                [("content-type", "text/html")],
                "<html><body><h1>404 Not Found</h1>nginx</body></html>",
            )
                .into_response());
        }
        if list_id != LIST_ID || s.list_deleted {
            drop(s);
            drop(connection);
            return Err(problem(
                StatusCode::NOT_FOUND,
                "Resource Not Found",
                "The requested resource could not be found.",
            ));
        }
        let latency = s.latency;
        drop(s);
        (latency, connection)
    };
    tokio::time::sleep(latency).await;
    Ok(connection)
}

fn decode_basic(encoded: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in encoded.trim_end_matches('=').bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

struct FieldDef {
    tag: &'static str,
    kind: &'static str,
    required: bool,
    choices: &'static [&'static str],
}

const FIELDS: &[FieldDef] = &[
    FieldDef {
        tag: "FNAME",
        kind: "text",
        required: false,
        choices: &[],
    },
    FieldDef {
        tag: "LNAME",
        kind: "text",
        required: false,
        choices: &[],
    },
    FieldDef {
        tag: "PLAN",
        kind: "dropdown",
        required: false,
        choices: &["free", "starter", "pro", "enterprise"],
    },
    FieldDef {
        tag: "LTV",
        kind: "number",
        required: false,
        choices: &[],
    },
];

async fn merge_fields(
    State(state): Shared,
    Path(list_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _connection = match admit(
        &state,
        &headers,
        format!("GET /lists/{list_id}/merge-fields"),
        &list_id,
    )
    .await
    {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let fields: Vec<Value> = FIELDS
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "merge_id": i + 1, "tag": f.tag, "name": f.tag, "type": f.kind, "required": f.required,
                "public": true, "list_id": LIST_ID, "options": { "choices": f.choices },
            })
        })
        .collect();
    axum::Json(json!({ "merge_fields": fields, "list_id": LIST_ID, "total_items": fields.len() }))
        .into_response()
}

fn plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !email.contains(' ')
                && !local.contains("..")
        }
        None => false,
    }
}

/// Mailchimp's checks of an address and merge fields; `Err` is the detail.
fn check_member(
    email: &str,
    merge_fields: &Map<String, Value>,
    new: bool,
) -> Result<BTreeMap<String, String>, String> {
    if !plausible_email(email) {
        return Err(format!(
            "{email} looks fake or invalid, please enter a real email address."
        ));
    }
    let domain = email.rsplit('@').next().unwrap_or("").to_lowercase();
    if FAKE_DOMAINS.contains(&domain.as_str()) {
        return Err(format!(
            "{email} looks fake or invalid, please enter a real email address."
        ));
    }
    let mut out = BTreeMap::new();
    for (tag, value) in merge_fields {
        let Some(def) = FIELDS.iter().find(|f| f.tag == tag) else {
            return Err(format!(
                "Your merge fields were invalid. {tag} is not a merge field of this audience."
            ));
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        if !text.is_empty() {
            let valid = match def.kind {
                "number" => text.parse::<f64>().is_ok(),
                "dropdown" => def.choices.contains(&text.as_str()),
                _ => text.chars().count() <= 255,
            };
            if !valid {
                return Err(format!(
                    "Your merge fields were invalid. {tag} must be a valid {}.",
                    def.kind
                ));
            }
        }
        out.insert(tag.clone(), text);
    }
    if new
        && let Some(missing) = FIELDS
            .iter()
            .find(|f| f.required && out.get(f.tag).is_none_or(String::is_empty))
    {
        return Err(format!(
            "Your merge fields were invalid. {} must be provided.",
            missing.tag
        ));
    }
    Ok(out)
}

fn member_json(hash: &str, m: &StoredMember) -> Value {
    json!({
        "id": hash, "email_address": m.email, "unique_email_id": &hash[..10], "status": m.status,
        "merge_fields": m.merge_fields, "list_id": LIST_ID,
        "tags": m.tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
    })
}

impl crate::LosesAnswers for MailchimpState {
    fn answers_to_lose(&mut self) -> &mut u32 {
        &mut self.drop_after_apply_left
    }
}

/// `GET /lists/{list_id}`: the audience itself.
async fn list_info(
    State(state): Shared,
    Path(list_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _connection = match admit(&state, &headers, format!("GET /lists/{list_id}"), &list_id).await
    {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let members = state.lock().expect("lock").active();
    axum::Json(json!({
        "id": LIST_ID, "name": "Emulated audience",
        "stats": {"member_count": members},
    }))
    .into_response()
}

/// `GET /lists/{list_id}/members/{hash}`: one member (archived ones too,
/// with their status); 404 for an address the audience never had or
/// forgot.
async fn get_member(
    State(state): Shared,
    Path((list_id, hash)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let _connection = match admit(
        &state,
        &headers,
        format!("GET /lists/{list_id}/members/{hash}"),
        &list_id,
    )
    .await
    {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let s = state.lock().expect("lock");
    match s.members.get(&hash) {
        Some(member) => axum::Json(member_json(&hash, member)).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "Resource Not Found",
            "The requested resource could not be found.",
        ),
    }
}

async fn batch_subscribe(
    State(state): Shared,
    Path(list_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let _connection =
        match admit(&state, &headers, format!("POST /lists/{list_id}"), &list_id).await {
            Ok(c) => c,
            Err(answer) => return answer,
        };
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "JSON Parse Exception",
            "We encountered an unspecified JSON parsing error.",
        );
    };
    let members = body
        .get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if members.len() > 500 {
        return problem(
            StatusCode::BAD_REQUEST,
            "Invalid Resource",
            "Up to 500 members may be added or updated with each API call.",
        );
    }
    let update_existing = body
        .get("update_existing")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (mut new_members, mut updated, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    {
        let mut s = state.lock().expect("lock");
        for member in members {
            let email = member
                .get("email_address")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let status = member
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("subscribed")
                .to_owned();
            let merge = member
                .get("merge_fields")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let tags: BTreeSet<String> = member
                .get("tags")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let key = hash(&email);
            let exists = s.members.get(&key).is_some_and(|m| m.status != "archived");
            if s.forgotten.contains(&key) {
                errors.push(json!({"email_address": email, "error": format!("{email} was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list."), "error_code": "ERROR_GENERIC"}));
                continue;
            }
            if exists && !update_existing {
                errors.push(json!({"email_address": email, "error": format!("{email} is already a list member. Use PUT to insert or update list members."), "error_code": "ERROR_CONTACT_EXISTS"}));
                continue;
            }
            match check_member(&email, &merge, !exists) {
                Err(detail) => errors.push(
                    json!({"email_address": email, "error": detail, "error_code": "ERROR_GENERIC"}),
                ),
                Ok(fields) => {
                    let stored = s.members.entry(key.clone()).or_insert(StoredMember {
                        email: email.clone(),
                        status: status.clone(),
                        merge_fields: BTreeMap::new(),
                        tags: BTreeSet::new(),
                    });
                    if exists {
                        stored.status = status;
                    } else if stored.status == "archived" {
                        stored.status = status;
                    }
                    stored.merge_fields.extend(fields);
                    stored.tags.extend(tags);
                    let answer = member_json(&key, stored);
                    if exists {
                        updated.push(answer)
                    } else {
                        new_members.push(answer)
                    }
                }
            }
        }
    }
    crate::drop_answer_if_due(&state);
    axum::Json(json!({
        "new_members": new_members, "updated_members": updated, "errors": errors,
        "total_created": new_members.len(), "total_updated": updated.len(), "error_count": errors.len(),
    }))
    .into_response()
}

async fn put_member(
    State(state): Shared,
    Path((list_id, key)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let _connection = match admit(
        &state,
        &headers,
        format!("PUT /lists/{list_id}/members/{key}"),
        &list_id,
    )
    .await
    {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let email = body
        .get("email_address")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let merge = body
        .get("merge_fields")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let fault = {
        let mut s = state.lock().expect("lock");
        let nth = s.puts.get(&key).copied().unwrap_or(0);
        s.puts.insert(key.clone(), nth + 1);
        let fault = put_fault(&key, nth, s.flaky_puts_percent);
        if fault.is_some() {
            *s.failed_puts.entry(key.clone()).or_default() += 1;
        }
        fault
    };
    if let Some(PutFault::Unavailable) = fault {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "The server is temporarily unable to service your request. Please try again later.",
        );
    }
    let answer = {
        let mut s = state.lock().expect("lock");
        let new_key = hash(&email);
        let existing = s.members.get(&key).cloned();
        if s.forgotten.contains(&new_key) {
            return problem(
                StatusCode::BAD_REQUEST,
                "Forgotten Email Not Subscribed",
                &format!(
                    "{email} was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list."
                ),
            );
        }
        if new_key != key
            && s.members
                .get(&new_key)
                .is_some_and(|m| m.status != "archived")
        {
            return problem(
                StatusCode::BAD_REQUEST,
                "Member Exists",
                &format!("{email} is already a list member."),
            );
        }
        let fields = match check_member(&email, &merge, existing.is_none()) {
            Ok(fields) => fields,
            Err(detail) => return problem(StatusCode::BAD_REQUEST, "Invalid Resource", &detail),
        };
        let mut member = existing.unwrap_or(StoredMember {
            email: email.clone(),
            status: body
                .get("status_if_new")
                .and_then(Value::as_str)
                .unwrap_or("subscribed")
                .to_owned(),
            merge_fields: BTreeMap::new(),
            tags: BTreeSet::new(),
        });
        if let Some(status) = body.get("status").and_then(Value::as_str) {
            member.status = status.to_owned();
        }
        member.email = email;
        member.merge_fields.extend(fields);
        s.members.remove(&key);
        let answer = member_json(&new_key, &member);
        s.members.insert(new_key, member);
        answer
    };
    if let Some(PutFault::DropAfterApply) = fault {
        std::panic::resume_unwind(Box::new("emulated dropped connection"));
    }
    crate::drop_answer_if_due(&state);
    axum::Json(answer).into_response()
}

async fn archive(
    State(state): Shared,
    Path((list_id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let _connection = match admit(
        &state,
        &headers,
        format!("DELETE /lists/{list_id}/members/{key}"),
        &list_id,
    )
    .await
    {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let mut s = state.lock().expect("lock");
    match s.members.get_mut(&key) {
        Some(member) if member.status != "archived" => {
            member.status = "archived".into();
            StatusCode::NO_CONTENT.into_response()
        }
        _ => problem(
            StatusCode::NOT_FOUND,
            "Resource Not Found",
            "The requested resource could not be found.",
        ),
    }
}

async fn delete_permanent(
    State(state): Shared,
    Path((list_id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let _connection = match admit(
        &state,
        &headers,
        format!("POST /lists/{list_id}/members/{key}/actions/delete-permanent"),
        &list_id,
    )
    .await
    {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let mut s = state.lock().expect("lock");
    if s.members.remove(&key).is_none() {
        return problem(
            StatusCode::NOT_FOUND,
            "Resource Not Found",
            "The requested resource could not be found.",
        );
    }
    s.forgotten.insert(key);
    StatusCode::NO_CONTENT.into_response()
}

async fn tags(
    State(state): Shared,
    Path((list_id, key)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let _connection = match admit(
        &state,
        &headers,
        format!("POST /lists/{list_id}/members/{key}/tags"),
        &list_id,
    )
    .await
    {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let mut s = state.lock().expect("lock");
    if s.tags_unavailable_left > 0 {
        s.tags_unavailable_left -= 1;
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "The server is temporarily unable to service your request. Please try again later.",
        );
    }
    let Some(member) = s.members.get_mut(&key) else {
        return problem(
            StatusCode::NOT_FOUND,
            "Resource Not Found",
            "The requested resource could not be found.",
        );
    };
    for tag in body
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = tag
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if tag.get("status").and_then(Value::as_str) == Some("inactive") {
            member.tags.remove(&name);
        } else {
            member.tags.insert(name);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}
