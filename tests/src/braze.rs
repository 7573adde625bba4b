//! An emulator of Braze's REST API for user profiles, following Braze's
//! public documentation, not Ebb's code:
//!
//! - `Authorization: Bearer <REST API key>`: another key is a 401
//!   `{"message": "Invalid API key"}`;
//! - `POST /users/track` with `attributes` (at most 75 objects; more, or
//!   none at all, is a 400 with a `message`): each object names its profile
//!   by `external_id`, `user_alias` (`alias_name` + `alias_label`), `braze_id`
//!   or `email`, and writes the other keys as attributes (`null` removes
//!   one). `_update_existing_only` (default `true` for objects without an
//!   `external_id`) leaves missing profiles uncreated. An object Braze
//!   cannot take (no identifier, an invalid email) is skipped and listed in
//!   the 201 answer's `errors` (`type`, `input_array`, `index`): a partial
//!   success;
//! - `POST /users/delete` with one kind of identifier (`external_ids`,
//!   `user_aliases`, `braze_ids`, `email_addresses`), at most 50: 201
//!   `{"deleted": n, "message": "success"}`;
//! - the workspace's rate limit (requests per window, when set): over it, a
//!   429 with `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//!   `X-RateLimit-Reset` (Unix seconds).
//!
//! Knobs: refusals of given attribute values (a workspace's own rules, as
//! Braze reports them in `errors`), 429s on the next requests, and
//! apply-then-drop the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use crate::rate_window::RateWindow;

pub const API_KEY: &str = "braze-rest-key-0123456789";

/// `/users/track` takes at most 75 attribute objects; `/users/delete` 50
/// identifiers.
const MAX_ATTRIBUTES: usize = 75;
const MAX_DELETES: usize = 50;

#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub external_id: Option<String>,
    /// (label, name)
    pub alias: Option<(String, String)>,
    pub attributes: Map<String, Value>,
}

impl Profile {
    pub fn text(&self, name: &str) -> String {
        self.attributes
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Default)]
pub struct BrazeState {
    pub profiles: Vec<Profile>,
    /// Every request: method and path.
    pub requests: Vec<String>,
    /// Every `/users/track` body received.
    pub track_bodies: Vec<Value>,
    /// Every `/users/delete` body received.
    pub delete_bodies: Vec<Value>,
    /// The workspace's rate limit (answered 429 over it).
    pub rate: RateWindow,
    /// The next this many requests are answered 429 whatever the rate.
    pub throttle_next: u32,
    /// The next this many writes are applied, then the connection drops.
    pub drop_after_apply_left: u32,
    /// (attribute, value, Braze's message): objects setting it are skipped.
    pub refusals: Vec<(String, Value, String)>,
}

impl BrazeState {
    pub fn writes(&self) -> usize {
        self.requests.len()
    }

    pub fn by_external_id(&self, id: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.external_id.as_deref() == Some(id))
    }

    fn find(&self, object: &Map<String, Value>) -> Option<usize> {
        if let Some(id) = object.get("external_id").and_then(Value::as_str) {
            return self
                .profiles
                .iter()
                .position(|p| p.external_id.as_deref() == Some(id));
        }
        if let Some(alias) = object.get("user_alias") {
            let key = alias_key(alias)?;
            return self
                .profiles
                .iter()
                .position(|p| p.alias.as_ref() == Some(&key));
        }
        if let Some(email) = object.get("email").and_then(Value::as_str) {
            return self.profiles.iter().position(|p| {
                p.attributes
                    .get("email")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            });
        }
        None
    }
}

fn alias_key(alias: &Value) -> Option<(String, String)> {
    Some((
        alias.get("alias_label")?.as_str()?.to_owned(),
        alias.get("alias_name")?.as_str()?.to_owned(),
    ))
}

#[derive(Clone)]
pub struct Braze {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<BrazeState>>,
}

type Shared = State<Arc<Mutex<BrazeState>>>;

impl Braze {
    pub async fn start() -> Braze {
        let state = Arc::new(Mutex::new(BrazeState::default()));
        let app = Router::new()
            .route("/users/track", post(track))
            .route("/users/delete", post(delete))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        Braze { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut BrazeState) -> T) -> T {
        f(&mut self.state.lock().expect("braze emulator lock"))
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "message": text }))).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Auth and the rate limit: `Err` is the answer.
fn admit(state: &mut BrazeState, headers: &HeaderMap, what: &str) -> Result<(), Box<Response>> {
    state.requests.push(what.to_owned());
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if key != Some(API_KEY) {
        return Err(Box::new(message(
            StatusCode::UNAUTHORIZED,
            "Invalid API key",
        )));
    }
    let throttled = |limit: u32, reset_in: Duration| {
        let reset = unix_now() + reset_in.as_secs().max(1);
        (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("x-ratelimit-limit", limit.to_string()),
                ("x-ratelimit-remaining", "0".to_owned()),
                ("x-ratelimit-reset", reset.to_string()),
            ],
            axum::Json(json!({ "message": "Rate limit exceeded" })),
        )
            .into_response()
    };
    if state.throttle_next > 0 {
        state.throttle_next -= 1;
        return Err(Box::new(throttled(0, Duration::from_secs(1))));
    }
    if let Err((limit, resets_in)) = state.rate.admit() {
        return Err(Box::new(throttled(limit, resets_in)));
    }
    Ok(())
}

