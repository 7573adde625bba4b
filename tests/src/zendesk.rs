//! An emulator of Zendesk's Support API (users, organizations, background
//! jobs), following Zendesk's public documentation, not Ebb's code:
//!
//! - auth: HTTP Basic `{email}/token:{api_token}` or an OAuth Bearer
//!   token; anything else is a 401 `{"error": "Couldn't authenticate you"}`;
//! - every answer carries `X-Rate-Limit` (the account's requests a minute)
//!   and `X-Rate-Limit-Remaining`; over the limit (when set), a 429 with
//!   `Retry-After` in seconds;
//! - `POST /api/v2/users/create_or_update_many`: at most 100 users; queues
//!   a background job and answers its `job_status`. The job creates each
//!   user, or updates the one its `external_id` (else its `email`) names;
//!   its `results` follow the order of the users sent: `{"id", "status":
//!   "Created" | "Updated", "email", "external_id"}` or, for a user it
//!   could not write, `{"id": <index>, "error", "details", "status":
//!   "Failed"}` (a malformed email, an email another user has, a new user
//!   without a name);
//! - `DELETE /api/v2/{users,organizations}/destroy_many?ids=…`: at most
//!   100 ids, a job whose results are `{"id", "action": "delete",
//!   "success", "status"}` (users are soft-deleted: no longer found);
//! - `GET /api/v2/job_statuses/{id}`: `queued` until the job has run (a
//!   delay after it was queued), then `completed` with its results. Jobs
//!   run whether or not anyone polls them; an account has at most 30
//!   queued jobs (more: 429 `TooManyJobs`);
//! - `POST /api/v2/organizations/create_or_update`: creates (201) or
//!   updates (200) the organization its `id` or `external_id` names;
//!   names are unique (422 `RecordInvalid`, `DuplicateValue`);
//! - `GET /api/v2/users/me`, `GET /api/v2/user_fields`,
//!   `GET /api/v2/organization_fields`.
//!
//! Knobs: the job delay, the credentials' role, the custom fields, and
//! apply-then-drop the connection of write requests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Map, Value, json};

use crate::rate_window::RateWindow;

pub const EMAIL: &str = "ops@acme.example";
pub const API_TOKEN: &str = "zd-token-8f7e6d";
pub const OAUTH_TOKEN: &str = "zd-oauth-1a2b3c";

const MAX_BULK: usize = 100;
const MAX_QUEUED_JOBS: usize = 30;
const USER_FIELDS: &[&str] = &[
    "name",
    "email",
    "external_id",
    "alias",
    "details",
    "notes",
    "phone",
    "shared_phone_number",
    "role",
    "custom_role_id",
    "organization_id",
    "default_group_id",
    "locale",
    "locale_id",
    "time_zone",
    "iana_time_zone",
    "tags",
    "signature",
    "verified",
    "moderator",
    "ticket_restriction",
    "only_private_comments",
    "restricted_agent",
    "suspended",
    "remote_photo_url",
];

/// A user or an organization.
#[derive(Debug, Clone, Default)]
pub struct Entity {
    pub id: u64,
    /// Top-level properties.
    pub properties: Map<String, Value>,
    /// `user_fields` or `organization_fields`.
    pub custom: Map<String, Value>,
    pub deleted: bool,
}

impl Entity {
    pub fn text(&self, name: &str) -> String {
        match self.properties.get(name).or_else(|| self.custom.get(name)) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }
}

enum Work {
    Users(Vec<Value>),
    Destroy { organizations: bool, ids: Vec<u64> },
}

struct Job {
    id: String,
    queued_at: Instant,
    work: Option<Work>,
    total: usize,
    results: Option<Vec<Value>>,
}

