//! An emulator of HubSpot's CRM v3 API, following HubSpot's public
//! documentation, not Ebb's code:
//!
//! - private-app auth (`Authorization: Bearer`): 401 `INVALID_AUTHENTICATION`
//!   for a wrong token, 403 `MISSING_SCOPES` for a token without scopes;
//! - `GET /crm/v3/properties/{objectType}` (property definitions);
//! - `POST /crm/v3/objects/{objectType}/batch/{create,upsert,update,archive}`
//!   (at most 100 inputs, `objectWriteTraceId` echoed), `…/search`;
//! - validation as HubSpot does it: one invalid value (an `INVALID_EMAIL`, a
//!   bad enum option, a number that is not one) fails the *whole* batch
//!   with 400 `VALIDATION_ERROR` "Property values were not valid: […]",
//!   unknown properties fail it with `PROPERTY_DOESNT_EXIST`, read-only ones
//!   with `READ_ONLY_VALUE`; creating a contact whose email exists is a 409
//!   `CONFLICT` "Contact already exists. Existing ID: …"; updating ids that
//!   do not exist answers 207 with `OBJECT_NOT_FOUND` errors naming them;
//! - `idProperty` upserts only by a contact's `email` or a property with
//!   unique values; emails are stored in lower case;
//! - rate limits per account: 100 requests per rolling 10 s
//!   (`TEN_SECONDLY_ROLLING`, with the `X-HubSpot-RateLimit-*` headers) and
//!   5 searches per second, answered 429 with HubSpot's error body.
//!
//! Knobs for faults: answer the next N requests 429, or apply the next N
//! writes and then drop the connection before answering.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

pub const TOKEN: &str = "pat-na1-emulated-token";
/// A valid token whose private app has no CRM scopes.
pub const TOKEN_WITHOUT_SCOPES: &str = "pat-na1-no-scopes";

