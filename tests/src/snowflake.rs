//! An emulator of Snowflake's SQL API v2, following Snowflake's public
//! documentation, not Ebb's code. Statements run on a real Postgres
//! database behind it, and their results come back as Snowflake sends them:
//!
//! - auth: `Authorization: Bearer` with `X-Snowflake-Authorization-Token-Type`
//!   `KEYPAIR_JWT` (an RS256 JWT whose `iss` is `ACCOUNT.USER.SHA256:<the
//!   registered public key's fingerprint>`, `sub` `ACCOUNT.USER`, at most an
//!   hour between `iat` and `exp`, not expired) or `OAUTH` (a known token);
//!   anything else is 401 with Snowflake's error body;
//! - `POST /api/v2/statements?requestId=…[&retry=true]`: runs the
//!   statement; a resubmitted `requestId` answers the first run's result
//!   without running it again; `database`, `schema`, `warehouse`, `role` and
//!   the `query_tag` parameter are recorded;
//! - 200 with a `ResultSet` (partition 0 inline, `partitionInfo` for the
//!   others), or 202 with a `QueryStatus` (code `333334`) while the
//!   statement "runs" (a knob), polled at `GET /api/v2/statements/{handle}`;
//!   `GET …?partition=N` answers partition N's `data`;
//! - jsonv2 values: every value a string; `FIXED` numbers as decimals,
//!   `REAL` as floats, `BOOLEAN` as `true`/`false`, `DATE` as days since the
//!   epoch, `TIME` as seconds since midnight and `TIMESTAMP_NTZ` as seconds
//!   since the epoch (nine decimals), `TIMESTAMP_TZ` the same plus the
//!   offset in minutes + 1440, `BINARY` as hex, `VARIANT` as JSON text;
//!   unquoted (lower case in Postgres) column names in upper case;
//! - errors: 422 `QueryFailureStatus` with Snowflake's messages and codes
//!   (`001003` syntax error `line L at position P`, `000904` invalid
//!   identifier, `002003` object does not exist); 429 when throttled (a
//!   knob), with `Retry-After`.

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

pub const ACCOUNT: &str = "EBBTEST-ACCOUNT1";
pub const USER: &str = "EBB_READER";
pub const OAUTH_TOKEN: &str = "emulated-oauth-access-token";

pub use crate::keys::TestKey;

/// One request, as the emulator saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub token_type: String,
    pub statement: Option<String>,
    pub query_tag: Option<String>,
    pub context: HashMap<String, String>,
}

struct Statement {
    polls_left: u32,
    result: Result<Table, (String, String)>,
    request_id: String,
}

struct Table {
    row_type: Vec<Value>,
    rows: Vec<Vec<Value>>,
}

pub struct SnowflakeState {
    warehouse: PgPool,
    public_key: Option<(Vec<u8>, String)>,
    statements: HashMap<String, Statement>,
    by_request_id: HashMap<String, String>,
    pub log: Vec<Logged>,
    /// The next statements answer 202 this many times before their result.
    pub pending_polls: u32,
    /// Rows per result partition.
    pub rows_per_partition: usize,
    /// The next this many requests are answered 429.
    pub throttle_next: u32,
    /// How many statements actually ran on the database.
    pub executions: usize,
}

#[derive(Clone)]
pub struct Snowflake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<SnowflakeState>>,
}

type Shared = Arc<Mutex<SnowflakeState>>;

impl Snowflake {
    /// Starts the emulator over the Postgres database `warehouse`, with
    /// `key`'s public key registered for [`USER`].
    pub async fn start(warehouse: PgPool, key: Option<&TestKey>) -> Snowflake {
        let state = Arc::new(Mutex::new(SnowflakeState {
            warehouse,
            public_key: key.map(|k| (k.public_der.clone(), k.fingerprint.clone())),
            statements: HashMap::new(),
            by_request_id: HashMap::new(),
            log: Vec::new(),
            pending_polls: 0,
            rows_per_partition: 1000,
            throttle_next: 0,
            executions: 0,
        }));
        let app = Router::new()
            .route("/api/v2/statements", post(submit))
            .route("/api/v2/statements/{handle}", get(status))
            .with_state(state.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        Snowflake { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut SnowflakeState) -> T) -> T {
        f(&mut self.state.lock().expect("snowflake emulator lock"))
    }
}

fn failure(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message, "sqlState": "08001" })),
    )
        .into_response()
}