pub struct ZendeskState {
    pub users: Vec<Entity>,
    pub organizations: Vec<Entity>,
    /// Every request: method and path.
    pub requests: Vec<String>,
    /// The number of users in each `create_or_update_many`.
    pub bulk_sizes: Vec<usize>,
    /// How long a job stays queued.
    pub job_delay: Duration,
    /// Job status polls.
    pub polls: usize,
    /// The role of the credentials' user.
    pub role: String,
    /// The account's requests a minute, in `X-Rate-Limit`.
    pub account_limit: u32,
    /// The limit enforced (answered 429 over it).
    pub rate: RateWindow,
    /// Keys of the account's custom user and organization fields.
    pub user_field_keys: Vec<String>,
    pub organization_field_keys: Vec<String>,
    pub drop_after_apply_left: u32,
    jobs: Vec<Job>,
    next_id: u64,
}

impl Default for ZendeskState {
    fn default() -> Self {
        ZendeskState {
            users: Vec::new(),
            organizations: Vec::new(),
            requests: Vec::new(),
            bulk_sizes: Vec::new(),
            job_delay: Duration::from_millis(300),
            polls: 0,
            role: "admin".into(),
            account_limit: 700,
            rate: RateWindow::default(),
            user_field_keys: Vec::new(),
            organization_field_keys: Vec::new(),
            drop_after_apply_left: 0,
            jobs: Vec::new(),
            next_id: 360_000_000_001,
        }
    }
}

impl ZendeskState {
    /// Requests that change data: bulk requests and organization writes.
    pub fn writes(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.starts_with("POST") || r.starts_with("DELETE"))
            .count()
    }

    pub fn active_users(&self) -> impl Iterator<Item = &Entity> {
        self.users.iter().filter(|u| !u.deleted)
    }

    pub fn active_organizations(&self) -> impl Iterator<Item = &Entity> {
        self.organizations.iter().filter(|o| !o.deleted)
    }

    pub fn user(&self, external_id: &str) -> Option<&Entity> {
        self.active_users()
            .find(|u| u.text("external_id") == external_id)
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Runs every job whose delay has passed, in the order queued.
    fn run_due_jobs(&mut self) {
        let due: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| {
                self.jobs[i].work.is_some() && self.jobs[i].queued_at.elapsed() >= self.job_delay
            })
            .collect();
        for i in due {
            let Some(work) = self.jobs[i].work.take() else {
                continue;
            };
            let results = match work {
                Work::Users(users) => users
                    .iter()
                    .enumerate()
                    .map(|(index, user)| self.create_or_update_user(index, user))
                    .collect(),
                Work::Destroy { organizations, ids } => ids
                    .iter()
                    .map(|id| self.destroy(organizations, *id))
                    .collect(),
            };
            self.jobs[i].results = Some(results);
        }
    }

    fn create_or_update_user(&mut self, index: usize, user: &Value) -> Value {
        let failed = |details: String| json!({"id": index, "error": "UserUpdateError", "details": details, "status": "Failed"});
        let Some(user) = user.as_object() else {
            return failed("user is not an object".into());
        };
        let text = |name: &str| user.get(name).and_then(Value::as_str).map(str::to_owned);
        let external_id = text("external_id");
        let email = text("email");
        if let Some(email) = &email
            && !looks_like_email(email)
        {
            return failed(format!("Email: {email} is not properly formatted"));
        }
        if let Some(role) = text("role")
            && !["end-user", "agent", "admin"].contains(&role.as_str())
        {
            return failed(format!("Role: {role} is not a valid role"));
        }
        let found = match (&external_id, &email) {
            (Some(x), _) => self
                .users
                .iter()
                .position(|u| !u.deleted && u.text("external_id") == *x),
            (None, Some(e)) => self
                .users
                .iter()
                .position(|u| !u.deleted && u.text("email").eq_ignore_ascii_case(e)),
            (None, None) => return failed("External ID or email is required".into()),
        };
        if let Some(email) = &email
            && self.users.iter().enumerate().any(|(i, u)| {
                Some(i) != found && !u.deleted && u.text("email").eq_ignore_ascii_case(email)
            })
        {
            return failed(format!(
                "Email: {email} is already being used by another user"
            ));
        }
        let (at, status) = match found {
            Some(at) => (at, "Updated"),
            None => {
                if text("name").is_none_or(|n| n.trim().is_empty()) {
                    return failed("Name: is too short (minimum one character)".into());
                }
                let id = self.new_id();
                self.users.push(Entity {
                    id,
                    ..Entity::default()
                });
                (self.users.len() - 1, "Created")
            }
        };
        let entity = &mut self.users[at];
        for (name, value) in user {
            if name == "user_fields" {
                if let Some(fields) = value.as_object() {
                    for (key, value) in fields {
                        entity.custom.insert(key.clone(), value.clone());
                    }
                }
            } else if USER_FIELDS.contains(&name.as_str()) {
                if value.is_null() {
                    entity.properties.remove(name);
                } else {
                    entity.properties.insert(name.clone(), value.clone());
                }
            }
        }
        json!({
            "id": entity.id,
            "status": status,
            "email": entity.properties.get("email"),
            "external_id": entity.properties.get("external_id"),
        })
    }

    fn destroy(&mut self, organizations: bool, id: u64) -> Value {
        let list = if organizations {
            &mut self.organizations
        } else {
            &mut self.users
        };
        match list.iter_mut().find(|e| e.id == id && !e.deleted) {
            Some(entity) => {
                entity.deleted = true;
                json!({"id": id, "action": "delete", "success": true, "status": "Deleted"})
            }
            None => json!({
                "id": id, "action": "delete", "success": false, "status": "Failed",
                "error": "RecordNotFound", "details": format!("Not found: {id}")
            }),
        }
    }

    fn job_status(&self, job: &Job) -> Value {
        let (status, progress) = match &job.results {
            Some(_) => ("completed", job.total),
            None => ("queued", 0),
        };
        json!({"job_status": {
            "id": job.id,
            "url": format!("/api/v2/job_statuses/{}.json", job.id),
            "total": job.total,
            "progress": progress,
            "status": status,
            "message": if status == "completed" { Value::from("Completed") } else { Value::Null },
            "results": job.results,
        }})
    }
}

fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !text.contains(char::is_whitespace)
        }
        None => false,
    }
}

#[derive(Clone)]
pub struct Zendesk {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ZendeskState>>,
}

type Shared = State<Arc<Mutex<ZendeskState>>>;

impl Zendesk {
    pub async fn start() -> Zendesk {
        let state = Arc::new(Mutex::new(ZendeskState::default()));
        let app = Router::new()
            .route(
                "/api/v2/users/create_or_update_many",
                post(create_or_update_many),
            )
            .route("/api/v2/users/destroy_many", delete(destroy_users))
            .route(
                "/api/v2/organizations/destroy_many",
                delete(destroy_organizations),
            )
            .route(
                "/api/v2/organizations/create_or_update",
                post(create_or_update_organization),
            )
            .route("/api/v2/job_statuses/{id}", get(job_status))
            .route("/api/v2/users/me", get(me))
            .route("/api/v2/user_fields", get(user_fields))
            .route("/api/v2/organization_fields", get(organization_fields))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        Zendesk { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state, with every job whose delay has passed run first.
    pub fn with<T>(&self, f: impl FnOnce(&mut ZendeskState) -> T) -> T {
        let mut s = self.state.lock().expect("zendesk emulator lock");
        s.run_due_jobs();
        f(&mut s)
    }
}

fn authenticated(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if let Some(token) = value.strip_prefix("Bearer ") {
        return token == OAUTH_TOKEN;
    }
    value
        .strip_prefix("Basic ")
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .is_some_and(|credentials| credentials == format!("{EMAIL}/token:{API_TOKEN}"))
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Auth, the rate limit and due jobs; `Err` is the answer.
fn admit(state: &mut ZendeskState, headers: &HeaderMap, what: String) -> Result<(), Box<Response>> {
    state.requests.push(what);
    state.run_due_jobs();
    if !authenticated(headers) {
        return Err(Box::new(json_answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "Couldn't authenticate you"}),
        )));
    }
    if let Err((_, resets_in)) = state.rate.admit() {
        let mut answer = json_answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "APIRateLimitExceeded", "description": "Number of allowed API requests per minute exceeded"}),
        );
        let secs = resets_in.as_secs_f64().ceil().max(1.0) as u64;
        answer
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        return Err(Box::new(answer));
    }
    Ok(())
}

