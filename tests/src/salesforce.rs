//! An emulator of the Salesforce REST API pieces Ebb uses, following
//! Salesforce's public documentation, not Ebb's code:
//!
//! - OAuth 2.0 refresh-token flow (`POST /services/oauth2/token`): an access
//!   token and `instance_url`; a bad client or refresh token is a 400
//!   `invalid_grant` / `invalid_client_id`;
//! - bearer auth on `/services/data/v62.0/…`: an unknown or expired token is
//!   a 401 `INVALID_SESSION_ID` ("Session expired or invalid");
//! - `GET …/sobjects/Contact/describe`;
//! - sObject Collections: `PATCH …/composite/sobjects/Contact/{externalId}`
//!   (upsert), `PATCH …/composite/sobjects` (update by id),
//!   `DELETE …/composite/sobjects?ids=…`; at most 200 records
//!   (`EXCEEDED_ID_LIMIT`), `allOrNone: false`: one save result per record,
//!   in order, with `REQUIRED_FIELD_MISSING`, `INVALID_EMAIL_ADDRESS`,
//!   `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`, `STRING_TOO_LONG`,
//!   `FIELD_CUSTOM_VALIDATION_EXCEPTION` (a validation rule: LastName may not
//!   be "Test"), `ENTITY_IS_DELETED`;
//! - Bulk API 2.0 ingest jobs (`…/jobs/ingest`): create (upsert, update,
//!   delete), upload CSV, close with `UploadComplete`, poll (`InProgress`
//!   then `JobComplete`), `successfulResults/` (`sf__Id`, `sf__Created`) and
//!   `failedResults/` (`sf__Error` as `CODE:message:fields --`); an unknown
//!   column fails the job (`InvalidBatch : Field name not found`);
//! - the org's API limit: 403 `REQUEST_LIMIT_EXCEEDED`.
//!
//! Knobs: expire every access token, answer the next N calls with the API
//! limit, apply the next N writes and drop the connection, answer the next
//! N reads of a bulk job's state 503.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Map, Value, json};

pub const CLIENT_ID: &str = "3MVG9emulated.client.id";
pub const CLIENT_SECRET: &str = "emulated-client-secret";
pub const REFRESH_TOKEN: &str = "5Aep861emulated.refresh.token";
pub const VERSION: &str = "v62.0";

#[derive(Debug, Clone)]
pub struct Record {
    pub fields: BTreeMap<String, Value>,
    pub deleted: bool,
}

#[derive(Default)]
pub struct SalesforceState {
    /// Contacts by Salesforce id.
    pub contacts: BTreeMap<String, Record>,
    next_id: u64,
    valid_tokens: HashSet<String>,
    /// Access tokens issued (refreshes).
    pub tokens_issued: u32,
    /// Calls answered 401 because the token was unknown or expired.
    pub expired_answers: u32,
    pub requests: Vec<String>,
    /// Every record an update by id was given (collections and bulk jobs
    /// alike), as it arrived.
    pub updates: Vec<Map<String, Value>>,
    /// The next this many API calls are answered 403 REQUEST_LIMIT_EXCEEDED.
    pub limit_left: u32,
    pub drop_after_apply_left: u32,
    pub url: String,
    /// Bulk API 2.0 jobs by id.
    pub jobs: BTreeMap<String, Job>,
    /// Polls a closed job answers `InProgress` before `JobComplete`.
    pub bulk_polls: u32,
    /// The next this many reads of a job's state are answered 503, as
    /// Salesforce does now and then ("Service Unavailable").
    pub job_reads_unavailable_left: u32,
}

impl SalesforceState {
    pub fn live(&self) -> Vec<(&String, &Record)> {
        self.contacts.iter().filter(|(_, r)| !r.deleted).collect()
    }

    pub fn by_external_id(&self, value: &str) -> Vec<(&String, &Record)> {
        self.live()
            .into_iter()
            .filter(|(_, r)| r.fields.get("Warehouse_Id__c").and_then(Value::as_str) == Some(value))
            .collect()
    }

    /// Expires every access token, as a session timeout or revocation does.
    pub fn expire_tokens(&mut self) {
        self.valid_tokens.clear();
    }

