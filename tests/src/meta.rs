//! An emulator of Meta's Graph API for customer-list Custom Audiences,
//! following Meta's public documentation, not Ebb's code:
//!
//! - the access token as a Bearer token or an `access_token` parameter;
//!   anything else is a 400 with error code 190 (`OAuthException`);
//! - `POST /{version}/{audience_id}/users` adds and `DELETE` removes
//!   members: `payload: {schema, data}` (an object or JSON text, in a
//!   JSON body), `schema` one key or a list of Meta's keys (`EMAIL`, `PHONE`,
//!   `FN`, …), `data` one row per person with a value per key, at most
//!   10,000 rows. Values must be SHA-256 hex (lower case) or empty, except
//!   `EXTERN_ID` and `MADID`; a row that is not is counted in
//!   `num_invalid_entries` and shown in `invalid_entry_samples` (value →
//!   reason), the others applied. Answer: `audience_id`, `session_id`,
//!   `num_received`, `num_invalid_entries`, `invalid_entry_samples`;
//! - an audience id it does not have: error 100, subcode 33;
//! - `GET /{version}/{audience_id}`: `id`, `name`, `subtype`;
//! - the ad account's throttling (calls per window, when set): over it,
//!   error 80003 with `X-Business-Use-Case-Usage` naming the minutes
//!   until access is regained.
//!
//! Knobs: hashes Meta counts invalid, the audience's subtype, and
//! apply-then-drop the connection of member requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::rate_window::RateWindow;

pub const TOKEN: &str = "EAAB-system-user-token-9x8y7z";
pub const AUDIENCE_ID: &str = "23851234567890123";

const KEYS: &[&str] = &[
    "EMAIL",
    "PHONE",
    "FN",
    "LN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "COUNTRY",
    "DOBY",
    "DOBM",
    "DOBD",
    "GEN",
    "MADID",
    "EXTERN_ID",
];
const UNHASHED: &[&str] = &["MADID", "EXTERN_ID"];
const MAX_ROWS: usize = 10_000;

/// A member: key → value, the row's non-empty values.
pub type Member = BTreeMap<String, String>;

pub struct MetaState {
    pub members: BTreeSet<Member>,
    /// Every member request: method, and its body.
    pub requests: Vec<(String, String)>,
    /// Hashes Meta counts invalid.
    pub invalid_hashes: Vec<String>,
    pub subtype: String,
    pub rate: RateWindow,
    pub drop_after_apply_left: u32,
}

impl Default for MetaState {
    fn default() -> Self {
        MetaState {
            members: BTreeSet::new(),
            requests: Vec::new(),
            invalid_hashes: Vec::new(),
            subtype: "CUSTOM".into(),
            rate: RateWindow::default(),
            drop_after_apply_left: 0,
        }
    }
}

impl MetaState {
    pub fn writes(&self) -> usize {
        self.requests.len()
    }

    /// The member whose `key` is `value`.
    pub fn member_with(&self, key: &str, value: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.get(key).map(String::as_str) == Some(value))
    }
}

#[derive(Clone)]
pub struct Meta {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MetaState>>,
}

type Shared = State<Arc<Mutex<MetaState>>>;

impl Meta {
    pub async fn start() -> Meta {
        let state = Arc::new(Mutex::new(MetaState::default()));
        let app = Router::new()
            .route(
                "/{version}/{audience}/users",
                axum::routing::post(members).delete(members),
            )
            .route("/{version}/{audience}", get(audience))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        Meta { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut MetaState) -> T) -> T {
        f(&mut self.state.lock().expect("meta emulator lock"))
    }
}

fn graph_error(code: u32, subcode: Option<u32>, kind: &str, message: &str) -> Response {
    let mut error =
        json!({"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEf123"});
    if let Some(subcode) = subcode {
        error["error_subcode"] = json!(subcode);
    }
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": error })),
    )
        .into_response()
}