/// Checks the request's credentials: the token type, or Snowflake's code
/// and message for the 401.
fn authenticate(
    state: &SnowflakeState,
    headers: &HeaderMap,
) -> Result<String, (&'static str, String)> {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err((
            "390101",
            "Authorization header not found in the request data.".into(),
        ));
    };
    let token_type = headers
        .get("x-snowflake-authorization-token-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("OAUTH")
        .to_owned();
    match token_type.as_str() {
        "OAUTH" if token == OAUTH_TOKEN => Ok(token_type),
        "OAUTH" => Err(("390303", "Invalid OAuth access token. ".into())),
        "KEYPAIR_JWT" => match verify_jwt(state, token) {
            Ok(()) => Ok(token_type),
            Err(why) => {
                eprintln!("snowflake emulator: JWT refused: {why}");
                Err((
                    "390144",
                    "JWT token is invalid. [a0f6fb4f-5ab1-4c86-bee7-6b4fa3a8a1f0]".into(),
                ))
            }
        },
        other => Err((
            "390101",
            format!("Unsupported authorization token type {other}."),
        )),
    }
}

fn verify_jwt(state: &SnowflakeState, token: &str) -> Result<(), String> {
    let Some((public_der, fingerprint)) = &state.public_key else {
        return Err("no public key is registered for the user".into());
    };
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three parts".into());
    };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| e.to_string())?;
    let signed = &token[..token.rfind('.').unwrap_or(0)];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_der)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "bad signature".to_owned())?;
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let qualified = format!("{ACCOUNT}.{USER}");
    if claims["sub"] != qualified.as_str() {
        return Err(format!("sub {}", claims["sub"]));
    }
    if claims["iss"] != format!("{qualified}.{fingerprint}").as_str() {
        return Err(format!("iss {}", claims["iss"]));
    }
    let now = chrono::Utc::now().timestamp();
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if exp <= now || exp - iat > 3600 || iat > now + 60 {
        return Err(format!("iat {iat} exp {exp} now {now}"));
    }
    Ok(())
}

fn log(state: &mut SnowflakeState, entry: Logged) {
    state.log.push(entry);
}

async fn submit(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let statement = body["statement"].as_str().map(str::to_owned);
    let query_tag = body["parameters"]["query_tag"].as_str().map(str::to_owned);
    let context: HashMap<String, String> = ["database", "schema", "warehouse", "role"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), body[k].as_str()?.to_owned())))
        .collect();
    let request_id = query.get("requestId").cloned().unwrap_or_default();
    let (pool, known) = {
        let mut state = shared.lock().expect("lock");
        let mut entry = Logged {
            method: "POST",
            path: "/api/v2/statements".into(),
            status: 0,
            token_type: String::new(),
            statement: statement.clone(),
            query_tag: query_tag.clone(),
            context,
        };
        let token_type = match authenticate(&state, &headers) {
            Ok(t) => t,
            Err((code, message)) => {
                entry.status = 401;
                log(&mut state, entry);
                return failure(StatusCode::UNAUTHORIZED, code, &message);
            }
        };
        entry.token_type = token_type;
        if state.throttle_next > 0 {
            state.throttle_next -= 1;
            entry.status = 429;
            log(&mut state, entry);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                axum::Json(
                    json!({ "code": "390500", "message": "Too many requests. Try again later." }),
                ),
            )
                .into_response();
        }
        entry.status = 200;
        log(&mut state, entry);
        let known = state.by_request_id.get(&request_id).cloned();
        (state.warehouse.clone(), known)
    };
    let Some(sql) = statement else {
        return failure(
            StatusCode::BAD_REQUEST,
            "391902",
            "Missing statement in the request body.",
        );
    };
    // A resubmitted request (retry=true) answers the first run's result.
    let handle = match known.filter(|_| query.get("retry").is_some_and(|r| r == "true")) {
        Some(handle) => handle,
        None => {
            let result = execute(&pool, &sql).await;
            let handle = uuid::Uuid::now_v7().to_string();
            let mut state = shared.lock().expect("lock");
            state.executions += 1;
            let polls_left = state.pending_polls;
            state.statements.insert(
                handle.clone(),
                Statement {
                    polls_left,
                    result,
                    request_id: request_id.clone(),
                },
            );
            state.by_request_id.insert(request_id, handle.clone());
            handle
        }
    };
    answer(&shared, &handle, None)
}