    pub fn writes(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.starts_with("PATCH") || r.starts_with("DELETE"))
            .count()
    }

    pub fn calls(&self, prefix: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

#[derive(Clone)]
pub struct Salesforce {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<SalesforceState>>,
}

type Shared = State<Arc<Mutex<SalesforceState>>>;

impl Salesforce {
    pub async fn start() -> Salesforce {
        let state = Arc::new(Mutex::new(SalesforceState {
            next_id: 1,
            bulk_polls: 2,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/services/oauth2/token", post(token))
            .route(
                "/services/data/{version}/sobjects/{object}/describe",
                get(describe),
            )
            .route(
                "/services/data/{version}/composite/sobjects",
                patch(update).delete(delete),
            )
            .route(
                "/services/data/{version}/composite/sobjects/{object}",
                post(retrieve),
            )
            .route(
                "/services/data/{version}/composite/sobjects/{object}/{external_id}",
                patch(upsert),
            )
            .route("/services/data/{version}/jobs/ingest", post(create_job))
            .route(
                "/services/data/{version}/jobs/ingest/{id}",
                get(job_info).patch(close_job),
            )
            .route(
                "/services/data/{version}/jobs/ingest/{id}/batches",
                axum::routing::put(upload_job_data),
            )
            .route(
                "/services/data/{version}/jobs/ingest/{id}/{kind}/",
                get(job_results),
            )
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        state.lock().expect("lock").url = format!("http://{addr}");
        Salesforce { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut SalesforceState) -> T) -> T {
        f(&mut self.state.lock().expect("salesforce emulator lock"))
    }
}

fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!([{ "message": message, "errorCode": code }])),
    )
        .into_response()
}

async fn token(State(state): Shared, body: String) -> Response {
    let params: BTreeMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let mut s = state.lock().expect("lock");
    s.requests.push("POST oauth2/token".into());
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "refresh_token" {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "unsupported_grant_type", "error_description": "grant type not supported"}))).into_response();
    }
    if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_client_id", "error_description": "client identifier invalid"}))).into_response();
    }
    if get("refresh_token") != REFRESH_TOKEN {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant", "error_description": "expired access/refresh token"}))).into_response();
    }
    s.tokens_issued += 1;
    let access_token = format!("00D5e000000emul!AQ{}", s.tokens_issued);
    s.valid_tokens.insert(access_token.clone());
    axum::Json(json!({
        "access_token": access_token, "instance_url": s.url, "id": format!("{}/id/00D/005", s.url),
        "token_type": "Bearer", "issued_at": "1732147200000", "signature": "emulated",
    }))
    .into_response()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Version, bearer token and the API limit: `Err` is the answer.
fn admit(
    s: &mut SalesforceState,
    headers: &HeaderMap,
    version: &str,
    what: String,
) -> Result<(), Response> {
    s.requests.push(what);
    if version != VERSION {
        return Err(errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ));
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !s.valid_tokens.contains(token) {
        s.expired_answers += 1;
        return Err(errors(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        ));
    }
    if s.limit_left > 0 {
        s.limit_left -= 1;
        return Err(errors(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ));
    }
    Ok(())
}

struct FieldDef {
    name: &'static str,
    kind: &'static str,
    length: usize,
    nillable: bool,
    writable: bool,
    external_id: bool,
    picklist: &'static [&'static str],
}

const fn field(name: &'static str, kind: &'static str, length: usize) -> FieldDef {
    FieldDef {
        name,
        kind,
        length,
        nillable: true,
        writable: true,
        external_id: false,
        picklist: &[],
    }
}

const CONTACT: &[FieldDef] = &[
    FieldDef {
        writable: false,
        nillable: false,
        ..field("Id", "id", 18)
    },
    FieldDef {
        nillable: false,
        ..field("LastName", "string", 80)
    },
    field("FirstName", "string", 40),
    field("Email", "email", 80),
    FieldDef {
        external_id: true,
        ..field("Warehouse_Id__c", "string", 50)
    },
    FieldDef {
        picklist: &["free", "starter", "pro", "enterprise"],
        ..field("Plan__c", "picklist", 255)
    },
    field("Lifetime_Value__c", "currency", 0),
    FieldDef {
        writable: false,
        nillable: false,
        ..field("CreatedDate", "datetime", 0)
    },
];

