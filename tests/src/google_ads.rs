//! An emulator of the Google Ads API (REST) for Customer Match and of
//! Google's OAuth token endpoint, following Google's public
//! documentation, not Ebb's code:
//!
//! - `POST /token`: the refresh-token grant; a wrong client or refresh
//!   token is a 400 `invalid_grant`. Access tokens expire (`expires_in`);
//! - every API call needs `Authorization: Bearer` (a current token, else
//!   401 `UNAUTHENTICATED`) and the `developer-token` header (else 401);
//!   errors are `{"error": {code, message, status, details: [GoogleAdsFailure]}}`;
//! - `POST /{v}/customers/{id}/offlineUserDataJobs:create`: a
//!   `CUSTOMER_MATCH_USER_LIST` job for an existing CRM-based list of the
//!   customer (else `INVALID_USER_LIST_ID`), with its consent;
//! - `POST /{v}/{job}:addOperations`: `create` or `remove` operations of
//!   `userIdentifiers` (`hashedEmail`, `hashedPhoneNumber`, `addressInfo`
//!   with hashed names, `countryCode`, `postalCode`); at most 20
//!   identifiers an operation and 100,000 a request; creations and
//!   removals never in one job (`CONFLICTING_OPERATION`); none after the
//!   job ran (`JOB_ALREADY_STARTED`). With `enablePartialFailure`, an
//!   operation that is invalid (a value that is not SHA-256 hex,
//!   `INVALID_SHA256_FORMAT`; an unknown country, `INVALID_COUNTRY_CODE`)
//!   is reported in `partialFailureError` by its index and the others are
//!   kept;
//! - `POST /{v}/{job}:run`: the job runs (here at once) and its operations
//!   change the list;
//! - `POST /{v}/customers/{id}/googleAds:search`: the user list's `name`,
//!   `type` and `membershipStatus`.
//!
//! - the developer token's rate (requests per window, when set): over it,
//!   429 `RESOURCE_EXHAUSTED` with `quotaErrorDetails.retryDelay`.
//!
//! Knobs: the list's type, apply-then-drop the connection of `:run`, and
//! expiring access tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const CUSTOMER_ID: &str = "1234567890";
pub const USER_LIST_ID: &str = "987654321";
pub const DEVELOPER_TOKEN: &str = "dev-token-Zx9";
pub const CLIENT_ID: &str = "ebb-test.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "client-secret-Qw3";
pub const REFRESH_TOKEN: &str = "1//refresh-Lk7";

const MAX_IDENTIFIERS_PER_REQUEST: usize = 100_000;
const MAX_IDENTIFIERS_PER_OPERATION: usize = 20;

/// ISO 3166-1 alpha-2 codes.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// A member: each identifier (`hashedEmail`, `addressInfo.countryCode`, …)
/// and its value.
pub type Member = BTreeMap<String, String>;

struct Job {
    /// `true` for creations.
    creates: Option<bool>,
    operations: Vec<Member>,
    ran: bool,
}

pub struct GoogleAdsState {
    pub members: BTreeSet<Member>,
    /// Every API call: its path (after the version) and body.
    pub requests: Vec<(String, String)>,
    /// Token refreshes answered.
    pub token_refreshes: usize,
    /// The list's type (`CRM_BASED` for Customer Match).
    pub list_type: String,
    /// Seconds an access token lives.
    pub token_lifetime: u64,
    /// The consent of the last job created.
    pub last_consent: Value,
    /// The developer token's request rate (answered 429 over it).
    pub rate: crate::rate_window::RateWindow,
    pub drop_after_apply_left: u32,
    jobs: HashMap<String, Job>,
    tokens: Vec<(String, std::time::Instant)>,
    next_id: u64,
}

impl Default for GoogleAdsState {
    fn default() -> Self {
        GoogleAdsState {
            members: BTreeSet::new(),
            requests: Vec::new(),
            token_refreshes: 0,
            list_type: "CRM_BASED".into(),
            token_lifetime: 3599,
            last_consent: Value::Null,
            rate: crate::rate_window::RateWindow::default(),
            drop_after_apply_left: 0,
            jobs: HashMap::new(),
            tokens: Vec::new(),
            next_id: 5_000_000,
        }
    }
}

impl GoogleAdsState {
    /// Jobs run so far.
    pub fn jobs_run(&self) -> usize {
        self.jobs.values().filter(|j| j.ran).count()
    }

    /// Google stops accepting every access token issued so far.
    pub fn revoke_tokens(&mut self) {
        self.tokens.clear();
    }

    pub fn member_with(&self, identifier: &str, value: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.get(identifier).map(String::as_str) == Some(value))
    }
}

#[derive(Clone)]
pub struct GoogleAds {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<GoogleAdsState>>,
}

