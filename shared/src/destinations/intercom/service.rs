//! Calling Intercom's REST API and classifying its answers. Errors are
//! `{"type": "error.list", "errors": [{"code", "message"}]}`: 401
//! `unauthorized` (a bad or revoked token), 403 a token without the
//! permission, 404 `not_found`, 409 `conflict` (a contact with those
//! details exists), 429 the workspace's rate limit with `X-RateLimit-Reset`,
//! 5xx transient; any other 4xx refuses the content.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::IntercomConfig;
pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Answer, Hints};

/// The API version Ebb's requests follow.
pub const API_VERSION: &str = "2.11";
const MAX_MESSAGE_CHARS: usize = 1500;

/// Calls `method path` and returns Intercom's answer whatever its status.
pub async fn send(
    client: &reqwest::Client,
    config: &IntercomConfig,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, Failure> {
    let mut request = client
        .request(method, format!("{}{path}", config.base_url))
        .bearer_auth(config.access_token.expose())
        .header("Intercom-Version", API_VERSION)
        .header("Accept", "application/json");
    if let Some(body) = body {
        request = request.json(body);
    }
    api::send(request, "Intercom", config.delivery.timeout).await
}

/// [`send`], with a non-2xx answer as its [`Failure`].
pub async fn call(
    client: &reqwest::Client,
    config: &IntercomConfig,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<String, Failure> {
    let answer = send(client, config, method, path, body).await?;
    if answer.is_success() {
        return Ok(answer.body);
    }
    Err(classify(answer.status, answer.retry_after, &answer.body))
}

const HINTS: Hints = Hints {
    unauthorized: "check the destination's access_token: Intercom refused it",
    forbidden: "the token lacks a permission: it needs to read and write users and companies",
};

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    api::classify(status, retry_after, error_message(status, body), &HINTS)
}

/// The `code` of an error list's first error.
pub fn error_code(body: &str) -> Option<String> {
    let parsed: Value = serde_json::from_str(body).ok()?;
    parsed
        .pointer("/errors/0/code")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// `Intercom 400 parameter_invalid: Custom attribute 'plan' does not exist`.
pub fn error_message(status: u16, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let errors: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(Value::as_str).unwrap_or("error");
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                    format!("{code}: {message}")
                })
                .collect()
        })
        .unwrap_or_default();
    let text = if !errors.is_empty() {
        format!("Intercom {status} {}", errors.join("; "))
    } else if body.trim().is_empty() {
        format!("Intercom {status}")
    } else {
        format!("Intercom {status}: {}", body.trim())
    };
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercom_error_lists_become_messages_and_classes() {
        let body = r#"{"type":"error.list","request_id":"r1","errors":[{"code":"unauthorized","message":"Access Token Invalid"}]}"#;
        assert!(matches!(classify(401, None, body),
            Failure::Unauthorized(m) if m.starts_with("Intercom 401 unauthorized: Access Token Invalid (check")));
        let body = r#"{"type":"error.list","errors":[{"code":"parameter_invalid","message":"Custom attribute 'plan' does not exist"}]}"#;
        assert!(matches!(classify(400, None, body),
            Failure::Rejected(m) if m == "Intercom 400 parameter_invalid: Custom attribute 'plan' does not exist"));
        assert_eq!(error_code(body).as_deref(), Some("parameter_invalid"));
        assert_eq!(
            classify(429, Some(Duration::from_secs(4)), ""),
            Failure::Throttled {
                retry_after: Some(Duration::from_secs(4))
            }
        );
        assert!(matches!(classify(404, None, "{}"), Failure::NotFound(_)));
    }
}