#[derive(Debug, Clone)]
pub struct StoredObject {
    pub properties: BTreeMap<String, String>,
    pub archived: bool,
    /// When HubSpot created it (`createdAt` in answers).
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub struct HubSpotState {
    /// Objects by type, then by id.
    pub objects: BTreeMap<String, BTreeMap<u64, StoredObject>>,
    next_id: u64,
    /// Every request: (method and path, number of inputs).
    pub requests: Vec<(String, usize)>,
    /// The body of every batch request admitted: (`batch/update`, …, body).
    pub bodies: Vec<(String, Value)>,
    /// Requests answered 429 because a limit was exceeded.
    pub violations: u32,
    /// The next this many requests are answered 429.
    pub throttle_left: u32,
    /// The next this many writes (create, upsert, update) are applied, then
    /// the connection drops without an answer.
    pub drop_after_apply_left: u32,
    /// Requests per rolling window (HubSpot: 100 per 10 s for a private app).
    pub rate_window: (usize, Duration),
    arrivals: VecDeque<Instant>,
    searches: VecDeque<Instant>,
}

impl HubSpotState {
    /// Live (not archived) objects of a type.
    pub fn live(&self, object_type: &str) -> Vec<(u64, &StoredObject)> {
        self.objects
            .get(object_type)
            .map(|objects| {
                objects
                    .iter()
                    .filter(|(_, o)| !o.archived)
                    .map(|(id, o)| (*id, o))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Live objects of a type whose `property` equals `value`.
    pub fn find(
        &self,
        object_type: &str,
        property: &str,
        value: &str,
    ) -> Vec<(u64, &StoredObject)> {
        self.live(object_type)
            .into_iter()
            .filter(|(_, o)| o.properties.get(property).map(String::as_str) == Some(value))
            .collect()
    }

    /// Requests made to an endpoint (`POST batch/create`, `POST search`, …).
    pub fn calls(&self, endpoint: &str) -> usize {
        self.requests
            .iter()
            .filter(|(path, _)| path.ends_with(endpoint))
            .count()
    }

    pub fn writes(&self) -> usize {
        [
            "batch/create",
            "batch/upsert",
            "batch/update",
            "batch/archive",
        ]
        .iter()
        .map(|e| self.calls(e))
        .sum()
    }

    /// Adds an object as a HubSpot user would have, at `created_at`;
    /// returns its id.
    pub fn add(
        &mut self,
        object_type: &str,
        properties: &[(&str, &str)],
        created_at: chrono::DateTime<chrono::Utc>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let object = StoredObject {
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            archived: false,
            created_at,
        };
        self.objects
            .entry(object_type.to_owned())
            .or_default()
            .insert(id, object);
        id
    }

    /// The `inputs` of every request to a batch endpoint (`batch/update`).
    pub fn inputs_of(&self, endpoint: &str) -> Vec<Value> {
        self.bodies
            .iter()
            .filter(|(e, _)| e == endpoint)
            .flat_map(|(_, body)| body["inputs"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Removes an object, as a HubSpot user deleting it would.
    pub fn delete(&mut self, object_type: &str, id: u64) {
        if let Some(objects) = self.objects.get_mut(object_type) {
            objects.remove(&id);
        }
    }
}

#[derive(Clone)]
pub struct HubSpot {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<HubSpotState>>,
}

impl HubSpot {
    pub async fn start() -> HubSpot {
        HubSpot::start_on("127.0.0.1:0").await
    }

    /// Listens on `addr` (`127.0.0.1:0` picks a free port).
    pub async fn start_on(addr: &str) -> HubSpot {
        let state = Arc::new(Mutex::new(HubSpotState {
            objects: BTreeMap::new(),
            next_id: 51,
            requests: Vec::new(),
            bodies: Vec::new(),
            violations: 0,
            throttle_left: 0,
            drop_after_apply_left: 0,
            rate_window: (100, Duration::from_secs(10)),
            arrivals: VecDeque::new(),
            searches: VecDeque::new(),
        }));
        let app = Router::new()
            .route("/crm/v3/properties/{object_type}", get(properties))
            .route(
                "/crm/v3/objects/{object_type}/batch/{operation}",
                post(batch),
            )
            .route("/crm/v3/objects/{object_type}/search", post(search))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, addr).await;
        HubSpot { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut HubSpotState) -> T) -> T {
        f(&mut self.state.lock().expect("hubspot emulator lock"))
    }
}

struct PropertyDef {
    name: &'static str,
    kind: &'static str,
    field_type: &'static str,
    unique: bool,
    read_only: bool,
    options: &'static [&'static str],
}

const fn prop(name: &'static str, kind: &'static str, field_type: &'static str) -> PropertyDef {
    PropertyDef {
        name,
        kind,
        field_type,
        unique: false,
        read_only: false,
        options: &[],
    }
}

/// A slice of HubSpot's default properties, plus one custom unique property.
fn definitions(object_type: &str) -> Option<Vec<PropertyDef>> {
    let read_only = |name| PropertyDef {
        read_only: true,
        ..prop(name, "datetime", "text")
    };
    let mut defs = vec![
        PropertyDef {
            read_only: true,
            ..prop("hs_object_id", "number", "number")
        },
        read_only("createdate"),
        read_only("lastmodifieddate"),
    ];
    match object_type {
        "contacts" => defs.extend([
            prop("email", "string", "text"),
            prop("firstname", "string", "text"),
            prop("lastname", "string", "text"),
            prop("company", "string", "text"),
            PropertyDef {
                options: &["free", "starter", "pro", "enterprise"],
                ..prop("plan", "enumeration", "select")
            },
            prop("lifetime_value", "number", "number"),
            PropertyDef {
                unique: true,
                ..prop("warehouse_id", "string", "text")
            },
        ]),
        "companies" => defs.extend([
            prop("name", "string", "text"),
            prop("domain", "string", "text"),
            prop("numberofemployees", "number", "number"),
            PropertyDef {
                options: &["SOFTWARE", "RETAIL", "FINANCE"],
                ..prop("industry", "enumeration", "select")
            },
        ]),
        _ => return None,
    }
    Some(defs)
}

fn error(status: StatusCode, category: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "status": "error",
            "message": message,
            "correlationId": uuid::Uuid::now_v7().to_string(),
            "category": category,
        })),
    )
        .into_response()
}

/// Auth, rate limits and the fault knobs every endpoint shares. `Err` is the
/// answer to send instead.
fn admit(
    state: &mut HubSpotState,
    headers: &HeaderMap,
    what: String,
    inputs: usize,
    is_search: bool,
) -> Result<(), Response> {
    state.requests.push((what, inputs));
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(TOKEN) => {}
        Some(TOKEN_WITHOUT_SCOPES) => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "MISSING_SCOPES",
                "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            ));
        }
        _ => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            ));
        }
    }
    let now = Instant::now();
    let (limit, window) = state.rate_window;
    while state
        .arrivals
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        state.arrivals.pop_front();
    }
    while state
        .searches
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        state.searches.pop_front();
    }
    let (over, policy) = if state.throttle_left > 0 {
        state.throttle_left -= 1;
        (true, "TEN_SECONDLY_ROLLING")
    } else if state.arrivals.len() >= limit {
        state.violations += 1;
        (true, "TEN_SECONDLY_ROLLING")
    } else if is_search && state.searches.len() >= 5 {
        state.violations += 1;
        (true, "SECONDLY")
    } else {
        (false, "")
    };
    if over {
        let remaining = 0.to_string();
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            [
                (
                    "x-hubspot-ratelimit-interval-milliseconds",
                    window.as_millis().to_string(),
                ),
                ("x-hubspot-ratelimit-max", limit.to_string()),
                ("x-hubspot-ratelimit-remaining", remaining),
            ],
            axum::Json(json!({
                "status": "error",
                "message": format!("You have reached your {} limit.", policy.to_lowercase()),
                "errorType": "RATE_LIMIT",
                "correlationId": uuid::Uuid::now_v7().to_string(),
                "policyName": policy,
            })),
        )
            .into_response());
    }
    state.arrivals.push_back(now);
    if is_search {
        state.searches.push_back(now);
    }
    Ok(())
}