type Shared = State<Arc<Mutex<GoogleAdsState>>>;

impl GoogleAds {
    pub async fn start() -> GoogleAds {
        let state = Arc::new(Mutex::new(GoogleAdsState::default()));
        let app = Router::new()
            .route("/token", post(token))
            .route(
                "/{version}/customers/{customer}/{action}",
                post(customer_call),
            )
            .route(
                "/{version}/customers/{customer}/offlineUserDataJobs/{job_action}",
                post(job_call),
            )
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        GoogleAds { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut GoogleAdsState) -> T) -> T {
        f(&mut self.state.lock().expect("google ads emulator lock"))
    }
}

fn google_error(status: StatusCode, kind: &str, value: &str, message: &str) -> Response {
    let code = status.as_u16();
    let name = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        _ => "INTERNAL",
    };
    (
        status,
        axum::Json(json!({"error": {
            "code": code,
            "message": if code == 400 { "Request contains an invalid argument." } else { message },
            "status": name,
            "details": [{
                "@type": "type.googleapis.com/google.ads.googleads.v20.errors.GoogleAdsFailure",
                "errors": [{"errorCode": {kind: value}, "message": message}],
                "requestId": "x7Yq2",
            }],
        }})),
    )
        .into_response()
}

fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
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
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn token(State(state): Shared, body: String) -> Response {
    let mut s = state.lock().expect("lock");
    let granted = form_field(&body, "grant_type").as_deref() == Some("refresh_token")
        && form_field(&body, "client_id").as_deref() == Some(CLIENT_ID)
        && form_field(&body, "client_secret").as_deref() == Some(CLIENT_SECRET)
        && form_field(&body, "refresh_token").as_deref() == Some(REFRESH_TOKEN);
    if !granted {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})),
        )
            .into_response();
    }
    s.token_refreshes += 1;
    s.next_id += 1;
    let access = format!("ya29.access-{}", s.next_id);
    let lifetime = s.token_lifetime;
    s.tokens.push((
        access.clone(),
        std::time::Instant::now() + std::time::Duration::from_secs(lifetime),
    ));
    axum::Json(json!({"access_token": access, "expires_in": lifetime, "scope": "https://www.googleapis.com/auth/adwords", "token_type": "Bearer"}))
        .into_response()
}

/// Auth and the customer; `Err` is the answer.
fn admit(
    s: &mut GoogleAdsState,
    headers: &HeaderMap,
    customer: &str,
    what: String,
    body: &str,
) -> Result<(), Box<Response>> {
    s.requests.push((what, body.to_owned()));
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let now = std::time::Instant::now();
    if !bearer.is_some_and(|t| {
        s.tokens
            .iter()
            .any(|(token, until)| token == t && *until > now)
    }) {
        return Err(Box::new(google_error(
            StatusCode::UNAUTHORIZED,
            "authenticationError",
            "OAUTH_TOKEN_INVALID",
            "Oauth token is invalid.",
        )));
    }
    if headers.get("developer-token").and_then(|v| v.to_str().ok()) != Some(DEVELOPER_TOKEN) {
        return Err(Box::new(google_error(
            StatusCode::UNAUTHORIZED,
            "authenticationError",
            "DEVELOPER_TOKEN_INVALID",
            "The developer token is not valid.",
        )));
    }
    if s.rate.admit().is_err() {
        let mut answer = google_error(
            StatusCode::TOO_MANY_REQUESTS,
            "quotaError",
            "RESOURCE_TEMPORARILY_EXHAUSTED",
            "Too many requests. Retry in 1 second.",
        );
        *answer.body_mut() = axum::body::Body::from(
            json!({"error": {"code": 429, "message": "Too many requests.", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.ads.googleads.v20.errors.GoogleAdsFailure",
                    "errors": [{"errorCode": {"quotaError": "RESOURCE_TEMPORARILY_EXHAUSTED"},
                        "message": "Too many requests. Retry in 1 second.",
                        "details": {"quotaErrorDetails": {"rateScope": "DEVELOPER", "rateName": "Requests per developer per second", "retryDelay": "1s"}}}]}]}})
            .to_string(),
        );
        return Err(Box::new(answer));
    }
    if customer != CUSTOMER_ID {
        return Err(Box::new(google_error(
            StatusCode::FORBIDDEN,
            "authorizationError",
            "USER_PERMISSION_DENIED",
            "User doesn't have permission to access customer.",
        )));
    }
    Ok(())
}

