//! An emulator of Customer.io's Track API (v2 batch, and the region
//! lookup), following Customer.io's public documentation, not Ebb's code:
//!
//! - HTTP Basic auth with the Site ID and Track API key: anything else is a
//!   401 `Unauthorized request`;
//! - `POST /api/v2/batch` with `batch`, a list of entries of at most 32 KB
//!   each, 500 KB in all (more is a 400): `person` entries `identify`
//!   (create or update, the attributes merged; `null` removes one) and
//!   `delete`, identified by `id` or `email`. Entries are applied in order;
//!   one that cannot be is skipped and the answer is a 207 with `errors`
//!   (`batch_index`, `reason`, `field`, `message`); otherwise 200 `{}`.
//!   Identify limits: at most 300 attributes, names of 150 bytes, values
//!   of 1000 bytes;
//! - `GET /api/v1/accounts/region`: the workspace's `url` and `data_center`;
//! - the workspace's rate limit (requests per window, when set): over it,
//!   a 429.
//!
//! Knobs: refusals of given attribute values (reported in `errors`), and
//! apply-then-drop the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::rate_window::RateWindow;

pub const SITE_ID: &str = "site-0a1b2c";
pub const API_KEY: &str = "track-key-3d4e5f";

const MAX_REQUEST_BYTES: usize = 500 * 1024;
const MAX_ENTRY_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, Default)]
pub struct Person {
    pub id: Option<String>,
    pub attributes: Map<String, Value>,
}

impl Person {
    pub fn text(&self, name: &str) -> String {
        self.attributes
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

pub struct CustomerIoState {
    pub people: Vec<Person>,
    /// Every request: method and path.
    pub requests: Vec<String>,
    /// The size in bytes of every batch request body.
    pub batch_sizes: Vec<usize>,
    /// `us` or `eu`.
    pub data_center: String,
    /// The workspace's rate limit (answered 429 over it).
    pub rate: RateWindow,
    pub drop_after_apply_left: u32,
    /// (attribute, value, message): identify entries setting it are refused.
    pub refusals: Vec<(String, Value, String)>,
}

impl Default for CustomerIoState {
    fn default() -> Self {
        CustomerIoState {
            people: Vec::new(),
            requests: Vec::new(),
            batch_sizes: Vec::new(),
            data_center: "us".into(),
            rate: RateWindow::default(),
            drop_after_apply_left: 0,
            refusals: Vec::new(),
        }
    }
}

impl CustomerIoState {
    pub fn writes(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.starts_with("POST"))
            .count()
    }

    pub fn by_id(&self, id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.id.as_deref() == Some(id))
    }

    fn find(&self, identifiers: &Map<String, Value>) -> Option<usize> {
        if let Some(id) = identifiers.get("id").and_then(Value::as_str) {
            return self.people.iter().position(|p| p.id.as_deref() == Some(id));
        }
        let email = identifiers.get("email").and_then(Value::as_str)?;
        self.people.iter().position(|p| {
            p.attributes
                .get("email")
                .and_then(Value::as_str)
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    }
}

#[derive(Clone)]
pub struct CustomerIo {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<CustomerIoState>>,
}

type Shared = State<Arc<Mutex<CustomerIoState>>>;

impl CustomerIo {
    pub async fn start() -> CustomerIo {
        let state = Arc::new(Mutex::new(CustomerIoState::default()));
        let app = Router::new()
            .route("/api/v2/batch", post(batch))
            .route("/api/v1/accounts/region", get(region))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        CustomerIo { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut CustomerIoState) -> T) -> T {
        f(&mut self.state.lock().expect("customer.io emulator lock"))
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let encoded = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(decoded).ok()
}

/// Auth and the rate limit: `Err` is the answer.
fn admit(
    state: &mut CustomerIoState,
    headers: &HeaderMap,
    what: &str,
) -> Result<(), Box<Response>> {
    state.requests.push(what.to_owned());
    if basic_credentials(headers).as_deref() != Some(&format!("{SITE_ID}:{API_KEY}")) {
        return Err(Box::new(
            (StatusCode::UNAUTHORIZED, "Unauthorized request").into_response(),
        ));
    }
    if state.rate.admit().is_err() {
        return Err(Box::new(
            (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"meta": {"error": "rate limit exceeded"}})),
            )
                .into_response(),
        ));
    }
    Ok(())
}