async fn status(
    State(shared): State<Shared>,
    Path(handle): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    {
        let mut state = shared.lock().expect("lock");
        let mut entry = Logged {
            method: "GET",
            path: format!("/api/v2/statements/{handle}"),
            status: 200,
            token_type: String::new(),
            statement: None,
            query_tag: None,
            context: HashMap::new(),
        };
        match authenticate(&state, &headers) {
            Ok(t) => entry.token_type = t,
            Err((code, message)) => {
                entry.status = 401;
                log(&mut state, entry);
                return failure(StatusCode::UNAUTHORIZED, code, &message);
            }
        }
        log(&mut state, entry);
    }
    let partition = query.get("partition").and_then(|p| p.parse::<usize>().ok());
    answer(&shared, &handle, partition)
}

fn answer(shared: &Shared, handle: &str, partition: Option<usize>) -> Response {
    let mut state = shared.lock().expect("lock");
    let per_partition = state.rows_per_partition.max(1);
    let Some(statement) = state.statements.get_mut(handle) else {
        return failure(StatusCode::NOT_FOUND, "333333", "Statement not found.");
    };
    let status_url = format!(
        "/api/v2/statements/{handle}?requestId={}",
        statement.request_id
    );
    if statement.polls_left > 0 {
        statement.polls_left -= 1;
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "code": "333334",
                "message": "Asynchronous execution in progress. Use provided query id to perform query monitoring and management.",
                "statementHandle": handle,
                "statementStatusUrl": status_url,
            })),
        )
            .into_response();
    }
    let table = match &statement.result {
        Ok(table) => table,
        Err((code, message)) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({
                    "code": code,
                    "message": message,
                    "sqlState": "42000",
                    "statementHandle": handle,
                })),
            )
                .into_response();
        }
    };
    let chunks: Vec<&[Vec<Value>]> = if table.rows.is_empty() {
        vec![&[]]
    } else {
        table.rows.chunks(per_partition).collect()
    };
    if let Some(index) = partition.filter(|&p| p > 0) {
        return match chunks.get(index) {
            Some(rows) => axum::Json(json!({ "data": rows })).into_response(),
            None => failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                "000709",
                "Partition out of range.",
            ),
        };
    }
    let partition_info: Vec<Value> = chunks
        .iter()
        .map(|rows| json!({ "rowCount": rows.len(), "uncompressedSize": 100 * rows.len() }))
        .collect();
    axum::Json(json!({
        "resultSetMetaData": {
            "numRows": table.rows.len(),
            "format": "jsonv2",
            "partitionInfo": partition_info,
            "rowType": table.row_type,
        },
        "data": chunks[0],
        "code": "090001",
        "statementStatusUrl": status_url,
        "sqlState": "00000",
        "statementHandle": handle,
        "message": "Statement executed successfully.",
        "createdOn": chrono::Utc::now().timestamp_millis(),
    }))
    .into_response()
}

const VIEW_PREFIX: &str = "CREATE TEMP VIEW ebb_sf_result AS ";