async fn customer_call(
    State(state): Shared,
    headers: HeaderMap,
    Path((_version, customer, action)): Path<(String, String, String)>,
    body: String,
) -> Response {
    let mut s = state.lock().expect("lock");
    if let Err(answer) = admit(&mut s, &headers, &customer, action.clone(), &body) {
        return *answer;
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match action.as_str() {
        "offlineUserDataJobs:create" => {
            let job = &body["job"];
            let list = job
                .pointer("/customerMatchUserListMetadata/userList")
                .and_then(Value::as_str)
                .unwrap_or("");
            if job["type"] != "CUSTOMER_MATCH_USER_LIST"
                || list != format!("customers/{CUSTOMER_ID}/userLists/{USER_LIST_ID}")
            {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "offlineUserDataJobError",
                    "INVALID_USER_LIST_ID",
                    "The user list ID provided for the job is invalid.",
                );
            }
            if s.list_type != "CRM_BASED" {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "offlineUserDataJobError",
                    "INVALID_USER_LIST_TYPE",
                    "Type of the user list is not applicable for the job.",
                );
            }
            s.next_id += 1;
            let name = format!("customers/{CUSTOMER_ID}/offlineUserDataJobs/{}", s.next_id);
            let consent = job
                .pointer("/customerMatchUserListMetadata/consent")
                .cloned()
                .unwrap_or(Value::Null);
            s.last_consent = consent;
            s.jobs.insert(
                name.clone(),
                Job {
                    creates: None,
                    operations: Vec::new(),
                    ran: false,
                },
            );
            axum::Json(json!({ "resourceName": name })).into_response()
        }
        "googleAds:search" => {
            let list_type = s.list_type.clone();
            axum::Json(json!({"results": [{"userList": {
                "resourceName": format!("customers/{CUSTOMER_ID}/userLists/{USER_LIST_ID}"),
                "name": "Warehouse customers",
                "type": list_type,
                "membershipStatus": "OPEN",
            }}], "fieldMask": "userList.name,userList.type,userList.membershipStatus"}))
            .into_response()
        }
        _ => google_error(
            StatusCode::NOT_FOUND,
            "requestError",
            "UNKNOWN",
            "The requested URL was not found on this server.",
        ),
    }
}

fn is_hash(value: &str) -> bool {
    value.len() == 64 && value.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// An operation's member, or its error (`errorCode` value, message).
fn operation_member(identifiers: &[Value]) -> Result<Member, (&'static str, &'static str)> {
    if identifiers.is_empty() {
        return Err((
            "MISSING_USER_IDENTIFIER",
            "The user identifier is missing valid data.",
        ));
    }
    if identifiers.len() > MAX_IDENTIFIERS_PER_OPERATION {
        return Err((
            "TOO_MANY_USER_IDENTIFIERS",
            "Maximum number of user identifiers allowed per request is 100,000 and per operation is 20.",
        ));
    }
    let mut member = Member::new();
    for identifier in identifiers {
        let Some(fields) = identifier.as_object() else {
            return Err((
                "MISSING_USER_IDENTIFIER",
                "The user identifier is missing valid data.",
            ));
        };
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("hashedEmail" | "hashedPhoneNumber", Value::String(v)) => {
                    if !is_hash(v) {
                        return Err((
                            "INVALID_SHA256_FORMAT",
                            "The SHA256 encoded value is malformed.",
                        ));
                    }
                    member.insert(name.clone(), v.clone());
                }
                ("addressInfo", Value::Object(address)) => {
                    let text = |k: &str| address.get(k).and_then(Value::as_str).unwrap_or("");
                    for hashed in ["hashedFirstName", "hashedLastName"] {
                        if !is_hash(text(hashed)) {
                            return Err((
                                "INVALID_SHA256_FORMAT",
                                "The SHA256 encoded value is malformed.",
                            ));
                        }
                    }
                    if !COUNTRIES.split(' ').any(|c| c == text("countryCode")) {
                        return Err(("INVALID_COUNTRY_CODE", "The country code is invalid."));
                    }
                    for key in [
                        "hashedFirstName",
                        "hashedLastName",
                        "countryCode",
                        "postalCode",
                    ] {
                        member.insert(format!("addressInfo.{key}"), text(key).to_owned());
                    }
                }
                _ => {
                    return Err((
                        "MISSING_USER_IDENTIFIER",
                        "The user identifier is missing valid data.",
                    ));
                }
            }
        }
    }
    Ok(member)
}