/// Auth, the audience and the ad account's throttling; `Err` is the answer.
fn admit(
    s: &mut MetaState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    audience: &str,
) -> Result<(), Box<Response>> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = bearer.or(query.get("access_token").map(String::as_str));
    if token != Some(TOKEN) {
        return Err(Box::new(graph_error(
            190,
            None,
            "OAuthException",
            "Invalid OAuth access token - Cannot parse access token",
        )));
    }
    if audience != AUDIENCE_ID {
        return Err(Box::new(graph_error(
            100,
            Some(33),
            "GraphMethodException",
            &format!(
                "Unsupported request. Object with ID '{audience}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
            ),
        )));
    }
    if s.rate.admit().is_err() {
        let mut answer = graph_error(
            80003,
            None,
            "OAuthException",
            "There have been too many calls to this ad-account. Wait a bit and try again.",
        );
        let usage = json!({"1234567890": [{"type": "custom_audience", "call_count": 100, "total_cputime": 10, "total_time": 20, "estimated_time_to_regain_access": 1}]});
        if let Ok(value) = HeaderValue::from_str(&usage.to_string()) {
            answer
                .headers_mut()
                .insert("x-business-use-case-usage", value);
        }
        return Err(Box::new(answer));
    }
    Ok(())
}

fn is_hash(value: &str) -> bool {
    value.len() == 64 && value.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// The payload of a members request's JSON body: an object, or JSON text.
fn payload(body: &str) -> Option<Value> {
    let parsed: Value = serde_json::from_str(body).ok()?;
    match parsed.get("payload")? {
        Value::String(text) => serde_json::from_str(text).ok(),
        other => Some(other.clone()),
    }
}

async fn members(
    State(state): Shared,
    method: Method,
    headers: HeaderMap,
    Path((_version, audience)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let answer = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(&mut s, &headers, &query, &audience) {
            return *answer;
        }
        s.requests.push((method.to_string(), body.clone()));
        let Some(payload) = payload(&body) else {
            return graph_error(
                100,
                None,
                "OAuthException",
                "(#100) The parameter payload is required",
            );
        };
        let schema: Vec<String> = match payload.get("schema") {
            Some(Value::String(key)) => vec![key.clone()],
            Some(Value::Array(keys)) => keys
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        if schema.is_empty() || schema.iter().any(|k| !KEYS.contains(&k.as_str())) {
            return graph_error(
                100,
                None,
                "OAuthException",
                &format!("(#100) Invalid schema: {schema:?}"),
            );
        }
        let rows: Vec<Vec<String>> = payload
            .get("data")
            .and_then(Value::as_array)
            .map(|rows| {
                rows.iter()
                    .map(|row| match row {
                        Value::Array(values) => values
                            .iter()
                            .map(|v| v.as_str().unwrap_or("").to_owned())
                            .collect(),
                        Value::String(one) => vec![one.clone()],
                        _ => Vec::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if rows.len() > MAX_ROWS {
            return graph_error(
                100,
                None,
                "OAuthException",
                "(#100) A request can add or remove at most 10000 users",
            );
        }
        if rows.iter().any(|row| row.len() != schema.len()) {
            return graph_error(
                100,
                None,
                "OAuthException",
                "(#100) Each row of data must have one value per key of the schema",
            );
        }
        let mut samples = serde_json::Map::new();
        let mut invalid = 0;
        for row in &rows {
            let member: Member = schema
                .iter()
                .zip(row)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let bad = member.iter().find(|(k, v)| {
                (!UNHASHED.contains(&k.as_str()) && !is_hash(v)) || s.invalid_hashes.contains(v)
            });
            if member.is_empty() || bad.is_some() {
                invalid += 1;
                let (value, reason) = match bad {
                    Some((k, v)) if !UNHASHED.contains(&k.as_str()) && !is_hash(v) => {
                        (v.clone(), format!("{k} is not a SHA-256 hash"))
                    }
                    Some((k, v)) => (v.clone(), format!("{k} could not be matched")),
                    None => (String::new(), "the row is empty".to_owned()),
                };
                samples.insert(value, json!(reason));
                continue;
            }
            if method == Method::DELETE {
                s.members.remove(&member);
            } else {
                s.members.insert(member);
            }
        }
        json!({
            "audience_id": audience,
            "session_id": "7341922352",
            "num_received": rows.len(),
            "num_invalid_entries": invalid,
            "invalid_entry_samples": samples,
        })
    };
    crate::drop_answer_if_due(&state);
    axum::Json(answer).into_response()
}

async fn audience(
    State(state): Shared,
    headers: HeaderMap,
    Path((_version, audience)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, &query, &audience) {
        return *answer;
    }
    axum::Json(json!({
        "id": audience,
        "name": "Warehouse buyers",
        "subtype": s.subtype,
        "operation_status": {"code": 200, "description": "Normal"},
    }))
    .into_response()
}

impl crate::LosesAnswers for MetaState {
    fn answers_to_lose(&mut self) -> &mut u32 {
        &mut self.drop_after_apply_left
    }
}
