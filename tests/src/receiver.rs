//! An emulator of a receiver for Ebb's generic `http` destination, following
//! the request format documented in the README: it validates every record
//! (an `email` must contain `@`) and answers 422 with a JSON error for the
//! whole request if any record is invalid, as typical batch APIs do. Like a
//! careful receiver, it applies each record `idempotency_key` once and drops
//! repeats. Knobs: latency per request, a number of 503 answers (with
//! `Retry-After`), a number of requests that are applied and then lose their
//! response (the connection drops), and a count-only mode for benchmarks.
//!
//! Like a SaaS API it can enforce limits per account: a cap on requests in
//! flight and a rolling-window rate (e.g. HubSpot's 100 requests per 10 s).
//! A request over a limit is a *violation*: it is counted and answered 429
//! with `Retry-After`, as the vendors do.

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
    /// Requests in flight allowed at once (None: no cap).
    pub concurrency_cap: Option<u32>,
    /// At most this many requests in any window of this length.
    pub rate_window: Option<(usize, Duration)>,
    /// The next this many requests are answered 429 with `Retry-After: 1`.
    pub throttle_left: u32,
    /// Until then, every request is answered 429 with `Retry-After` of
    /// this many seconds (a destination that throttles for minutes).
    pub throttle_until: Option<(std::time::Instant, u64)>,
    /// Requests answered 429 because of `throttle_until`.
    pub throttled_answers: u32,
    /// A struggling server: above this many requests in flight, answer 503.
    pub overloaded_above: Option<u32>,
    pub overloaded_answers: u32,
    pub in_flight: u32,
    pub max_in_flight: u32,
    /// Arrival times of requests within the limits.
    pub arrivals: Vec<std::time::Instant>,
    /// Requests over a limit (answered 429).
    pub violations: u32,
    /// Keep only counts, not the records (for benchmarks of millions of rows).
    pub count_only: bool,
    /// Records applied in total (upserts plus deletes), also in count-only mode.
    pub applied_total: u64,
    pub last_auth: Option<String>,
    /// Answer every batch with this redirect (status, `Location`), as a
    /// receiver that moved does.
    pub redirect: Option<(u16, String)>,
    /// Echo the request's headers in error bodies, as some receivers do.
    pub echo_headers: bool,
    /// Requests that reached `/elsewhere` (where a redirect points): method
    /// and headers.
    pub elsewhere: Vec<(String, Vec<(String, String)>)>,
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
            .route("/elsewhere", axum::routing::any(elsewhere))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
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
    let _in_flight = InFlight::enter(&state);
    let latency = {
        let mut s = state.lock().expect("lock");
        s.requests += 1;
        let now = std::time::Instant::now();
        let over_concurrency = s.concurrency_cap.is_some_and(|cap| s.in_flight > cap);
        let over_rate = s.rate_window.is_some_and(|(limit, window)| {
            let recent = s
                .arrivals
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .count();
            recent >= limit
        });
        if over_concurrency || over_rate {
            s.violations += 1;
            return rate_limited();
        }
        if s.overloaded_above.is_some_and(|n| s.in_flight > n) {
            s.overloaded_answers += 1;
            return (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response();
        }
        s.arrivals.push(now);
        if let Some((until, retry_after)) = s.throttle_until
            && now < until
        {
            s.throttled_answers += 1;
            return rate_limited_for(retry_after);
        }
        if s.throttle_left > 0 {
            s.throttle_left -= 1;
            return rate_limited();
        }
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
    if let Some((status, location)) = state.lock().expect("lock").redirect.clone() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        return (status, [("location", location)], "moved").into_response();
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
        let mut body = json!({"errors": errors});
        if s.echo_headers {
            body["request_headers"] = headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
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

/// Where a redirect points: records what arrived, answers 200 to anything.
async fn elsewhere(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    state
        .lock()
        .expect("lock")
        .elsewhere
        .push((method.to_string(), headers));
    (StatusCode::OK, Json(json!({"ok": true}))).into_response()
}

/// A 429 as rate-limited APIs send it (this body is HubSpot's).
fn rate_limited() -> Response {
    rate_limited_for(1)
}

fn rate_limited_for(retry_after_secs: u64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [("retry-after", retry_after_secs.to_string())],
        Json(json!({"status": "error", "category": "RATE_LIMITS", "message": "You have reached your rate limit."})),
    )
        .into_response()
}

/// Counts a request in flight for as long as its handler runs.
struct InFlight(Arc<Mutex<ReceiverState>>);

impl InFlight {
    fn enter(state: &Arc<Mutex<ReceiverState>>) -> InFlight {
        let mut s = state.lock().expect("lock");
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.in_flight -= 1;
        }
    }
}