async fn properties(
    State(state): State<Arc<Mutex<HubSpotState>>>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(
        &mut s,
        &headers,
        format!("GET properties/{object_type}"),
        0,
        false,
    ) {
        return answer;
    }
    let Some(defs) = definitions(&object_type) else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object_type}"),
        );
    };
    let results: Vec<Value> = defs
        .iter()
        .map(|d| {
            json!({
                "name": d.name, "label": d.name, "type": d.kind, "fieldType": d.field_type,
                "groupName": "contactinformation", "hasUniqueValue": d.unique, "calculated": false,
                "modificationMetadata": { "archivable": true, "readOnlyDefinition": true, "readOnlyValue": d.read_only },
                "options": d.options.iter().enumerate().map(|(i, o)| json!({"label": o, "value": o, "displayOrder": i, "hidden": false})).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({ "results": results })).into_response()
}

/// HubSpot's per-property validation; `Err` is one entry of the
/// "Property values were not valid" list.
fn validate_value(def: &PropertyDef, value: &str) -> Result<(), Value> {
    if value.is_empty() {
        return Ok(());
    }
    let invalid = |code: &str, message: String| {
        Err(
            json!({"isValid": false, "message": message, "error": code, "name": def.name, "localizedErrorMessage": message}),
        )
    };
    match def.kind {
        "number" if value.parse::<f64>().is_err() => {
            invalid("INVALID_LONG", format!("{value} was not a valid long."))
        }
        "enumeration" if !def.options.contains(&value) => invalid(
            "INVALID_OPTION",
            format!(
                "{value} was not one of the allowed options: {}",
                def.options.join(", ")
            ),
        ),
        _ if def.name == "email" && !plausible_email(value) => {
            invalid("INVALID_EMAIL", format!("Email address {value} is invalid"))
        }
        _ => Ok(()),
    }
}

fn plausible_email(value: &str) -> bool {
    match value.split_once('@') {
        // A dot-atom local part: no leading, trailing or doubled dots.
        Some((local, domain)) => {
            !local.is_empty()
                && !local.starts_with('.')
                && !local.ends_with('.')
                && !local.contains("..")
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !value.contains(' ')
        }
        None => false,
    }
}

/// Checks an input's properties: `Err` is the 400 answer for the batch.
fn check_properties(
    object_type: &str,
    properties: &Map<String, Value>,
) -> Result<BTreeMap<String, String>, Response> {
    let defs = definitions(object_type).unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut invalid = Vec::new();
    for (name, value) in properties {
        let Some(def) = defs.iter().find(|d| d.name == name) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "Property values were not valid: [{{\"isValid\":false,\"message\":\"Property \\\"{name}\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"{name}\"}}]"
                ),
            ));
        };
        if def.read_only {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "Property values were not valid: [{{\"isValid\":false,\"message\":\"{name} is a read only property; its value cannot be set.\",\"error\":\"READ_ONLY_VALUE\",\"name\":\"{name}\"}}]"
                ),
            ));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let text = if name == "email" {
            text.to_lowercase()
        } else {
            text
        };
        if let Err(entry) = validate_value(def, &text) {
            invalid.push(entry);
        }
        out.insert(name.clone(), text);
    }
    if !invalid.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("Property values were not valid: {}", Value::Array(invalid)),
        ));
    }
    Ok(out)
}