async fn describe(
    State(state): Shared,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, &version, format!("GET describe/{object}")) {
        return answer;
    }
    if object != "Contact" {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "The requested resource does not exist: sObject type '{object}' is not supported."
            ),
        );
    }
    let fields: Vec<Value> = CONTACT
        .iter()
        .map(|f| {
            json!({
                "name": f.name, "type": f.kind, "length": f.length, "nillable": f.nillable,
                "createable": f.writable, "updateable": f.writable, "defaultedOnCreate": !f.writable,
                "externalId": f.external_id, "idLookup": f.external_id || f.name == "Id", "unique": f.external_id,
                "restrictedPicklist": !f.picklist.is_empty(),
                "picklistValues": f.picklist.iter().map(|v| json!({"value": v, "label": v, "active": true, "defaultValue": false})).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({ "name": object, "fields": fields })).into_response()
}

fn save_error(code: &str, message: &str, fields: &[&str]) -> Value {
    json!({ "success": false, "errors": [{ "statusCode": code, "message": message, "fields": fields }] })
}

/// Salesforce's checks of one record's fields; `Err` is its save result.
fn check(fields: &Map<String, Value>, creating: bool) -> Result<BTreeMap<String, Value>, Value> {
    let mut out = BTreeMap::new();
    for (name, value) in fields {
        if name == "attributes" || name.eq_ignore_ascii_case("id") {
            continue;
        }
        let Some(def) = CONTACT.iter().find(|f| f.name.eq_ignore_ascii_case(name)) else {
            return Err(save_error(
                "INVALID_FIELD",
                &format!("No such column '{name}' on sobject of type Contact"),
                &[],
            ));
        };
        if !def.writable {
            return Err(save_error(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                &format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field.",
                    def.name
                ),
                &[def.name],
            ));
        }
        if let Value::String(text) = value {
            if def.length > 0 && text.chars().count() > def.length {
                return Err(save_error(
                    "STRING_TOO_LONG",
                    &format!(
                        "{}: data value too large: {text} (max length={})",
                        def.name, def.length
                    ),
                    &[def.name],
                ));
            }
            if def.kind == "email"
                && !(text.contains('@') && text.rsplit('@').next().is_some_and(|d| d.contains('.')))
            {
                return Err(save_error(
                    "INVALID_EMAIL_ADDRESS",
                    &format!("Email: invalid email address: {text}"),
                    &[def.name],
                ));
            }
            if !def.picklist.is_empty() && !def.picklist.contains(&text.as_str()) {
                return Err(save_error(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!(
                        "{}: bad value for restricted picklist field: {text}",
                        def.name
                    ),
                    &[def.name],
                ));
            }
        }
        out.insert(def.name.to_owned(), value.clone());
    }
    if creating && out.get("LastName").is_none_or(|v| v.is_null() || v == "") {
        return Err(save_error(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [LastName]",
            &["LastName"],
        ));
    }
    if out.get("LastName").and_then(Value::as_str) == Some("Test") {
        return Err(save_error(
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "Last name cannot be Test",
            &[],
        ));
    }
    Ok(out)
}

fn records_of(body: &Value) -> Result<Vec<Map<String, Value>>, Response> {
    let records: Vec<Map<String, Value>> = body
        .get("records")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_object).cloned().collect())
        .unwrap_or_default();
    if records.len() > 200 {
        return Err(errors(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    Ok(records)
}

impl crate::LosesAnswers for SalesforceState {
    fn answers_to_lose(&mut self) -> &mut u32 {
        &mut self.drop_after_apply_left
    }
}

async fn upsert(
    State(state): Shared,
    Path((version, object, external_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let results = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(
            &mut s,
            &headers,
            &version,
            format!("PATCH upsert/{object}/{external_id}"),
        ) {
            return answer;
        }
        if object != "Contact" || external_id != "Warehouse_Id__c" {
            return errors(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            );
        }
        let records = match records_of(&body) {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        records
            .iter()
            .map(|record| upsert_one(&mut s, record))
            .collect::<Vec<_>>()
    };
    crate::drop_answer_if_due(&state);
    axum::Json(Value::Array(results)).into_response()
}

/// sObject Collections retrieve: `{"ids": [...], "fields": [...]}`, up to
/// 2,000 ids; one entry per id, `null` for a record that is gone; an
/// unknown field is a 400 `INVALID_FIELD`.
async fn retrieve(
    State(state): Shared,
    Path((version, object)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(
        &mut s,
        &headers,
        &version,
        format!("POST retrieve/{object}"),
    ) {
        return answer;
    }
    if object != "Contact" {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    }
    let strings = |key: &str| -> Vec<String> {
        body.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ids, fields) = (strings("ids"), strings("fields"));
    if ids.is_empty() || ids.len() > 2000 || fields.is_empty() {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_FILTER_OPERATOR",
            "ids and fields are required; at most 2000 ids",
        );
    }
    if let Some(unknown) = fields
        .iter()
        .find(|f| !f.eq_ignore_ascii_case("Id") && !CONTACT.iter().any(|d| d.name == f.as_str()))
    {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!("No such column '{unknown}' on sobject of type Contact"),
        );
    }
    let results: Vec<Value> = ids
        .iter()
        .map(|id| match s.contacts.get(id).filter(|r| !r.deleted) {
            None => Value::Null,
            Some(record) => {
                let mut out = Map::new();
                out.insert(
                    "attributes".into(),
                    json!({"type": "Contact", "url": format!("/services/data/{VERSION}/sobjects/Contact/{id}")}),
                );
                out.insert("Id".into(), Value::String(id.clone()));
                for field in fields.iter().filter(|f| !f.eq_ignore_ascii_case("Id")) {
                    let value = record.fields.get(field).cloned().unwrap_or(Value::Null);
                    out.insert(field.clone(), value);
                }
                Value::Object(out)
            }
        })
        .collect();
    axum::Json(Value::Array(results)).into_response()
}

async fn update(
    State(state): Shared,
    Path(version): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let results = {
        let mut s = state.lock().expect("lock");
        if let Err(answer) = admit(&mut s, &headers, &version, "PATCH update".into()) {
            return answer;
        }
        let records = match records_of(&body) {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        records
            .iter()
            .map(|record| update_one(&mut s, record))
            .collect::<Vec<_>>()
    };
    crate::drop_answer_if_due(&state);
    axum::Json(Value::Array(results)).into_response()
}

async fn delete(
    State(state): Shared,
    Path(version): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, &version, "DELETE".into()) {
        return answer;
    }
    let ids: Vec<String> = query
        .get("ids")
        .map(|ids| ids.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    if ids.len() > 200 {
        return errors(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        );
    }
    let results: Vec<Value> = ids.iter().map(|id| delete_one(&mut s, id)).collect();
    axum::Json(Value::Array(results)).into_response()
}

/// Upserts one record by `Warehouse_Id__c`; returns its save result.
fn upsert_one(s: &mut SalesforceState, record: &Map<String, Value>) -> Value {
    let key = record
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Warehouse_Id__c"))
        .and_then(|(_, v)| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let Some(key) = key else {
        return save_error("MISSING_ARGUMENT", "Warehouse_Id__c not specified", &[]);
    };
    let existing = s.by_external_id(&key).first().map(|(id, _)| (*id).clone());
    match check(record, existing.is_none()) {
        Err(result) => result,
        Ok(fields) => {
            let (id, created) = match existing {
                Some(id) => (id, false),
                None => {
                    let id = format!("003EMUL{:011}", s.next_id);
                    s.next_id += 1;
                    (id, true)
                }
            };
            let stored = s.contacts.entry(id.clone()).or_insert(Record {
                fields: BTreeMap::new(),
                deleted: false,
            });
            stored.fields.extend(fields);
            json!({ "id": id, "success": true, "errors": [], "created": created })
        }
    }
}

/// Updates one record by its `id` (`Id` in bulk data); returns its save result.
fn update_one(s: &mut SalesforceState, record: &Map<String, Value>) -> Value {
    s.updates.push(record.clone());
    let id = record
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("id"))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("")
        .to_owned();
    match s.contacts.get(&id) {
        None => save_error(
            "INVALID_CROSS_REFERENCE_KEY",
            &format!("invalid cross reference id: {id}"),
            &[],
        ),
        Some(r) if r.deleted => save_error("ENTITY_IS_DELETED", "entity is deleted", &[]),
        Some(_) => match check(record, false) {
            Err(result) => result,
            Ok(fields) => {
                if let Some(stored) = s.contacts.get_mut(&id) {
                    stored.fields.extend(fields);
                }
                json!({ "id": id, "success": true, "errors": [] })
            }
        },
    }
}

fn delete_one(s: &mut SalesforceState, id: &str) -> Value {
    match s.contacts.get_mut(id) {
        Some(record) if !record.deleted => {
            record.deleted = true;
            json!({ "id": id, "success": true, "errors": [] })
        }
        Some(_) => save_error("ENTITY_IS_DELETED", "entity is deleted", &[]),
        None => save_error(
            "INVALID_CROSS_REFERENCE_KEY",
            &format!("invalid cross reference id: {id}"),
            &[],
        ),
    }
}

/// A Bulk API 2.0 ingest job.
#[derive(Debug, Clone)]
pub struct Job {
    pub operation: String,
    pub state: String,
    data: String,
    polls_left: u32,
    error_message: Option<String>,
    successes: String,
    failures: String,
    processed: usize,
    failed: usize,
}

fn job_json(id: &str, job: &Job) -> Value {
    json!({
        "id": id, "operation": job.operation, "object": "Contact", "state": job.state,
        "contentType": "CSV", "lineEnding": "LF", "columnDelimiter": "COMMA", "apiVersion": 62.0,
        "contentUrl": format!("services/data/{VERSION}/jobs/ingest/{id}/batches"),
        "numberRecordsProcessed": job.processed, "numberRecordsFailed": job.failed,
        "errorMessage": job.error_message,
    })
}

async fn create_job(
    State(state): Shared,
    Path(version): Path<String>,
    headers: HeaderMap,
    axum::Json(spec): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, &version, "POST jobs/ingest".into()) {
        return answer;
    }
    let operation = spec
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if spec.get("object").and_then(Value::as_str) != Some("Contact") {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : Object not supported by the emulator",
        );
    }
    if !["upsert", "update", "delete"].contains(&operation.as_str()) {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            &format!("InvalidJob : Invalid operation: {operation}"),
        );
    }
    if operation == "upsert"
        && spec.get("externalIdFieldName").and_then(Value::as_str) != Some("Warehouse_Id__c")
    {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            "InvalidJob : External ID was blank or not an External ID field",
        );
    }
    s.next_id += 1;
    let id = format!("750EMUL{:011}", s.next_id);
    let job = Job {
        operation,
        state: "Open".into(),
        data: String::new(),
        polls_left: s.bulk_polls,
        error_message: None,
        successes: String::new(),
        failures: String::new(),
        processed: 0,
        failed: 0,
    };
    let answer = job_json(&id, &job);
    s.jobs.insert(id, job);
    axum::Json(answer).into_response()
}

