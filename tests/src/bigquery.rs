//! An emulator of BigQuery's REST API v2 for queries, following Google's
//! public documentation, not Ebb's code. Queries run on a real Postgres
//! database behind it; results come back as BigQuery sends them:
//!
//! - auth: `Authorization: Bearer` with a service account's self-signed JWT
//!   (RS256, `kid` the key's id, `iss` = `sub` = the account's email, `aud`
//!   `https://bigquery.googleapis.com/`, at most an hour) or a known access
//!   token; otherwise 401 `UNAUTHENTICATED` with Google's error body;
//! - `POST /bigquery/v2/projects/{project}/queries` (`jobs.query`):
//!   `dryRun` answers the schema and `totalBytesProcessed` without rows; a
//!   real run answers `jobComplete: false` while the job "runs" (a knob),
//!   else the first page (`maxResults`) with a `pageToken`;
//!   `maximumBytesBilled` below what the query bills (at least 10 MB, as
//!   BigQuery bills) fails it with 400 `bytesBilledLimitExceeded`;
//!   `labels` are recorded;
//! - `GET /bigquery/v2/projects/{project}/queries/{jobId}`
//!   (`jobs.getQueryResults`) with `pageToken` and `maxResults`;
//! - values as the REST API writes them with
//!   `formatOptions.useInt64Timestamp`: every scalar a string; `NUMERIC`
//!   without trailing zeros, `BYTES` in base64, `DATETIME` as
//!   `2026-12-02T07:05:09.250000`, `TIMESTAMP` as microseconds since the
//!   epoch, `JSON` as text;
//! - errors: 400 `invalidQuery` with BigQuery's `at [line:column]`, 404
//!   `notFound` for a missing table, 403 `rateLimitExceeded` when throttled
//!   (a knob).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

use crate::keys::TestKey;

pub const PROJECT: &str = "ebb-test-project";
pub const CLIENT_EMAIL: &str = "ebb-reader@ebb-test-project.iam.gserviceaccount.com";
pub const KEY_ID: &str = "5f2c1e9d0a7b4c3e8f6a1b2c3d4e5f60718293a4";
pub const ACCESS_TOKEN: &str = "ya29.emulated-access-token";
/// BigQuery bills at least this much per query.
const MIN_BILLED: u64 = 10 * 1024 * 1024;

/// A service account's JSON key, as IAM downloads it.
pub fn service_account_json(key: &TestKey) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": key.private_pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "109876543210987654321",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string()
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: &'static str,
    pub status: u16,
    pub dry_run: bool,
    pub labels: Value,
    pub page_token: Option<String>,
}

struct Job {
    polls_left: u32,
    schema: Value,
    rows: Vec<Value>,
}

pub struct BigQueryState {
    warehouse: PgPool,
    public_key: Option<Vec<u8>>,
    jobs: HashMap<String, Job>,
    pub log: Vec<Logged>,
    /// Real runs answer `jobComplete: false` this many times.
    pub pending_polls: u32,
    /// The next this many requests are answered 403 `rateLimitExceeded`.
    pub throttle_next: u32,
    pub executions: usize,
}

#[derive(Clone)]
pub struct BigQuery {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<BigQueryState>>,
}

type Shared = Arc<Mutex<BigQueryState>>;

impl BigQuery {
    pub async fn start(warehouse: PgPool, key: Option<&TestKey>) -> BigQuery {
        let state = Arc::new(Mutex::new(BigQueryState {
            warehouse,
            public_key: key.map(|k| k.public_der.clone()),
            jobs: HashMap::new(),
            log: Vec::new(),
            pending_polls: 0,
            throttle_next: 0,
            executions: 0,
        }));
        let app = Router::new()
            .route("/bigquery/v2/projects/{project}/queries", post(query))
            .route(
                "/bigquery/v2/projects/{project}/queries/{job}",
                get(results),
            )
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        BigQuery { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut BigQueryState) -> T) -> T {
        f(&mut self.state.lock().expect("bigquery emulator lock"))
    }
}

fn error(status: StatusCode, reason: &str, message: &str) -> Response {
    let google_status = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        _ => "UNKNOWN",
    };
    (
        status,
        axum::Json(json!({
            "error": {
                "code": status.as_u16(),
                "message": message,
                "errors": [{ "message": message, "domain": "global", "reason": reason }],
                "status": google_status,
            }
        })),
    )
        .into_response()
}