fn object_json(id: u64, object: &StoredObject, trace: Option<&Value>, new: Option<bool>) -> Value {
    let mut properties: Map<String, Value> = object
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    properties.insert("hs_object_id".into(), Value::String(id.to_string()));
    let mut result = json!({
        "id": id.to_string(), "properties": properties, "archived": false,
        "createdAt": object.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "updatedAt": object.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let Some(trace) = trace {
        result["objectWriteTraceId"] = trace.clone();
    }
    if let Some(new) = new {
        result["new"] = Value::Bool(new);
    }
    result
}

async fn batch(
    State(state): State<Arc<Mutex<HubSpotState>>>,
    Path((object_type, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = match serde_json::from_str(&body) {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Invalid input JSON on line 1: {e}"),
            );
        }
    };
    let inputs: Vec<Value> = body
        .get("inputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut s = state.lock().expect("lock");
    let what = format!("POST {object_type}/batch/{operation}");
    if let Err(answer) = admit(&mut s, &headers, what, inputs.len(), false) {
        return answer;
    }
    if definitions(&object_type).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("Unable to infer object type from: {object_type}"),
        );
    }
    if inputs.len() > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!(
                "Batch size of {} exceeds the limit of 100 inputs.",
                inputs.len()
            ),
        );
    }
    s.bodies.push((format!("batch/{operation}"), body.clone()));
    if operation == "read" {
        let (status, body) = read(&s, &object_type, &body, &inputs);
        return (status, axum::Json(body)).into_response();
    }
    let answer = match operation.as_str() {
        "create" => create(&mut s, &object_type, &inputs),
        "upsert" => upsert(&mut s, &object_type, &inputs),
        "update" => update(&mut s, &object_type, &inputs),
        "archive" => {
            for input in &inputs {
                if let Some(id) = input
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|id| id.parse().ok())
                    && let Some(object) =
                        s.objects.get_mut(&object_type).and_then(|o| o.get_mut(&id))
                {
                    object.archived = true;
                }
            }
            return StatusCode::NO_CONTENT.into_response();
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "Unknown batch operation",
            );
        }
    };
    let applied = answer.as_ref().is_ok();
    if applied && s.drop_after_apply_left > 0 {
        s.drop_after_apply_left -= 1;
        drop(s);
        // Unwinding out of the handler makes hyper drop the connection
        // without a response: the write happened, its answer is lost.
        std::panic::resume_unwind(Box::new("emulated dropped connection"));
    }
    match answer {
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(response) => response,
    }
}

