//! Snowflake's SQL API v2: submitting a statement (`POST
//! /api/v2/statements`), polling it while it runs (202), reading the
//! result's partitions (`GET /api/v2/statements/{handle}?partition=N`), and
//! retrying throttled or unavailable answers with the same `requestId`.

use std::time::Duration;

use serde::Deserialize;

use super::auth::Credentials;
use super::config::SnowflakeSourceConfig;

/// Attempts at a request answered 429 or 5xx before the error is final.
const MAX_ATTEMPTS: u32 = 8;
/// Polls of a running statement: every 250 ms at first, then up to 5 s.
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_MAX: Duration = Duration::from_secs(5);

pub(super) struct Api {
    http: reqwest::Client,
    base_url: String,
    credentials: Credentials,
    warehouse: Option<String>,
    role: Option<String>,
    database: Option<String>,
    schema: Option<String>,
    timeout_secs: u64,
}

/// A result's rows: one string (or null) per column, in Snowflake's jsonv2
/// encoding.
pub(super) type Rows = Vec<Vec<Option<String>>>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResultSet {
    pub result_set_meta_data: Option<Metadata>,
    #[serde(default)]
    pub data: Rows,
    pub statement_handle: Option<String>,
    pub statement_status_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Metadata {
    pub row_type: Vec<ColumnType>,
    #[serde(default)]
    pub partition_info: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ColumnType {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub scale: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PartitionInfo {
    pub row_count: u64,
}

#[derive(Debug, Deserialize)]
struct Partition {
    #[serde(default)]
    data: Rows,
}

/// Snowflake's error body.
#[derive(Debug, Default, Deserialize)]
struct Failure {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug)]
pub(super) enum ApiError {
    /// 401 or 403: credentials, or what the role may use.
    Auth {
        status: u16,
        code: String,
        message: String,
    },
    /// 422 (or 408: the statement ran out of time): the SQL's fault.
    Statement {
        code: String,
        message: String,
    },
    Other(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Auth {
                status,
                code,
                message,
            } => write!(f, "HTTP {status}, Snowflake code {code}: {message}"),
            ApiError::Statement { code, message } => write!(f, "Snowflake code {code}: {message}"),
            ApiError::Other(message) => f.write_str(message),
        }
    }
}

impl Api {
    pub(super) fn new(config: &SnowflakeSourceConfig) -> Result<Api, String> {
        let credentials = Credentials::new(&config.account, &config.user, &config.auth)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("ebb/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Api {
            http,
            base_url: config.base_url.clone(),
            credentials,
            warehouse: config.warehouse.clone(),
            role: config.role.clone(),
            database: config.database.clone(),
            schema: config.schema.clone(),
            timeout_secs: config.statement_timeout_secs,
        })
    }

    /// Runs `statement` to completion and returns its first partition with
    /// the result's metadata.
    pub(super) async fn execute(
        &self,
        statement: &str,
        query_tag: &str,
    ) -> Result<ResultSet, ApiError> {
        let mut body = serde_json::json!({
            "statement": statement,
            "timeout": self.timeout_secs,
            "parameters": { "query_tag": query_tag },
        });
        for (key, value) in [
            ("warehouse", &self.warehouse),
            ("role", &self.role),
            ("database", &self.database),
            ("schema", &self.schema),
        ] {
            if let Some(value) = value {
                body[key] = serde_json::Value::String(value.clone());
            }
        }
        let request_id = uuid::Uuid::now_v7().to_string();
        let url = format!("{}/api/v2/statements", self.base_url);
        let mut answer = self
            .send(|retry| {
                // A resubmission says so, and Snowflake runs it at most once.
                let retry = if retry { "&retry=true" } else { "" };
                self.http
                    .post(format!("{url}?requestId={request_id}{retry}"))
                    .json(&body)
            })
            .await?;
        let mut wait = POLL_FIRST;
        loop {
            let (status, text) = answer;
            match status {
                200 => {
                    return serde_json::from_str(&text).map_err(|e| {
                        ApiError::Other(format!(
                            "Snowflake's result is not what the SQL API documents: {e}"
                        ))
                    });
                }
                202 => {
                    let running: ResultSet = serde_json::from_str(&text).map_err(|e| {
                        ApiError::Other(format!(
                            "Snowflake's status is not what the SQL API documents: {e}"
                        ))
                    })?;
                    let Some(status_url) = running.statement_status_url.or_else(|| {
                        running
                            .statement_handle
                            .map(|h| format!("/api/v2/statements/{h}"))
                    }) else {
                        return Err(ApiError::Other(
                            "Snowflake answered 202 without a statement handle".to_owned(),
                        ));
                    };
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(POLL_MAX);
                    let status_url = format!("{}{status_url}", self.base_url);
                    answer = self.send(|_| self.http.get(&status_url)).await?;
                }
                _ => return Err(failure(status, &text)),
            }
        }
    }

    /// Partition `index` (1 and up) of a finished statement's result.
    pub(super) async fn partition(&self, handle: &str, index: usize) -> Result<Rows, ApiError> {
        let url = format!("{}/api/v2/statements/{handle}", self.base_url);
        let (status, text) = self
            .send(|_| self.http.get(format!("{url}?partition={index}")))
            .await?;
        if status != 200 {
            return Err(failure(status, &text));
        }
        let partition: Partition = serde_json::from_str(&text).map_err(|e| {
            ApiError::Other(format!(
                "partition {index} is not what the SQL API documents: {e}"
            ))
        })?;
        Ok(partition.data)
    }

    /// Sends a request with the credentials, retrying 429 and 5xx answers
    /// and lost connections (after `Retry-After` when given); returns the
    /// final status and body.
    async fn send(
        &self,
        build: impl Fn(bool) -> reqwest::RequestBuilder,
    ) -> Result<(u16, String), ApiError> {
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=MAX_ATTEMPTS {
            let (token, token_type) = self
                .credentials
                .token(chrono::Utc::now().timestamp())
                .map_err(ApiError::Other)?;
            let request = build(attempt > 1)
                .bearer_auth(token)
                .header("X-Snowflake-Authorization-Token-Type", token_type)
                .header("Accept", "application/json");
            let last = attempt == MAX_ATTEMPTS;
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response
                        .text()
                        .await
                        .map_err(|e| ApiError::Other(format!("reading Snowflake's answer: {e}")))?;
                    let retryable = status == 429 || (500..600).contains(&status);
                    if !retryable || last {
                        return Ok((status, text));
                    }
                    tracing::warn!(status, attempt, "Snowflake asked to retry");
                    tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
                }
                Err(e) if last => {
                    return Err(ApiError::Other(format!("cannot reach Snowflake: {e}")));
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "Snowflake unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        Err(ApiError::Other("Snowflake kept asking to retry".to_owned()))
    }
}

fn failure(status: u16, text: &str) -> ApiError {
    let body: Failure = serde_json::from_str(text).unwrap_or_else(|_| Failure {
        code: String::new(),
        message: text.chars().take(300).collect(),
    });
    match status {
        401 | 403 => ApiError::Auth {
            status,
            code: body.code,
            message: body.message,
        },
        408 | 422 => ApiError::Statement {
            code: body.code,
            message: body.message,
        },
        _ => ApiError::Other(format!(
            "HTTP {status} from Snowflake, code {}: {}",
            body.code, body.message
        )),
    }
}