fn authenticate(state: &BigQueryState, headers: &HeaderMap) -> Result<(), String> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("no bearer token")?;
    if token == ACCESS_TOKEN {
        return Ok(());
    }
    let public = state.public_key.as_ref().ok_or("no service account key")?;
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("not a JWT".into());
    };
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let (header, claims) = (decode(header)?, decode(claims)?);
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| e.to_string())?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public)
        .verify(
            &token.as_bytes()[..token.rfind('.').unwrap_or(0)],
            &signature,
        )
        .map_err(|_| "bad signature")?;
    if header["alg"] != "RS256" || header["kid"] != KEY_ID {
        return Err(format!("header {header}"));
    }
    if claims["iss"] != CLIENT_EMAIL
        || claims["sub"] != CLIENT_EMAIL
        || claims["aud"] != "https://bigquery.googleapis.com/"
    {
        return Err(format!("claims {claims}"));
    }
    let now = chrono::Utc::now().timestamp();
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if exp <= now || exp - iat > 3600 {
        return Err(format!("iat {iat} exp {exp}"));
    }
    Ok(())
}

/// Checks credentials and throttling; logs the request.
fn admit(shared: &Shared, headers: &HeaderMap, mut entry: Logged) -> Result<PgPool, Box<Response>> {
    let mut state = shared.lock().expect("lock");
    if let Err(why) = authenticate(&state, headers) {
        eprintln!("bigquery emulator: credentials refused: {why}");
        entry.status = 401;
        state.log.push(entry);
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )));
    }
    if state.throttle_next > 0 {
        state.throttle_next -= 1;
        entry.status = 403;
        state.log.push(entry);
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "rateLimitExceeded",
            "Exceeded rate limits: too many api requests per user per method for this user_method.",
        )));
    }
    entry.status = 200;
    state.log.push(entry);
    Ok(state.warehouse.clone())
}

async fn query(
    State(shared): State<Shared>,
    Path(project): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let dry_run = body["dryRun"].as_bool().unwrap_or(false);
    let entry = Logged {
        method: "jobs.query",
        status: 0,
        dry_run,
        labels: body["labels"].clone(),
        page_token: None,
    };
    let pool = match admit(&shared, &headers, entry) {
        Ok(pool) => pool,
        Err(response) => return *response,
    };
    let Some(sql) = body["query"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Required parameter is missing: query",
        );
    };
    let table = match execute(&pool, sql, dry_run).await {
        Ok(table) => table,
        Err(response) => return response,
    };
    let billed = MIN_BILLED.max(table.bytes);
    if let Some(max) = body["maximumBytesBilled"]
        .as_str()
        .and_then(|m| m.parse::<u64>().ok())
        && billed > max
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bytesBilledLimitExceeded",
            &format!("Query exceeded limit for bytes billed: {max}. {billed} or higher required."),
        );
    }
    if dry_run {
        return axum::Json(json!({
            "kind": "bigquery#queryResponse",
            "schema": table.schema,
            "jobReference": { "projectId": project, "location": "EU" },
            "totalBytesProcessed": table.bytes.to_string(),
            "jobComplete": true,
            "cacheHit": false,
        }))
        .into_response();
    }
    let job_id = format!("job_{}", uuid::Uuid::now_v7().simple());
    let page_size = body["maxResults"].as_u64().unwrap_or(100_000) as usize;
    let mut state = shared.lock().expect("lock");
    state.executions += 1;
    let polls_left = state.pending_polls;
    state.jobs.insert(
        job_id.clone(),
        Job {
            polls_left,
            schema: table.schema,
            rows: table.rows,
        },
    );
    page(&mut state, &project, &job_id, 0, page_size)
}