type Answer = Result<(StatusCode, Value), Response>;

/// `batch/read` by id: the requested properties (null where unset) and
/// HubSpot's defaults. Archived and unknown ids are not in `results`; a 207
/// names them in `errors` (`OBJECT_NOT_FOUND`).
fn read(
    s: &HubSpotState,
    object_type: &str,
    body: &Value,
    inputs: &[Value],
) -> (StatusCode, Value) {
    let requested: Vec<&str> = body
        .get("properties")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut results = Vec::new();
    let mut not_found = Vec::new();
    for input in inputs {
        let id = input.get("id").and_then(Value::as_str).unwrap_or("");
        let object = id
            .parse::<u64>()
            .ok()
            .and_then(|n| Some((n, s.objects.get(object_type)?.get(&n)?)))
            .filter(|(_, o)| !o.archived);
        match object {
            Some((n, object)) => {
                let mut json = object_json(n, object, None, None);
                let properties = json["properties"].as_object_mut().expect("properties");
                properties.retain(|name, _| {
                    requested.contains(&name.as_str())
                        || ["hs_object_id", "createdate", "lastmodifieddate"]
                            .contains(&name.as_str())
                });
                for name in &requested {
                    properties.entry(name.to_string()).or_insert(Value::Null);
                }
                results.push(json);
            }
            None => not_found.push(Value::String(id.to_owned())),
        }
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut answer = json!({
        "status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now,
    });
    if not_found.is_empty() {
        return (StatusCode::OK, answer);
    }
    answer["numErrors"] = json!(1);
    answer["errors"] = json!([{
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", object_type.trim_end_matches('s').to_uppercase()),
        "context": { "ids": not_found },
    }]);
    (StatusCode::MULTI_STATUS, answer)
}

fn create(s: &mut HubSpotState, object_type: &str, inputs: &[Value]) -> Answer {
    let mut checked = Vec::new();
    for input in inputs {
        let properties = input
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let properties = check_properties(object_type, &properties)?;
        if object_type == "contacts"
            && let Some(email) = properties.get("email").filter(|e| !e.is_empty())
            && let Some((id, _)) = s.find(object_type, "email", email).first()
        {
            return Err(error(
                StatusCode::CONFLICT,
                "CONFLICT",
                &format!("Contact already exists. Existing ID: {id}"),
            ));
        }
        checked.push((properties, input.get("objectWriteTraceId").cloned()));
    }
    let mut results = Vec::new();
    for (properties, trace) in checked {
        let id = s.next_id;
        s.next_id += 1;
        let object = StoredObject {
            properties,
            archived: false,
            created_at: chrono::Utc::now(),
        };
        results.push(object_json(id, &object, trace.as_ref(), None));
        s.objects
            .entry(object_type.to_owned())
            .or_default()
            .insert(id, object);
    }
    Ok((
        StatusCode::CREATED,
        json!({"status": "COMPLETE", "results": results, "startedAt": "2026-11-21T00:00:00Z", "completedAt": "2026-11-21T00:00:00Z"}),
    ))
}

fn upsert(s: &mut HubSpotState, object_type: &str, inputs: &[Value]) -> Answer {
    let defs = definitions(object_type).unwrap_or_default();
    let mut checked = Vec::new();
    for input in inputs {
        let id_property = input
            .get("idProperty")
            .and_then(Value::as_str)
            .unwrap_or("hs_object_id")
            .to_owned();
        let unique = (object_type == "contacts" && id_property == "email")
            || defs.iter().any(|d| d.name == id_property && d.unique);
        if !unique {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("{id_property} is not a unique identifier property for {object_type}"),
            ));
        }
        let mut value = input
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if id_property == "email" {
            value = value.to_lowercase();
        }
        let mut properties = input
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        properties.insert(id_property.clone(), Value::String(value.clone()));
        let properties = check_properties(object_type, &properties)?;
        checked.push((
            id_property,
            value,
            properties,
            input.get("objectWriteTraceId").cloned(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (_, value, _, _) in &checked {
        if !seen.insert(value.clone()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Duplicate IDs found in batch input: [{value}]. IDs must be unique"),
            ));
        }
    }
    let mut results = Vec::new();
    for (id_property, value, properties, trace) in checked {
        let existing = s
            .find(object_type, &id_property, &value)
            .first()
            .map(|(id, _)| *id);
        let (id, new) = match existing {
            Some(id) => (id, false),
            None => {
                let id = s.next_id;
                s.next_id += 1;
                (id, true)
            }
        };
        let objects = s.objects.entry(object_type.to_owned()).or_default();
        let object = objects.entry(id).or_insert(StoredObject {
            properties: BTreeMap::new(),
            archived: false,
            created_at: chrono::Utc::now(),
        });
        object.properties.extend(properties);
        results.push(object_json(id, object, trace.as_ref(), Some(new)));
    }
    Ok((
        StatusCode::OK,
        json!({"status": "COMPLETE", "results": results}),
    ))
}

fn update(s: &mut HubSpotState, object_type: &str, inputs: &[Value]) -> Answer {
    let mut checked = Vec::new();
    for input in inputs {
        let id = input
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let properties = input
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        checked.push((id, check_properties(object_type, &properties)?));
    }
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for (id, properties) in checked {
        let object = id.parse::<u64>().ok().and_then(|n| {
            s.objects
                .get_mut(object_type)?
                .get_mut(&n)
                .filter(|o| !o.archived)
                .map(|o| (n, o))
        });
        match object {
            Some((n, object)) => {
                object.properties.extend(properties);
                results.push(object_json(n, object, None, None));
            }
            None => missing.push(id),
        }
    }
    if missing.is_empty() {
        return Ok((
            StatusCode::OK,
            json!({"status": "COMPLETE", "results": results}),
        ));
    }
    let kind = object_type.trim_end_matches('s').to_uppercase();
    Ok((
        StatusCode::MULTI_STATUS,
        json!({
            "status": "COMPLETE", "results": results, "numErrors": 1,
            "errors": [{
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "message": format!("Could not get some {kind} objects, they may be deleted or not exist. Check that ids are valid."),
                "context": { "ids": missing },
            }],
        }),
    ))
}

async fn search(
    State(state): State<Arc<Mutex<HubSpotState>>>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(
        &mut s,
        &headers,
        format!("POST {object_type}/search"),
        0,
        true,
    ) {
        return answer;
    }
    let filters: Vec<Value> = body
        .pointer("/filterGroups/0/filters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut results: Vec<Value> = Vec::new();
    for (id, object) in s.live(&object_type) {
        let matches = filters.iter().all(|f| {
            let property = f.get("propertyName").and_then(Value::as_str).unwrap_or("");
            let stored = object.properties.get(property).map(|v| v.to_lowercase());
            let wanted: Vec<String> = match f.get("operator").and_then(Value::as_str) {
                Some("IN") => f
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|v| {
                        v.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => f
                    .get("value")
                    .and_then(Value::as_str)
                    .map(|v| vec![v.to_lowercase()])
                    .unwrap_or_default(),
            };
            stored.is_some_and(|v| wanted.contains(&v))
        });
        if matches {
            results.push(object_json(id, object, None, None));
        }
    }
    axum::Json(json!({ "total": results.len(), "results": results })).into_response()
}
