//! Calling Salesforce's REST API (`{instance_url}/services/data/vXX.X/…`)
//! and classifying its answers. Errors are arrays of
//! `{"message","errorCode","fields"}`: 401 `INVALID_SESSION_ID` refreshes the
//! token and retries once; 403 `REQUEST_LIMIT_EXCEEDED` (the org's API
//! limit) is back-pressure; other 403s are missing permissions; 404
//! `NOT_FOUND` an unknown object, field or API version; 5xx are transient;
//! other 4xx refuse the content.

use std::time::Duration;

use super::SalesforceConfig;
use reqwest::Method;
use serde_json::Value;

use super::auth::TokenSource;
pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Hints};

const MAX_MESSAGE_CHARS: usize = 1500;

/// A request body.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    None,
    Json(&'a Value),
    /// Bulk API 2.0 job data.
    Csv(&'a str),
}

pub async fn call(
    client: &reqwest::Client,
    config: &SalesforceConfig,
    tokens: &TokenSource,
    method: Method,
    path: &str,
    body: Payload<'_>,
) -> Result<String, Failure> {
    let mut refreshed = false;
    loop {
        let session = tokens.session().await?;
        let url = format!(
            "{}/services/data/v{}{path}",
            session.instance_url, config.api_version
        );
        let mut request = client
            .request(method.clone(), url)
            .bearer_auth(session.access_token.expose());
        match body {
            Payload::None => {}
            Payload::Json(body) => request = request.json(body),
            Payload::Csv(text) => {
                request = request
                    .header("content-type", "text/csv")
                    .body(text.to_owned())
            }
        }
        let answer = api::send(request, "Salesforce", config.delivery.timeout).await?;
        if answer.status == 401 && !refreshed {
            tracing::info!(
                "Salesforce session expired or revoked (401); refreshing the access token"
            );
            tokens.invalidate(&session).await;
            refreshed = true;
            continue;
        }
        if answer.is_success() {
            return Ok(answer.body);
        }
        return Err(classify(answer.status, answer.retry_after, &answer.body));
    }
}

const HINTS: Hints = Hints {
    unauthorized: "Salesforce refused a freshly refreshed token; check the connected app and the user",
    forbidden: "the integration user lacks a permission on this object or field",
};

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    let errors = errors(body);
    if status == 403
        && errors
            .iter()
            .any(|(code, _)| code == "REQUEST_LIMIT_EXCEEDED")
    {
        return Failure::Throttled { retry_after };
    }
    let detail: Vec<String> = errors
        .iter()
        .map(|(code, message)| format!("{code}: {message}"))
        .collect();
    let message = if detail.is_empty() {
        let body = body.trim();
        if body.is_empty() {
            format!("Salesforce {status}")
        } else {
            format!("Salesforce {status}: {body}")
        }
    } else {
        format!("Salesforce {status} {}", detail.join("; "))
    };
    api::classify(
        status,
        retry_after,
        message.chars().take(MAX_MESSAGE_CHARS).collect(),
        &HINTS,
    )
}

/// `[{"message": …, "errorCode": …}]` → (code, message) pairs.
fn errors(body: &str) -> Vec<(String, String)> {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    parsed
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    (
                        e.get("errorCode")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        e.get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_arrays_are_classified() {
        let limit =
            r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        assert_eq!(
            classify(403, None, limit),
            Failure::Throttled { retry_after: None }
        );
        let denied = r#"[{"message":"insufficient access rights on object id","errorCode":"INSUFFICIENT_ACCESS"}]"#;
        assert!(
            matches!(classify(403, None, denied), Failure::Forbidden(m) if m.starts_with("Salesforce 403 INSUFFICIENT_ACCESS"))
        );
        let missing =
            r#"[{"message":"The requested resource does not exist","errorCode":"NOT_FOUND"}]"#;
        assert!(matches!(classify(404, None, missing), Failure::NotFound(_)));
        let bad = r#"[{"message":"Json deserialization failed","errorCode":"JSON_PARSER_ERROR"}]"#;
        assert!(
            matches!(classify(400, None, bad), Failure::Rejected(m) if m.contains("JSON_PARSER_ERROR"))
        );
        assert!(matches!(classify(503, None, ""), Failure::Transient(..)));
    }
}