async fn job_call(
    State(state): Shared,
    headers: HeaderMap,
    Path((_version, customer, job_action)): Path<(String, String, String)>,
    body: String,
) -> Response {
    let answer = {
        let mut s = state.lock().expect("lock");
        let Some((job_id, action)) = job_action.split_once(':') else {
            return google_error(
                StatusCode::NOT_FOUND,
                "requestError",
                "UNKNOWN",
                "Not found.",
            );
        };
        if let Err(answer) = admit(&mut s, &headers, &customer, format!("job:{action}"), &body) {
            return *answer;
        }
        let name = format!("customers/{customer}/offlineUserDataJobs/{job_id}");
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let mut members = std::mem::take(&mut s.members);
        let answer = match (s.jobs.get_mut(&name), action) {
            (None, _) => google_error(
                StatusCode::BAD_REQUEST,
                "mutateError",
                "RESOURCE_NOT_FOUND",
                "The requested resource was not found.",
            ),
            (Some(job), "addOperations") => add_operations(job, &body),
            (Some(job), "run") => {
                if job.ran {
                    google_error(
                        StatusCode::BAD_REQUEST,
                        "offlineUserDataJobError",
                        "JOB_ALREADY_STARTED",
                        "Once the upload job is started, new operations cannot be added.",
                    )
                } else {
                    job.ran = true;
                    for member in &job.operations {
                        if job.creates == Some(true) {
                            members.insert(member.clone());
                        } else {
                            members.remove(member);
                        }
                    }
                    axum::Json(json!({"name": format!("customers/{customer}/operations/{job_id}")}))
                        .into_response()
                }
            }
            _ => google_error(
                StatusCode::NOT_FOUND,
                "requestError",
                "UNKNOWN",
                "Not found.",
            ),
        };
        s.members = members;
        answer
    };
    if job_action.ends_with(":run") {
        crate::drop_answer_if_due(&state);
    }
    answer
}

fn add_operations(job: &mut Job, body: &Value) -> Response {
    if job.ran {
        return google_error(
            StatusCode::BAD_REQUEST,
            "offlineUserDataJobError",
            "JOB_ALREADY_STARTED",
            "Once the upload job is started, new operations cannot be added.",
        );
    }
    let operations = body["operations"].as_array().cloned().unwrap_or_default();
    let partial = body["enablePartialFailure"] == json!(true);
    let identifiers: usize = operations
        .iter()
        .filter_map(|op| {
            op.as_object()?
                .values()
                .next()?
                .get("userIdentifiers")?
                .as_array()
                .map(Vec::len)
        })
        .sum();
    if identifiers > MAX_IDENTIFIERS_PER_REQUEST {
        return google_error(
            StatusCode::BAD_REQUEST,
            "offlineUserDataJobError",
            "TOO_MANY_USER_IDENTIFIERS",
            "Maximum number of user identifiers allowed per request is 100,000 and per operation is 20.",
        );
    }
    let mut errors = Vec::new();
    let mut accepted = Vec::new();
    for (index, operation) in operations.iter().enumerate() {
        let (creates, user_data) = match (operation.get("create"), operation.get("remove")) {
            (Some(data), None) => (true, data),
            (None, Some(data)) => (false, data),
            _ => {
                errors.push((
                    index,
                    "MISSING_USER_IDENTIFIER",
                    "The user identifier is missing valid data.",
                ));
                continue;
            }
        };
        if job.creates.is_some_and(|c| c != creates)
            || accepted.iter().any(|(c, _): &(bool, Member)| *c != creates)
        {
            return google_error(
                StatusCode::BAD_REQUEST,
                "offlineUserDataJobError",
                "CONFLICTING_OPERATION",
                "Mixing creation and removal of offline data in the same job is not allowed.",
            );
        }
        let identifiers = user_data["userIdentifiers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match operation_member(&identifiers) {
            Ok(member) => accepted.push((creates, member)),
            Err((code, message)) => errors.push((index, code, message)),
        }
    }
    if !errors.is_empty() && !partial {
        let (_, code, message) = errors[0];
        return google_error(
            StatusCode::BAD_REQUEST,
            "offlineUserDataJobError",
            code,
            message,
        );
    }
    for (creates, member) in accepted {
        job.creates = Some(creates);
        job.operations.push(member);
    }
    if errors.is_empty() {
        return axum::Json(json!({})).into_response();
    }
    let failures: Vec<Value> = errors
        .iter()
        .map(|(index, code, message)| {
            json!({
                "errorCode": {"offlineUserDataJobError": code},
                "message": message,
                "location": {"fieldPathElements": [
                    {"fieldName": "operations", "index": index},
                    {"fieldName": "create"},
                    {"fieldName": "user_identifiers"},
                ]},
            })
        })
        .collect();
    axum::Json(json!({"partialFailureError": {
        "code": 3,
        "message": format!("{} operation(s) failed", failures.len()),
        "details": [{
            "@type": "type.googleapis.com/google.ads.googleads.v20.errors.GoogleAdsFailure",
            "errors": failures,
        }],
    }}))
    .into_response()
}

impl crate::LosesAnswers for GoogleAdsState {
    fn answers_to_lose(&mut self) -> &mut u32 {
        &mut self.drop_after_apply_left
    }
}