async fn upload_job_data(
    State(state): Shared,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(
        &mut s,
        &headers,
        &version,
        format!("PUT jobs/ingest/{id}/batches"),
    ) {
        return answer;
    }
    match s.jobs.get_mut(&id) {
        Some(job) if job.state == "Open" => {
            job.data.push_str(&body);
            StatusCode::CREATED.into_response()
        }
        Some(_) => errors(
            StatusCode::CONFLICT,
            "INVALIDJOBSTATE",
            "Job is not open for data upload",
        ),
        None => errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
    }
}

async fn close_job(
    State(state): Shared,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(
        &mut s,
        &headers,
        &version,
        format!("PATCH jobs/ingest/{id}"),
    ) {
        return answer;
    }
    let Some(mut job) = s.jobs.get(&id).cloned() else {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    if body.get("state").and_then(Value::as_str) != Some("UploadComplete") || job.state != "Open" {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            "Invalid state transition",
        );
    }
    process_job(&mut s, &mut job);
    let answer = job_json(&id, &job);
    s.jobs.insert(id, job);
    axum::Json(answer).into_response()
}

/// Runs a closed job's rows; its results are served once it has been
/// polled `bulk_polls` times.
fn process_job(s: &mut SalesforceState, job: &mut Job) {
    let mut rows = parse_csv(&job.data).into_iter();
    let header = rows.next().unwrap_or_default();
    let unknown = header
        .iter()
        .find(|h| *h != "Id" && !CONTACT.iter().any(|f| f.name.eq_ignore_ascii_case(h)));
    if let Some(unknown) = unknown {
        job.state = "Failed".into();
        job.error_message = Some(format!("InvalidBatch : Field name not found : {unknown}"));
        return;
    }
    let quote = |cell: &str| format!("\"{}\"", cell.replace('"', "\"\""));
    let columns: Vec<String> = header.iter().map(|h| quote(h)).collect();
    let mut successes = format!("\"sf__Id\",\"sf__Created\",{}\n", columns.join(","));
    let mut failures = format!("\"sf__Id\",\"sf__Error\",{}\n", columns.join(","));
    for cells in rows {
        let mut record = Map::new();
        for (column, cell) in header.iter().zip(&cells) {
            match cell.as_str() {
                "" => {}
                "#N/A" => {
                    record.insert(column.clone(), Value::Null);
                }
                text => {
                    record.insert(column.clone(), Value::String(text.to_owned()));
                }
            }
        }
        let result = match job.operation.as_str() {
            "upsert" => upsert_one(s, &record),
            "update" => update_one(s, &record),
            _ => delete_one(s, record.get("Id").and_then(Value::as_str).unwrap_or("")),
        };
        let original: Vec<String> = cells.iter().map(|c| quote(c)).collect();
        job.processed += 1;
        if result["success"] == true {
            let created = result["created"] == true;
            successes.push_str(&format!(
                "{},{},{}\n",
                quote(result["id"].as_str().unwrap_or("")),
                quote(&created.to_string()),
                original.join(",")
            ));
        } else {
            job.failed += 1;
            let error = &result["errors"][0];
            let fields: Vec<&str> = error["fields"]
                .as_array()
                .map(|f| f.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let text = format!(
                "{}:{}:{} --",
                error["statusCode"].as_str().unwrap_or(""),
                error["message"].as_str().unwrap_or(""),
                fields.join(",")
            );
            failures.push_str(&format!(
                "{},{},{}\n",
                quote(""),
                quote(&text),
                original.join(",")
            ));
        }
    }
    job.successes = successes;
    job.failures = failures;
    job.state = "UploadComplete".into();
}

async fn job_info(
    State(state): Shared,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, &version, format!("GET jobs/ingest/{id}")) {
        return answer;
    }
    if s.job_reads_unavailable_left > 0 {
        s.job_reads_unavailable_left -= 1;
        return errors(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "Service Unavailable: the server is temporarily unable to handle the request",
        );
    }
    let Some(job) = s.jobs.get_mut(&id) else {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    if job.state == "UploadComplete" || job.state == "InProgress" {
        if job.polls_left == 0 {
            job.state = "JobComplete".into();
        } else {
            job.polls_left -= 1;
            job.state = "InProgress".into();
        }
    }
    axum::Json(job_json(&id, job)).into_response()
}

async fn job_results(
    State(state): Shared,
    Path((version, id, kind)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(
        &mut s,
        &headers,
        &version,
        format!("GET jobs/ingest/{id}/{kind}"),
    ) {
        return answer;
    }
    let Some(job) = s.jobs.get(&id) else {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        );
    };
    if job.state != "JobComplete" {
        return errors(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            "Job is not complete",
        );
    }
    let body = match kind.as_str() {
        "successfulResults" => job.successes.clone(),
        "failedResults" => job.failures.clone(),
        _ => {
            return errors(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            );
        }
    };
    ([("content-type", "text/csv")], body).into_response()
}

/// RFC 4180 CSV, as Salesforce reads job data.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut cell, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}