fn plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => !local.is_empty() && domain.contains('.') && !email.contains(' '),
        None => false,
    }
}

/// Why Braze skips an object, if it does.
fn skip_reason(state: &BrazeState, object: &Map<String, Value>) -> Option<String> {
    let named = ["external_id", "user_alias", "braze_id", "email"]
        .iter()
        .any(|k| object.contains_key(*k));
    if !named {
        return Some("'external_id', 'braze_id', 'user_alias', or 'email' is required".to_owned());
    }
    if let Some(email) = object.get("email")
        && !email.is_null()
        && !email.as_str().is_some_and(plausible_email)
    {
        return Some(format!("Invalid 'email' value {email}"));
    }
    state
        .refusals
        .iter()
        .find(|(attribute, value, _)| object.get(attribute) == Some(value))
        .map(|(_, _, message)| message.clone())
}

impl crate::LosesAnswers for BrazeState {
    fn answers_to_lose(&mut self) -> &mut u32 {
        &mut self.drop_after_apply_left
    }
}

async fn track(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let answer = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(&mut s, &headers, "POST /users/track") {
            return *answer;
        }
        let Ok(body) = serde_json::from_str::<Value>(&body) else {
            return message(StatusCode::BAD_REQUEST, "Invalid JSON in request body");
        };
        s.track_bodies.push(body.clone());
        let attributes = body
            .get("attributes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if attributes.is_empty() {
            return message(
                StatusCode::BAD_REQUEST,
                "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.",
            );
        }
        if attributes.len() > MAX_ATTRIBUTES {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("Too many attributes objects: at most {MAX_ATTRIBUTES} per request"),
            );
        }
        let mut errors = Vec::new();
        let mut processed = 0;
        for (index, object) in attributes.iter().enumerate() {
            let Some(object) = object.as_object() else {
                errors.push(json!({"type": "attributes objects must be objects", "input_array": "attributes", "index": index}));
                continue;
            };
            if let Some(reason) = skip_reason(&s, object) {
                errors.push(json!({"type": reason, "input_array": "attributes", "index": index}));
                continue;
            }
            processed += 1;
            let existing = s.find(object);
            let update_only = object
                .get("_update_existing_only")
                .and_then(Value::as_bool)
                .unwrap_or(!object.contains_key("external_id"));
            let at = match existing {
                Some(at) => at,
                None if update_only => continue,
                None => {
                    s.profiles.push(Profile {
                        external_id: object
                            .get("external_id")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        alias: object.get("user_alias").and_then(alias_key),
                        attributes: Map::new(),
                    });
                    s.profiles.len() - 1
                }
            };
            let profile = &mut s.profiles[at];
            for (name, value) in object {
                if matches!(
                    name.as_str(),
                    "external_id" | "user_alias" | "braze_id" | "_update_existing_only"
                ) {
                    continue;
                }
                if value.is_null() {
                    profile.attributes.remove(name);
                } else {
                    profile.attributes.insert(name.clone(), value.clone());
                }
            }
        }
        let mut answer = json!({ "message": "success", "attributes_processed": processed });
        if !errors.is_empty() {
            answer["errors"] = Value::Array(errors);
        }
        answer
    };
    crate::drop_answer_if_due(&state);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn delete(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let deleted = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(&mut s, &headers, "POST /users/delete") {
            return *answer;
        }
        let Ok(body) = serde_json::from_str::<Value>(&body) else {
            return message(StatusCode::BAD_REQUEST, "Invalid JSON in request body");
        };
        s.delete_bodies.push(body.clone());
        let kinds: Vec<(&str, &Vec<Value>)> = [
            "external_ids",
            "user_aliases",
            "braze_ids",
            "email_addresses",
        ]
        .iter()
        .filter_map(|k| body.get(*k).and_then(Value::as_array).map(|v| (*k, v)))
        .collect();
        let [(kind, identifiers)] = kinds.as_slice() else {
            return message(
                StatusCode::BAD_REQUEST,
                "Exactly one of 'external_ids', 'user_aliases', 'braze_ids' or 'email_addresses' must be provided",
            );
        };
        if identifiers.len() > MAX_DELETES {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("At most {MAX_DELETES} identifiers may be deleted per request"),
            );
        }
        let before = s.profiles.len();
        for identifier in identifiers.iter() {
            s.profiles.retain(|p| match *kind {
                "external_ids" => p.external_id.as_deref() != identifier.as_str(),
                "user_aliases" => p.alias != alias_key(identifier),
                "email_addresses" => {
                    p.attributes.get("email").and_then(Value::as_str) != identifier.as_str()
                }
                _ => true,
            });
        }
        before - s.profiles.len()
    };
    crate::drop_answer_if_due(&state);
    (
        StatusCode::CREATED,
        axum::Json(json!({ "deleted": deleted, "message": "success" })),
    )
        .into_response()
}
