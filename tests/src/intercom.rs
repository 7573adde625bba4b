//! An emulator of Intercom's REST API for contacts, following Intercom's
//! public documentation, not Ebb's code:
//!
//! - `Authorization: Bearer <token>`: another token is a 401 error list
//!   (`unauthorized`, "Access Token Invalid");
//! - `POST /contacts/search` by `external_id` or `email` (`=`);
//! - `POST /contacts` (`role` user or lead): an `external_id` or a user's
//!   `email` already taken is a 409 `conflict` naming the existing
//!   contact's id; a custom attribute the workspace does not have is a 400
//!   `parameter_invalid`;
//! - `PUT /contacts/{id}`, `DELETE /contacts/{id}` (404 `not_found` for a
//!   contact Intercom does not have);
//! - `GET /data_attributes?model=contact`;
//! - errors as `{"type": "error.list", "errors": [{"code", "message"}]}`;
//! - the workspace's rate limit (requests per window, when set): over it,
//!   a 429 with `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//!   `X-RateLimit-Reset` (Unix seconds).
//!
//! Knobs: search lag (new contacts are not searchable, as Intercom's
//! search index trails writes), and apply-then-drop the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};

use crate::rate_window::RateWindow;

pub const TOKEN: &str = "dG9rOmludGVyY29tLXRlc3Q=";

/// The workspace's custom contact data attributes.
pub const CUSTOM_ATTRIBUTES: &[&str] = &["plan", "first_name"];

#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub id: String,
    pub role: String,
    pub fields: Map<String, Value>,
    pub custom: Map<String, Value>,
    /// Not yet in the search index.
    pub unsearchable: bool,
}

impl Contact {
    pub fn text(&self, name: &str) -> String {
        self.fields
            .get(name)
            .or_else(|| self.custom.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn json(&self) -> Value {
        let mut out = self.fields.clone();
        out.insert("type".into(), json!("contact"));
        out.insert("id".into(), json!(self.id));
        out.insert("role".into(), json!(self.role));
        out.insert(
            "custom_attributes".into(),
            Value::Object(self.custom.clone()),
        );
        Value::Object(out)
    }
}

#[derive(Default)]
pub struct IntercomState {
    pub contacts: Vec<Contact>,
    next_id: u64,
    /// Every request: method and path.
    pub requests: Vec<String>,
    /// The workspace's rate limit (answered 429 over it).
    pub rate: RateWindow,
    pub drop_after_apply_left: u32,
    /// New contacts stay out of search results.
    pub search_lag: bool,
}

impl IntercomState {
    pub fn writes(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| !r.starts_with("GET") && !r.contains("/search"))
            .count()
    }

    pub fn by_external_id(&self, id: &str) -> Option<&Contact> {
        self.contacts
            .iter()
            .find(|c| c.fields.get("external_id").and_then(Value::as_str) == Some(id))
    }

    /// Deletes a contact as someone in Intercom's inbox would.
    pub fn delete_by_external_id(&mut self, id: &str) {
        self.contacts
            .retain(|c| c.fields.get("external_id").and_then(Value::as_str) != Some(id));
    }
}

#[derive(Clone)]
pub struct Intercom {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<IntercomState>>,
}

type Shared = State<Arc<Mutex<IntercomState>>>;

impl Intercom {
    pub async fn start() -> Intercom {
        let state = Arc::new(Mutex::new(IntercomState::default()));
        let app = Router::new()
            .route("/contacts", post(create))
            .route("/contacts/search", post(search))
            .route("/contacts/{id}", put(update).delete(delete))
            .route("/data_attributes", get(data_attributes))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        Intercom { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut IntercomState) -> T) -> T {
        f(&mut self.state.lock().expect("intercom emulator lock"))
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "type": "error.list", "request_id": uuid::Uuid::now_v7().to_string(),
            "errors": [{ "code": code, "message": message }],
        })),
    )
        .into_response()
}

fn admit(s: &mut IntercomState, headers: &HeaderMap, what: String) -> Result<(), Box<Response>> {
    s.requests.push(what);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token != Some(TOKEN) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Access Token Invalid",
        )));
    }
    if let Err((limit, resets_in)) = s.rate.admit() {
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
            + resets_in.as_secs().max(1);
        return Err(Box::new(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("x-ratelimit-limit", limit.to_string()),
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", reset.to_string()),
                ],
                axum::Json(json!({"type": "error.list", "errors": [{"code": "rate_limit_exceeded", "message": "Exceeded rate limit"}]})),
            )
                .into_response(),
        ));
    }
    Ok(())
}

/// A contact's standard fields and custom attributes.
type Parts = (Map<String, Value>, Map<String, Value>);