async fn region(State(state): Shared, headers: HeaderMap) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, "GET /api/v1/accounts/region") {
        return *answer;
    }
    let url = if s.data_center == "eu" {
        "https://track-eu.customer.io"
    } else {
        "https://track.customer.io"
    };
    axum::Json(json!({ "url": url, "data_center": s.data_center, "environment_id": 1 }))
        .into_response()
}

fn entry_error(index: usize, reason: &str, field: &str, message: &str) -> Value {
    json!({ "batch_index": index, "reason": reason, "field": field, "message": message })
}

/// Applies one entry; `Err` is its error.
fn apply(s: &mut CustomerIoState, index: usize, entry: &Value) -> Result<(), Value> {
    if entry.to_string().len() > MAX_ENTRY_BYTES {
        return Err(entry_error(
            index,
            "invalid",
            "",
            "entry is larger than 32KB",
        ));
    }
    if entry.get("type").and_then(Value::as_str) != Some("person") {
        return Err(entry_error(index, "invalid", "type", "unsupported type"));
    }
    let identifiers = entry
        .get("identifiers")
        .and_then(Value::as_object)
        .filter(|ids| {
            ["id", "email", "cio_id"].iter().any(|k| {
                ids.get(*k)
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty())
            })
        })
        .ok_or_else(|| {
            entry_error(
                index,
                "required",
                "identifiers",
                "must contain id, email or cio_id",
            )
        })?
        .clone();
    match entry.get("action").and_then(Value::as_str) {
        Some("identify") => {
            let attributes = entry
                .get("attributes")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if attributes.len() > 300 {
                return Err(entry_error(
                    index,
                    "invalid",
                    "attributes",
                    "cannot identify more than 300 attributes in one request",
                ));
            }
            for (name, value) in &attributes {
                if name.len() > 150 {
                    return Err(entry_error(
                        index,
                        "invalid",
                        "attributes",
                        "attribute name cannot be longer than 150 bytes",
                    ));
                }
                let bytes = value
                    .as_str()
                    .map_or_else(|| value.to_string().len(), str::len);
                if bytes > 1000 {
                    return Err(entry_error(
                        index,
                        "invalid",
                        &format!("attributes.{name}"),
                        &format!("value for attribute '{name}' cannot be longer than 1000 bytes"),
                    ));
                }
                if let Some((_, _, message)) =
                    s.refusals.iter().find(|(a, v, _)| a == name && v == value)
                {
                    return Err(entry_error(
                        index,
                        "invalid",
                        &format!("attributes.{name}"),
                        message,
                    ));
                }
            }
            let at = match s.find(&identifiers) {
                Some(at) => at,
                None => {
                    let mut person = Person {
                        id: identifiers
                            .get("id")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        attributes: Map::new(),
                    };
                    if let Some(email) = identifiers.get("email") {
                        person.attributes.insert("email".into(), email.clone());
                    }
                    s.people.push(person);
                    s.people.len() - 1
                }
            };
            let person = &mut s.people[at];
            for (name, value) in attributes {
                if value.is_null() {
                    person.attributes.remove(&name);
                } else {
                    person.attributes.insert(name, value);
                }
            }
            Ok(())
        }
        Some("delete") => {
            if let Some(at) = s.find(&identifiers) {
                s.people.remove(at);
            }
            Ok(())
        }
        _ => Err(entry_error(
            index,
            "invalid",
            "action",
            "unsupported action for type person",
        )),
    }
}

async fn batch(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let answer = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(&mut s, &headers, "POST /api/v2/batch") {
            return *answer;
        }
        s.batch_sizes.push(body.len());
        if body.len() > MAX_REQUEST_BYTES {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"meta": {"error": "request body is larger than 500KB"}})),
            )
                .into_response();
        }
        let Some(entries) = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|b| b.get("batch").and_then(Value::as_array).cloned())
        else {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"errors": [{"reason": "parse_error", "field": "batch", "message": "could not parse the request"}]})),
            )
                .into_response();
        };
        let errors: Vec<Value> = entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| apply(&mut s, index, entry).err())
            .collect();
        if errors.is_empty() {
            (StatusCode::OK, json!({}))
        } else {
            (StatusCode::MULTI_STATUS, json!({ "errors": errors }))
        }
    };
    crate::drop_answer_if_due(&state);
    (answer.0, axum::Json(answer.1)).into_response()
}

impl crate::LosesAnswers for CustomerIoState {
    fn answers_to_lose(&mut self) -> &mut u32 {
        &mut self.drop_after_apply_left
    }
}