/// Runs `sql` on Postgres and returns its result as Snowflake types it, or
/// Snowflake's error code and message.
async fn execute(pool: &PgPool, sql: &str) -> Result<Table, (String, String)> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| ("000603".into(), e.to_string()))?;
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{VIEW_PREFIX}{sql}")))
        .execute(&mut *tx)
        .await;
    if let Err(e) = created {
        return Err(snowflake_error(sql, &e));
    }
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'ebb_sf_result'::regclass AND attnum > 0 ORDER BY attnum",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| ("000603".into(), e.to_string()))?;
    let mut row_type = Vec::new();
    let mut exprs = Vec::new();
    for (name, pg_type) in &columns {
        let c = format!("\"{}\"", name.replace('"', "\"\""));
        let (kind, scale, expr) = match pg_type.as_str() {
            "smallint" | "integer" | "bigint" => ("fixed", 0, format!("{c}::text")),
            t if t.starts_with("numeric(") => {
                let scale = t
                    .trim_end_matches(')')
                    .split(',')
                    .nth(1)
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                ("fixed", scale, format!("{c}::text"))
            }
            "numeric" => {
                // Snowflake types an expression's NUMBER by its scale.
                let scale: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT coalesce(max(scale({c})), 0) FROM ebb_sf_result"
                )))
                .fetch_one(&mut *tx)
                .await
                .unwrap_or(0);
                ("fixed", scale as i64, format!("{c}::text"))
            }
            "real" | "double precision" => {
                ("real", 0, format!("replace({c}::text, 'Infinity', 'inf')"))
            }
            "boolean" => (
                "boolean",
                0,
                format!("CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END"),
            ),
            "date" => ("date", 0, format!("({c} - DATE '1970-01-01')::text")),
            t if t.starts_with("timestamp") && t.ends_with("with time zone") => (
                "timestamp_tz",
                9,
                format!("extract(epoch from {c})::numeric(30,9)::text || ' 1440'"),
            ),
            t if t.starts_with("timestamp") => (
                "timestamp_ntz",
                9,
                format!("extract(epoch from {c})::numeric(30,9)::text"),
            ),
            t if t.starts_with("time") => (
                "time",
                9,
                format!("extract(epoch from {c})::numeric(30,9)::text"),
            ),
            "bytea" => ("binary", 0, format!("upper(encode({c}, 'hex'))")),
            "json" | "jsonb" => ("variant", 0, format!("jsonb_pretty({c}::jsonb)")),
            _ => ("text", 0, format!("{c}::text")),
        };
        // Unquoted identifiers: Postgres folds them to lower case,
        // Snowflake to upper case.
        let shown = if name.chars().any(|ch| ch.is_ascii_uppercase()) {
            name.clone()
        } else {
            name.to_ascii_uppercase()
        };
        row_type.push(json!({
            "name": shown, "database": "EBB", "schema": "PUBLIC", "table": "",
            "type": kind, "scale": scale, "precision": if kind == "fixed" { json!(38) } else { Value::Null },
            "length": null, "byteLength": null, "nullable": true, "collation": null,
        }));
        exprs.push(expr);
    }
    let select = if exprs.is_empty() {
        "SELECT FROM ebb_sf_result".to_owned()
    } else {
        format!("SELECT {} FROM ebb_sf_result", exprs.join(", "))
    };
    let pg_rows = sqlx::query(sqlx::AssertSqlSafe(select))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| snowflake_error(sql, &e))?;
    let rows = pg_rows
        .iter()
        .map(|row| {
            (0..exprs.len())
                .map(|i| match row.try_get::<Option<String>, _>(i) {
                    Ok(Some(text)) => Value::String(text),
                    _ => Value::Null,
                })
                .collect()
        })
        .collect();
    let _ = tx.rollback().await;
    Ok(Table { row_type, rows })
}

/// Postgres's error as Snowflake words a compilation error: the position
/// as `line L at position P` (P from 0) in the statement.
fn snowflake_error(sql: &str, error: &sqlx::Error) -> (String, String) {
    let Some(db) = error.as_database_error() else {
        return ("000603".into(), error.to_string());
    };
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
    let position = pg.and_then(|pg| match pg.position() {
        Some(sqlx::postgres::PgErrorPosition::Original(p)) => p.checked_sub(VIEW_PREFIX.len()),
        _ => None,
    });
    let (line, column, token) = match position {
        Some(p) if p >= 1 => {
            let before: String = sql.chars().take(p - 1).collect();
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .map(|l| l.chars().count())
                .unwrap_or(0);
            let token: String = sql
                .chars()
                .skip(p - 1)
                .take_while(|c| !c.is_whitespace())
                .collect();
            (line, column, token)
        }
        _ => (1, 0, String::new()),
    };
    let quoted = db
        .message()
        .split('"')
        .nth(1)
        .unwrap_or("")
        .to_ascii_uppercase();
    match db.code().as_deref() {
        Some("42601") => (
            "001003".into(),
            format!(
                "SQL compilation error:\nsyntax error line {line} at position {column} unexpected '{token}'."
            ),
        ),
        Some("42703") => (
            "000904".into(),
            format!(
                "SQL compilation error: error line {line} at position {column}\ninvalid identifier '{quoted}'"
            ),
        ),
        Some("42P01") => (
            "002003".into(),
            format!("SQL compilation error:\nObject '{quoted}' does not exist or not authorized."),
        ),
        _ => ("100000".into(), db.message().to_owned()),
    }
}
