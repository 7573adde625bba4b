//! BigQuery's REST API v2: `jobs.query` (a dry run to describe a model, a
//! real run to read it) and `jobs.getQueryResults` (polling an unfinished
//! job, then one page of rows at a time), with a service account's
//! self-signed JWT or an access token, retrying rate-limit and server
//! errors.

use std::time::Duration;

use serde::Deserialize;

use super::config::{BigQueryAuth, BigQuerySourceConfig};
use crate::secret::Secret;
use crate::sources::jwt::RsaSigner;

const MAX_ATTEMPTS: u32 = 8;
/// How long one call waits for a job to finish before answering.
const WAIT_MS: u64 = 10_000;
/// Google takes self-signed JWTs for this audience in place of an access
/// token.
const AUDIENCE: &str = "https://bigquery.googleapis.com/";

enum Credentials {
    ServiceAccount {
        email: String,
        key_id: String,
        signer: RsaSigner,
    },
    Token(Secret),
}

#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key_id: String,
    private_key: String,
}

pub(super) struct Api {
    http: reqwest::Client,
    base_url: String,
    project: String,
    location: Option<String>,
    credentials: Credentials,
    maximum_bytes_billed: Option<u64>,
    page_size: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct QueryResponse {
    pub schema: Option<Schema>,
    pub job_reference: Option<JobReference>,
    #[serde(default)]
    pub rows: Vec<Row>,
    pub page_token: Option<String>,
    #[serde(default)]
    pub job_complete: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Schema {
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Row {
    #[serde(default)]
    pub f: Vec<Cell>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Cell {
    #[serde(default)]
    pub v: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JobReference {
    pub project_id: String,
    /// Absent from a dry run's answer: no job ran.
    #[serde(default)]
    pub job_id: String,
    pub location: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

#[derive(Debug)]
pub(super) enum ApiError {
    /// 401, or 403 other than a rate limit: credentials or permissions.
    Auth {
        status: u16,
        message: String,
    },
    /// 400: the query's fault (`invalidQuery`), or a guardrail
    /// (`bytesBilledLimitExceeded`).
    Query {
        reason: String,
        message: String,
    },
    Other(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Auth { status, message } => write!(f, "HTTP {status}: {message}"),
            ApiError::Query { reason, message } => write!(f, "{message} ({reason})"),
            ApiError::Other(message) => f.write_str(message),
        }
    }
}

impl Api {
    pub(super) fn new(config: &BigQuerySourceConfig) -> Result<Api, String> {
        let credentials = match &config.auth {
            BigQueryAuth::AccessToken(token) => Credentials::Token(token.clone()),
            BigQueryAuth::ServiceAccountKey(json) => {
                let key: ServiceAccountKey = serde_json::from_str(json.expose()).map_err(|e| {
                    format!("the credentials are not a service account's JSON key ({e}); download one from IAM → Service accounts → Keys")
                })?;
                Credentials::ServiceAccount {
                    signer: RsaSigner::from_pem(&key.private_key)?,
                    email: key.client_email,
                    key_id: key.private_key_id,
                }
            }
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("ebb/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_millis(WAIT_MS + 60_000))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Api {
            http,
            base_url: config.base_url.clone(),
            project: config.project.clone(),
            location: config.location.clone(),
            credentials,
            maximum_bytes_billed: config.maximum_bytes_billed,
            page_size: config.page_size,
        })
    }

    /// `jobs.query`: runs `sql` (or only plans it, with `dry_run`), with
    /// the sync's name as a job label.
    pub(super) async fn query(
        &self,
        sql: &str,
        dry_run: bool,
        sync: &str,
    ) -> Result<QueryResponse, ApiError> {
        let mut body = serde_json::json!({
            "query": sql,
            "useLegacySql": false,
            "dryRun": dry_run,
            "maxResults": self.page_size,
            "timeoutMs": WAIT_MS,
            "formatOptions": { "useInt64Timestamp": true },
            "labels": { "ebb_sync": label(sync) },
            // Makes a retried request the same job.
            "requestId": uuid::Uuid::now_v7().to_string(),
        });
        if let Some(location) = &self.location {
            body["location"] = serde_json::Value::String(location.clone());
        }
        if let Some(max) = self.maximum_bytes_billed {
            body["maximumBytesBilled"] = serde_json::Value::String(max.to_string());
        }
        let url = format!(
            "{}/bigquery/v2/projects/{}/queries",
            self.base_url, self.project
        );
        self.send(|| self.http.post(&url).json(&body)).await
    }

    /// `jobs.getQueryResults`: waits for the job and answers a page.
    pub(super) async fn results(
        &self,
        job: &JobReference,
        page_token: Option<&str>,
    ) -> Result<QueryResponse, ApiError> {
        let mut params = vec![
            ("maxResults", self.page_size.to_string()),
            ("timeoutMs", WAIT_MS.to_string()),
            ("formatOptions.useInt64Timestamp", "true".to_owned()),
        ];
        if let Some(location) = job.location.as_ref().or(self.location.as_ref()) {
            params.push(("location", location.clone()));
        }
        if let Some(token) = page_token {
            params.push(("pageToken", token.to_owned()));
        }
        let url = url::Url::parse_with_params(
            &format!(
                "{}/bigquery/v2/projects/{}/queries/{}",
                self.base_url, job.project_id, job.job_id
            ),
            &params,
        )
        .map_err(|e| ApiError::Other(e.to_string()))?;
        self.send(|| self.http.get(url.clone())).await
    }

    fn token(&self) -> Result<String, ApiError> {
        match &self.credentials {
            Credentials::Token(token) => Ok(token.expose().to_owned()),
            Credentials::ServiceAccount {
                email,
                key_id,
                signer,
            } => {
                let now = chrono::Utc::now().timestamp();
                signer
                    .sign(
                        &serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": key_id }),
                        &serde_json::json!({
                            "iss": email, "sub": email, "aud": AUDIENCE,
                            "iat": now, "exp": now + 3600,
                        }),
                    )
                    .map_err(ApiError::Other)
            }
        }
    }

    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<QueryResponse, ApiError> {
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=MAX_ATTEMPTS {
            let last = attempt == MAX_ATTEMPTS;
            let answer = build().bearer_auth(self.token()?).send().await;
            match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response
                        .text()
                        .await
                        .map_err(|e| ApiError::Other(format!("reading BigQuery's answer: {e}")))?;
                    if status == 200 {
                        return serde_json::from_str(&text).map_err(|e| {
                            ApiError::Other(format!(
                                "BigQuery's answer is not what its API documents: {e}"
                            ))
                        });
                    }
                    let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                    let reason = body
                        .error
                        .errors
                        .first()
                        .map(|e| e.reason.clone())
                        .unwrap_or_default();
                    let throttled = status == 429
                        || (status == 403
                            && matches!(reason.as_str(), "rateLimitExceeded" | "backendError"))
                        || (500..600).contains(&status);
                    if throttled && !last {
                        tracing::warn!(status, %reason, attempt, "BigQuery asked to retry");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                    let message = if body.error.message.is_empty() {
                        text.chars().take(300).collect()
                    } else {
                        body.error.message
                    };
                    return Err(match status {
                        401 | 403 => ApiError::Auth {
                            status,
                            message: format!("{message} ({})", body.error.status),
                        },
                        // 404: a table (or dataset) the query names does not exist.
                        400 | 404 => ApiError::Query { reason, message },
                        _ => ApiError::Other(format!("HTTP {status} from BigQuery: {message}")),
                    });
                }
                Err(e) if last => {
                    return Err(ApiError::Other(format!("cannot reach BigQuery: {e}")));
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "BigQuery unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        Err(ApiError::Other("BigQuery kept asking to retry".to_owned()))
    }
}

/// A label value BigQuery takes: lower case letters, digits, `_` and `-`,
/// at most 63 characters.
fn label(sync: &str) -> String {
    sync.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}