/// Adds the rate-limit headers Zendesk sends with every answer.
fn with_limits(state: &ZendeskState, mut answer: Response) -> Response {
    let headers = answer.headers_mut();
    headers.insert("x-rate-limit", HeaderValue::from(state.account_limit));
    headers.insert(
        "x-rate-limit-remaining",
        HeaderValue::from(state.account_limit.saturating_sub(1)),
    );
    answer
}

impl crate::LosesAnswers for ZendeskState {
    fn answers_to_lose(&mut self) -> &mut u32 {
        &mut self.drop_after_apply_left
    }
}

/// Queues a job, or answers why not.
fn queue(s: &mut ZendeskState, work: Work, total: usize) -> Response {
    let queued = s.jobs.iter().filter(|j| j.results.is_none()).count();
    if queued >= MAX_QUEUED_JOBS {
        return json_answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "TooManyJobs", "description": "Number of allowed queued jobs exceeded"}),
        );
    }
    let id = format!("{:032x}", s.new_id());
    s.jobs.push(Job {
        id: id.clone(),
        queued_at: Instant::now(),
        work: Some(work),
        total,
        results: None,
    });
    let job = s.jobs.last().expect("just pushed");
    json_answer(StatusCode::OK, s.job_status(job))
}

async fn create_or_update_many(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let answer = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(&mut s, &headers, "POST /users/create_or_update_many".into()) {
            return with_limits(&s, *answer);
        }
        let users = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|b| b.get("users").and_then(Value::as_array).cloned());
        let answer = match users {
            None => json_answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "InvalidValue", "description": "users: parameter is required and must be a list"}),
            ),
            Some(users) if users.len() > MAX_BULK => json_answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "TooManyValues", "description": format!("users: a maximum of {MAX_BULK} users may be sent at once")}),
            ),
            Some(users) => {
                s.bulk_sizes.push(users.len());
                let total = users.len();
                queue(&mut s, Work::Users(users), total)
            }
        };
        with_limits(&s, answer)
    };
    crate::drop_answer_if_due(&state);
    answer
}

async fn destroy(
    state: Arc<Mutex<ZendeskState>>,
    headers: HeaderMap,
    organizations: bool,
    ids: Option<String>,
) -> Response {
    let answer = {
        let mut s = state.lock().expect("lock");
        let what = if organizations {
            "organizations"
        } else {
            "users"
        };
        if let Err(answer) = admit(&mut s, &headers, format!("DELETE /{what}/destroy_many")) {
            return with_limits(&s, *answer);
        }
        let ids: Option<Vec<u64>> = ids
            .unwrap_or_default()
            .split(',')
            .filter(|id| !id.is_empty())
            .map(|id| id.trim().parse().ok())
            .collect();
        let answer = match ids {
            Some(ids) if !ids.is_empty() && ids.len() <= MAX_BULK => {
                let total = ids.len();
                queue(&mut s, Work::Destroy { organizations, ids }, total)
            }
            _ => json_answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "InvalidValue", "description": format!("ids: give 1 to {MAX_BULK} comma-separated ids")}),
            ),
        };
        with_limits(&s, answer)
    };
    crate::drop_answer_if_due(&state);
    answer
}

async fn destroy_users(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    destroy(state, headers, false, query.get("ids").cloned()).await
}

async fn destroy_organizations(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    destroy(state, headers, true, query.get("ids").cloned()).await
}

async fn job_status(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, "GET /job_statuses".into()) {
        return with_limits(&s, *answer);
    }
    s.polls += 1;
    let id = id.trim_end_matches(".json");
    let answer = match s.jobs.iter().find(|j| j.id == id) {
        Some(job) => json_answer(StatusCode::OK, s.job_status(job)),
        None => json_answer(
            StatusCode::NOT_FOUND,
            json!({"error": "RecordNotFound", "description": "Not found"}),
        ),
    };
    with_limits(&s, answer)
}

