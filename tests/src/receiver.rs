//! An emulator of a receiver for Ebb's generic `http` destination, following
//! the request format documented in the README: it validates every record
//! (an `email` must contain `@`) and answers 422 with a JSON error for the
//! whole request if any record is invalid, as typical batch APIs do. Like a
//! careful receiver, it applies each record `idempotency_key` once and drops
//! repeats. Knobs: latency per request, a number of 503 answers (with
//! `Retry-After`), a number of requests that are applied and then lose their
//! response (the connection drops), and a count-only mode for benchmarks.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Default)]
pub struct ReceiverState {
    /// Current records by key.
    pub records: HashMap<String, Value>,
    /// How many times each key was applied (upserts and deletes).
    pub applied: HashMap<String, u32>,
    /// Record idempotency keys already applied.
    pub seen_effects: HashSet<String>,
    /// Records dropped because their idempotency key was already applied.
    pub duplicates_dropped: u32,
    /// Requests without an `Idempotency-Key` header.
    pub requests_without_key: u32,
    /// The next this many valid requests are applied, then the connection
    /// drops before the response is sent.
    pub drop_after_apply_left: u32,
    pub requests: u32,
    pub rejected_requests: u32,
    pub unavailable_left: u32,
    pub latency: Duration,
    /// Keep only counts, not the records (for benchmarks of millions of rows).
    pub count_only: bool,
    /// Records applied in total (upserts plus deletes), also in count-only mode.
    pub applied_total: u64,
    pub last_auth: Option<String>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = Router::new()
            .route("/contacts/batch", post(batch))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/contacts/batch", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut ReceiverState) -> T) -> T {
        f(&mut self.state.lock().expect("receiver lock"))
    }
}

async fn batch(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let latency = {
        let mut s = state.lock().expect("lock");
        s.requests += 1;
        s.last_auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !headers.contains_key("idempotency-key") {
            s.requests_without_key += 1;
        }
        if s.unavailable_left > 0 {
            s.unavailable_left -= 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "1")],
                "overloaded",
            )
                .into_response();
        }
        s.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let Some(records) = body["records"].as_array() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "missing records"})),
        )
            .into_response();
    };
    let mut errors = Vec::new();
    for r in records {
        if r["op"] == "upsert" {
            let email = r["fields"]["email"].as_str().unwrap_or("");
            if !email.contains('@') {
                errors.push(
                    json!({"key": r["key"], "error": format!("invalid email address: {email:?}")}),
                );
            }
        }
    }
    let mut s = state.lock().expect("lock");
    if !errors.is_empty() {
        s.rejected_requests += 1;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"errors": errors})),
        )
            .into_response();
    }
    s.applied_total += records.len() as u64;
    if s.count_only {
        return (StatusCode::OK, Json(json!({"accepted": records.len()}))).into_response();
    }
    for r in records {
        let key = r["key"].as_str().unwrap_or_default().to_owned();
        if let Some(effect) = r["idempotency_key"].as_str()
            && !s.seen_effects.insert(effect.to_owned())
        {
            s.duplicates_dropped += 1;
            continue;
        }
        *s.applied.entry(key.clone()).or_default() += 1;
        if r["op"] == "delete" {
            s.records.remove(&key);
        } else {
            s.records.insert(key, r["fields"].clone());
        }
    }
    if s.drop_after_apply_left > 0 {
        s.drop_after_apply_left -= 1;
        drop(s);
        // Unwinding out of the handler makes hyper drop the connection
        // without a response; `resume_unwind` skips the panic hook's noise.
        std::panic::resume_unwind(Box::new("emulated dropped connection"));
    }
    (StatusCode::OK, Json(json!({"accepted": records.len()}))).into_response()
}
