//! A REST API of users for the templated `http` destination, answering as
//! Slack's Web API does (its documented convention, shared by many APIs):
//! HTTP 200 with `{"ok": true}`, or HTTP 200 with `{"ok": false, "error":
//! "invalid_email"}` when the request is refused, so that only a JSONPath
//! into the answer (`error_path = "$.error"`) tells a failure; a missing
//! or wrong token is `{"ok": false, "error": "not_authed"}` with 401.
//!
//! - `PUT /users/{id}` with `{"email", …}` creates or replaces a user;
//! - `DELETE /users/{id}` removes it (absent already: still ok);
//! - `POST /users.batch` with `{"users": [{"id", "email", …}]}` upserts
//!   them all, or none when one is invalid.
//!
//! Every request is kept, with its method, path, headers and body.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde_json::{Value, json};

pub const TOKEN: &str = "xoxb-test-token-123456";

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

#[derive(Default)]
pub struct ApiState {
    pub users: BTreeMap<String, Value>,
    pub requests: Vec<Request>,
}

pub struct RestApi {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ApiState>>,
}

type Shared = Arc<Mutex<ApiState>>;

impl RestApi {
    pub async fn start() -> RestApi {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/users/{id}", put(put_user).delete(delete_user))
            .route("/users.batch", post(batch))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        RestApi { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut ApiState) -> T) -> T {
        f(&mut self.state.lock().expect("rest api lock"))
    }
}

fn keep(state: &Shared, method: Method, path: String, headers: &HeaderMap, body: &Bytes) {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    state.lock().expect("rest api lock").requests.push(Request {
        method: method.to_string(),
        path,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    });
}

fn refused(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"ok": false, "error": error}))).into_response()
}

fn authed(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn valid(user: &Value) -> Result<(), &'static str> {
    match user.get("email").and_then(Value::as_str) {
        Some(email) if email.contains('@') => Ok(()),
        Some(_) => Err("invalid_email"),
        None => Err("missing_email"),
    }
}

async fn put_user(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    keep(&state, Method::PUT, format!("/users/{id}"), &headers, &body);
    if !authed(&headers) {
        return refused(StatusCode::UNAUTHORIZED, "not_authed");
    }
    let Ok(user) = serde_json::from_slice::<Value>(&body) else {
        return refused(StatusCode::OK, "invalid_json");
    };
    if let Err(error) = valid(&user) {
        return refused(StatusCode::OK, error);
    }
    state.lock().expect("rest api lock").users.insert(id, user);
    Json(json!({"ok": true})).into_response()
}

async fn delete_user(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    keep(
        &state,
        Method::DELETE,
        format!("/users/{id}"),
        &headers,
        &body,
    );
    if !authed(&headers) {
        return refused(StatusCode::UNAUTHORIZED, "not_authed");
    }
    state.lock().expect("rest api lock").users.remove(&id);
    Json(json!({"ok": true})).into_response()
}

async fn batch(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    keep(&state, Method::POST, "/users.batch".into(), &headers, &body);
    if !authed(&headers) {
        return refused(StatusCode::UNAUTHORIZED, "not_authed");
    }
    let users = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("users").and_then(Value::as_array).cloned());
    let Some(users) = users else {
        return refused(StatusCode::OK, "invalid_json");
    };
    for user in &users {
        if let Err(error) = valid(user) {
            return refused(StatusCode::OK, error);
        }
    }
    let mut state = state.lock().expect("rest api lock");
    for user in users {
        let id = match user.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => return refused(StatusCode::OK, "missing_id"),
        };
        state.users.insert(id, user);
    }
    Json(json!({"ok": true})).into_response()
}