fn record_invalid(field: &str, description: String, error: &str) -> Response {
    json_answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": "RecordInvalid", "description": "Record validation errors",
               "details": { field: [{"description": description, "error": error}] }}),
    )
}

async fn create_or_update_organization(
    State(state): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    let answer = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(
            &mut s,
            &headers,
            "POST /organizations/create_or_update".into(),
        ) {
            return with_limits(&s, *answer);
        }
        let organization = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|b| b.get("organization").and_then(Value::as_object).cloned());
        let answer = match organization {
            None => json_answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "InvalidValue", "description": "organization: parameter is required"}),
            ),
            Some(organization) => write_organization(&mut s, &organization),
        };
        with_limits(&s, answer)
    };
    crate::drop_answer_if_due(&state);
    answer
}

fn write_organization(s: &mut ZendeskState, organization: &Map<String, Value>) -> Response {
    let text = |name: &str| {
        organization
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let id = organization.get("id").and_then(Value::as_u64);
    let external_id = text("external_id");
    let found = s.organizations.iter().position(|o| {
        !o.deleted
            && (Some(o.id) == id
                || external_id
                    .as_ref()
                    .is_some_and(|x| o.text("external_id") == *x))
    });
    let name = text("name");
    if found.is_none() && name.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return record_invalid("name", "Name: cannot be blank".into(), "BlankValue");
    }
    if let Some(name) = &name
        && s.organizations.iter().enumerate().any(|(i, o)| {
            Some(i) != found && !o.deleted && o.text("name").eq_ignore_ascii_case(name)
        })
    {
        return record_invalid(
            "name",
            "Name: has already been taken".into(),
            "DuplicateValue",
        );
    }
    let (at, status) = match found {
        Some(at) => (at, StatusCode::OK),
        None => {
            let id = s.new_id();
            s.organizations.push(Entity {
                id,
                ..Entity::default()
            });
            (s.organizations.len() - 1, StatusCode::CREATED)
        }
    };
    let entity = &mut s.organizations[at];
    for (name, value) in organization {
        match name.as_str() {
            "id" => {}
            "organization_fields" => {
                if let Some(fields) = value.as_object() {
                    for (key, value) in fields {
                        entity.custom.insert(key.clone(), value.clone());
                    }
                }
            }
            _ if value.is_null() => {
                entity.properties.remove(name);
            }
            _ => {
                entity.properties.insert(name.clone(), value.clone());
            }
        }
    }
    let mut shown = entity.properties.clone();
    shown.insert("id".into(), json!(entity.id));
    shown.insert(
        "organization_fields".into(),
        Value::Object(entity.custom.clone()),
    );
    json_answer(status, json!({ "organization": shown }))
}

async fn me(State(state): Shared, headers: HeaderMap) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, "GET /users/me".into()) {
        return with_limits(&s, *answer);
    }
    let answer = json_answer(
        StatusCode::OK,
        json!({"user": {"id": 360_000_000_001u64, "name": "Ops", "email": EMAIL, "role": s.role}}),
    );
    with_limits(&s, answer)
}

fn custom_fields(s: &mut ZendeskState, headers: &HeaderMap, kind: &str) -> Response {
    if let Err(answer) = admit(s, headers, format!("GET /{kind}")) {
        return with_limits(s, *answer);
    }
    let keys = if kind == "user_fields" {
        &s.user_field_keys
    } else {
        &s.organization_field_keys
    };
    let fields: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| json!({"id": 1000 + i, "key": key, "type": "text", "title": key, "active": true}))
        .collect();
    let count = fields.len();
    let answer = json_answer(
        StatusCode::OK,
        json!({ kind: fields, "next_page": null, "previous_page": null, "count": count }),
    );
    with_limits(s, answer)
}

async fn user_fields(State(state): Shared, headers: HeaderMap) -> Response {
    let mut s = state.lock().expect("lock");
    custom_fields(&mut s, &headers, "user_fields")
}

async fn organization_fields(State(state): Shared, headers: HeaderMap) -> Response {
    let mut s = state.lock().expect("lock");
    custom_fields(&mut s, &headers, "organization_fields")
}