/// Splits a create or update body into standard fields and custom
/// attributes; `Err` is Intercom's answer.
fn read_body(body: &Value) -> Result<Parts, Box<Response>> {
    let Some(object) = body.as_object() else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            "Request body must be an object",
        )));
    };
    let mut fields = Map::new();
    let mut custom = Map::new();
    for (name, value) in object {
        match name.as_str() {
            "role" => {}
            "custom_attributes" => {
                for (attribute, value) in value.as_object().into_iter().flatten() {
                    if !CUSTOM_ATTRIBUTES.contains(&attribute.as_str()) {
                        return Err(Box::new(error(
                            StatusCode::BAD_REQUEST,
                            "parameter_invalid",
                            &format!("Custom attribute '{attribute}' does not exist"),
                        )));
                    }
                    custom.insert(attribute.clone(), value.clone());
                }
            }
            "email" if !value.is_null() && !value.as_str().is_some_and(|e| e.contains('@')) => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "parameter_invalid",
                    "Invalid email",
                )));
            }
            _ => {
                fields.insert(name.clone(), value.clone());
            }
        }
    }
    Ok((fields, custom))
}

impl crate::LosesAnswers for IntercomState {
    fn answers_to_lose(&mut self) -> &mut u32 {
        &mut self.drop_after_apply_left
    }
}

async fn search(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, "POST /contacts/search".into()) {
        return *answer;
    }
    let query: Value = serde_json::from_str(&body).unwrap_or_default();
    let field = query
        .pointer("/query/field")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let value = query.pointer("/query/value").cloned().unwrap_or_default();
    if !matches!(field, "external_id" | "email")
        || query.pointer("/query/operator").and_then(Value::as_str) != Some("=")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            "Unsupported search query",
        );
    }
    let found: Vec<Value> = s
        .contacts
        .iter()
        .filter(|c| !c.unsearchable && c.fields.get(field) == Some(&value))
        .map(Contact::json)
        .collect();
    axum::Json(json!({ "type": "list", "data": found, "total_count": found.len() })).into_response()
}

async fn create(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let created = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(&mut s, &headers, "POST /contacts".into()) {
            return *answer;
        }
        let body: Value = serde_json::from_str(&body).unwrap_or_default();
        let role = body
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user")
            .to_owned();
        if !matches!(role.as_str(), "user" | "lead") {
            return error(StatusCode::BAD_REQUEST, "parameter_invalid", "Invalid role");
        }
        let (fields, custom) = match read_body(&body) {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
        let taken = s.contacts.iter().find(|c| {
            let same = |name| {
                fields
                    .get(name)
                    .is_some_and(|v| !v.is_null() && c.fields.get(name) == Some(v))
            };
            same("external_id") || (role == "user" && c.role == "user" && same("email"))
        });
        if let Some(existing) = taken {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                &format!(
                    "A contact matching those details already exists with id={}",
                    existing.id
                ),
            );
        }
        s.next_id += 1;
        let contact = Contact {
            id: format!("6{:023x}", s.next_id),
            role,
            fields,
            custom,
            unsearchable: s.search_lag,
        };
        let created = contact.json();
        s.contacts.push(contact);
        created
    };
    crate::drop_answer_if_due(&state);
    axum::Json(created).into_response()
}

async fn update(
    State(state): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let updated = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(&mut s, &headers, format!("PUT /contacts/{id}")) {
            return *answer;
        }
        let body: Value = serde_json::from_str(&body).unwrap_or_default();
        let (fields, custom) = match read_body(&body) {
            Ok(parts) => parts,
            Err(answer) => return *answer,
        };
        let Some(contact) = s.contacts.iter_mut().find(|c| c.id == id) else {
            return error(StatusCode::NOT_FOUND, "not_found", "User Not Found");
        };
        contact.fields.extend(fields);
        contact.custom.extend(custom);
        contact.json()
    };
    crate::drop_answer_if_due(&state);
    axum::Json(updated).into_response()
}

async fn delete(State(state): Shared, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, format!("DELETE /contacts/{id}")) {
        return *answer;
    }
    let before = s.contacts.len();
    s.contacts.retain(|c| c.id != id);
    if s.contacts.len() == before {
        return error(StatusCode::NOT_FOUND, "not_found", "User Not Found");
    }
    axum::Json(json!({ "id": id, "object": "contact", "deleted": true })).into_response()
}

async fn data_attributes(State(state): Shared, headers: HeaderMap) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, "GET /data_attributes".into()) {
        return *answer;
    }
    let mut data: Vec<Value> = ["email", "name", "phone", "external_id"]
        .iter()
        .map(|name| json!({"type": "data_attribute", "name": name, "model": "contact", "custom": false, "api_writable": true}))
        .collect();
    data.extend(CUSTOM_ATTRIBUTES.iter().map(|name| {
        json!({"type": "data_attribute", "name": name, "model": "contact", "custom": true, "api_writable": true})
    }));
    axum::Json(json!({ "type": "list", "data": data })).into_response()
}