async fn results(
    State(shared): State<Shared>,
    Path((project, job_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let entry = Logged {
        method: "jobs.getQueryResults",
        status: 0,
        dry_run: false,
        labels: Value::Null,
        page_token: params.get("pageToken").cloned(),
    };
    if let Err(response) = admit(&shared, &headers, entry) {
        return *response;
    }
    let start = params
        .get("pageToken")
        .and_then(|t| t.strip_prefix("rows-from-"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page_size = params
        .get("maxResults")
        .and_then(|m| m.parse().ok())
        .unwrap_or(100_000);
    let mut state = shared.lock().expect("lock");
    page(&mut state, &project, &job_id, start, page_size)
}

fn page(
    state: &mut BigQueryState,
    project: &str,
    job_id: &str,
    start: usize,
    page_size: usize,
) -> Response {
    let Some(job) = state.jobs.get_mut(job_id) else {
        return error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("Not found: Job {project}:EU.{job_id}"),
        );
    };
    let reference = json!({ "projectId": project, "jobId": job_id, "location": "EU" });
    if job.polls_left > 0 {
        job.polls_left -= 1;
        return axum::Json(json!({
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": reference,
            "jobComplete": false,
        }))
        .into_response();
    }
    let end = (start + page_size.max(1)).min(job.rows.len());
    let mut answer = json!({
        "kind": "bigquery#getQueryResultsResponse",
        "schema": job.schema,
        "jobReference": reference,
        "totalRows": job.rows.len().to_string(),
        "rows": job.rows[start.min(end)..end],
        "jobComplete": true,
        "cacheHit": false,
    });
    if end < job.rows.len() {
        answer["pageToken"] = Value::String(format!("rows-from-{end}"));
    }
    axum::Json(answer).into_response()
}

struct Table {
    schema: Value,
    rows: Vec<Value>,
    bytes: u64,
}

const VIEW_PREFIX: &str = "CREATE TEMP VIEW ebb_bq_result AS ";

async fn execute(pool: &PgPool, sql: &str, dry_run: bool) -> Result<Table, Response> {
    let internal = |e: sqlx::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backendError",
            &e.to_string(),
        )
    };
    let mut tx = pool.begin().await.map_err(internal)?;
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{VIEW_PREFIX}{sql}")))
        .execute(&mut *tx)
        .await
    {
        return Err(bigquery_error(sql, &e));
    }
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'ebb_bq_result'::regclass AND attnum > 0 ORDER BY attnum",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(internal)?;
    let mut fields = Vec::new();
    let mut exprs = Vec::new();
    for (name, pg_type) in &columns {
        let c = format!("\"{}\"", name.replace('"', "\"\""));
        let (kind, expr) = match pg_type.as_str() {
            "smallint" | "integer" | "bigint" => ("INTEGER", format!("{c}::text")),
            t if t.starts_with("numeric") => ("NUMERIC", format!("trim_scale({c})::text")),
            "real" | "double precision" => ("FLOAT", format!("{c}::float8::text")),
            "boolean" => (
                "BOOLEAN",
                format!("CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END"),
            ),
            "date" => ("DATE", format!("{c}::text")),
            t if t.starts_with("timestamp") && t.ends_with("with time zone") => (
                "TIMESTAMP",
                format!("(extract(epoch from {c}) * 1000000)::bigint::text"),
            ),
            t if t.starts_with("timestamp") => (
                "DATETIME",
                format!("to_char({c}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"),
            ),
            t if t.starts_with("time") => (
                "TIME",
                format!("to_char(DATE '2000-01-01' + {c}, 'HH24:MI:SS.US')"),
            ),
            "bytea" => (
                "BYTES",
                format!("replace(encode({c}, 'base64'), E'\\n', '')"),
            ),
            "json" | "jsonb" => ("JSON", format!("{c}::jsonb::text")),
            _ => ("STRING", format!("{c}::text")),
        };
        fields.push(json!({ "name": name, "type": kind, "mode": "NULLABLE" }));
        exprs.push(expr);
    }
    let schema = json!({ "fields": fields });
    let select = format!(
        "SELECT {} FROM ebb_bq_result",
        if exprs.is_empty() {
            "1".to_owned()
        } else {
            exprs.join(", ")
        }
    );
    let pg_rows = sqlx::query(sqlx::AssertSqlSafe(select))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| bigquery_error(sql, &e))?;
    let mut bytes = 0u64;
    let rows: Vec<Value> = pg_rows
        .iter()
        .map(|row| {
            let cells: Vec<Value> = (0..exprs.len())
                .map(|i| match row.try_get::<Option<String>, _>(i) {
                    Ok(Some(text)) => {
                        bytes += text.len() as u64;
                        json!({ "v": text })
                    }
                    _ => json!({ "v": null }),
                })
                .collect();
            json!({ "f": cells })
        })
        .collect();
    let _ = tx.rollback().await;
    Ok(Table {
        schema,
        rows: if dry_run { Vec::new() } else { rows },
        bytes,
    })
}

/// Postgres's error as BigQuery words it, with `at [line:column]`.
fn bigquery_error(sql: &str, error: &sqlx::Error) -> Response {
    let Some(db) = error.as_database_error() else {
        return self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backendError",
            &error.to_string(),
        );
    };
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
    let at = pg
        .and_then(|pg| match pg.position() {
            Some(sqlx::postgres::PgErrorPosition::Original(p)) => p.checked_sub(VIEW_PREFIX.len()),
            _ => None,
        })
        .filter(|&p| p >= 1)
        .map(|p| {
            let before: String = sql.chars().take(p - 1).collect();
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .map(|l| l.chars().count())
                .unwrap_or(0)
                + 1;
            let token: String = sql
                .chars()
                .skip(p - 1)
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (line, column, token)
        });
    let quoted = db.message().split('"').nth(1).unwrap_or("").to_owned();
    match (db.code().as_deref(), at) {
        (Some("42601"), Some((line, column, token))) => self::error(
            StatusCode::BAD_REQUEST,
            "invalidQuery",
            &format!("Syntax error: Unexpected identifier \"{token}\" at [{line}:{column}]"),
        ),
        (Some("42703"), Some((line, column, _))) => self::error(
            StatusCode::BAD_REQUEST,
            "invalidQuery",
            &format!("Unrecognized name: {quoted} at [{line}:{column}]"),
        ),
        (Some("42P01"), _) => self::error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("Not found: Table {PROJECT}:{quoted} was not found in location EU"),
        ),
        _ => self::error(StatusCode::BAD_REQUEST, "invalidQuery", db.message()),
    }
}
