//! Calling HubSpot and classifying its answers. Non-2xx answers carry
//! `{"status":"error","message":…,"category":…,"correlationId":…}`: 401 is a
//! bad or expired token, 403 a missing scope, 404 an unknown object type
//! (all fatal: configuration, not content); 429 is back-pressure (its
//! `policyName` says which limit); 5xx, 408 and timeouts are transient; any
//! other 4xx (400 `VALIDATION_ERROR`, 409 `CONFLICT`) refuses the content.

use std::time::Duration;

use ebb_shared::config::HubSpotDestinationConfig;
use reqwest::header::RETRY_AFTER;
use serde_json::Value;

use crate::destinations::util::outcome::Attempt;
use crate::destinations::util::retry::parse_retry_after;

const MAX_MESSAGE_CHARS: usize = 1500;

/// Why a call did not get a 2xx answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 401: the access token is wrong, revoked or expired.
    Unauthorized(String),
    /// 403: the private app lacks a scope for this object type.
    Forbidden(String),
    /// 404: no such object type (or endpoint) in this account.
    NotFound(String),
    /// The host could not be reached at all.
    Unreachable(String),
    Throttled {
        retry_after: Option<Duration>,
    },
    Transient(String, Option<Duration>),
    /// The content was refused (400, 409, other 4xx).
    Rejected(String),
    /// A 2xx answer that does not follow HubSpot's documented shape.
    Unexpected(String),
    /// The destination's config does not fit the account (an unknown or
    /// read-only property in the mapping).
    Misconfigured(String),
}

impl From<Failure> for Attempt {
    fn from(failure: Failure) -> Attempt {
        match failure {
            Failure::Unauthorized(m)
            | Failure::Forbidden(m)
            | Failure::NotFound(m)
            | Failure::Misconfigured(m) => Attempt::Fatal(m),
            Failure::Throttled { retry_after } => Attempt::Throttled { retry_after },
            Failure::Unreachable(message) => Attempt::Transient {
                message,
                retry_after: None,
            },
            Failure::Transient(message, retry_after) => Attempt::Transient {
                message,
                retry_after,
            },
            Failure::Rejected(m) => Attempt::Rejected(m),
            // The request may have been applied; retrying finds out.
            Failure::Unexpected(message) => Attempt::Transient {
                message,
                retry_after: None,
            },
        }
    }
}

pub async fn get(
    client: &reqwest::Client,
    config: &HubSpotDestinationConfig,
    path: &str,
) -> Result<String, Failure> {
    let request = client.get(format!("{}{path}", config.base_url));
    send(request, config).await.map(|(_, body)| body)
}

/// POSTs `body`; returns the status (200, 201, 204 or 207) and body of a
/// 2xx answer.
pub async fn post(
    client: &reqwest::Client,
    config: &HubSpotDestinationConfig,
    path: &str,
    body: &Value,
) -> Result<(u16, String), Failure> {
    let request = client.post(format!("{}{path}", config.base_url)).json(body);
    send(request, config).await
}

async fn send(
    request: reqwest::RequestBuilder,
    config: &HubSpotDestinationConfig,
) -> Result<(u16, String), Failure> {
    let response = request
        .bearer_auth(config.access_token.expose())
        .timeout(Duration::from_secs(config.timeout_secs))
        .send()
        .await
        .map_err(|e| describe_send_error(&e))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let body = response.text().await.map_err(|e| {
        Failure::Transient(
            format!("connection dropped while reading HubSpot's answer: {e}"),
            None,
        )
    })?;
    if (200..300).contains(&status) {
        return Ok((status, body));
    }
    Err(classify(status, retry_after, &body))
}

fn describe_send_error(e: &reqwest::Error) -> Failure {
    let source = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    if e.is_connect() {
        Failure::Unreachable(format!("cannot connect to HubSpot{source}"))
    } else if e.is_timeout() {
        Failure::Transient(format!("HubSpot did not answer in time{source}"), None)
    } else {
        Failure::Transient(format!("request to HubSpot failed{source}"), None)
    }
}

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    let message = error_message(status, body);
    match status {
        401 => Failure::Unauthorized(format!(
            "{message} (check the destination's access_token: HubSpot refused it)"
        )),
        403 => Failure::Forbidden(format!(
            "{message} (the private app lacks a scope this object type needs)"
        )),
        404 => Failure::NotFound(message),
        429 => Failure::Throttled { retry_after },
        408 | 425 => Failure::Transient(message, retry_after),
        501 | 505 => Failure::NotFound(message),
        500..=599 => Failure::Transient(message, retry_after),
        _ => Failure::Rejected(message),
    }
}

/// `HubSpot 400 VALIDATION_ERROR: Property values were not valid: …`.
fn error_message(status: u16, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let text = |field: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let message = match (text("category"), text("message")) {
        (Some(category), Some(message)) => format!("HubSpot {status} {category}: {message}"),
        (None, Some(message)) => format!("HubSpot {status}: {message}"),
        _ if body.trim().is_empty() => format!("HubSpot {status}"),
        _ => format!("HubSpot {status}: {}", body.trim()),
    };
    message.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_documented() {
        let body = r#"{"status":"error","message":"Authentication credentials not found.","correlationId":"c0","category":"INVALID_AUTHENTICATION"}"#;
        assert!(matches!(classify(401, None, body), Failure::Unauthorized(m)
            if m.starts_with("HubSpot 401 INVALID_AUTHENTICATION: Authentication credentials not found.")));
        assert!(matches!(classify(403, None, "{}"), Failure::Forbidden(_)));
        assert_eq!(
            classify(
                429,
                Some(Duration::from_secs(1)),
                r#"{"policyName":"TEN_SECONDLY_ROLLING"}"#
            ),
            Failure::Throttled {
                retry_after: Some(Duration::from_secs(1))
            }
        );
        assert!(
            matches!(classify(502, None, ""), Failure::Transient(m, None) if m == "HubSpot 502")
        );
        let invalid = r#"{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Email address x is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]","category":"VALIDATION_ERROR"}"#;
        assert!(matches!(classify(400, None, invalid), Failure::Rejected(m)
            if m.starts_with("HubSpot 400 VALIDATION_ERROR: Property values were not valid") && m.contains("INVALID_EMAIL")));
        assert!(matches!(
            Attempt::from(classify(404, None, "")),
            Attempt::Fatal(_)
        ));
    }
}
