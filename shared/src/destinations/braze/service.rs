//! Calling Braze's REST API and classifying its answers. Errors carry a
//! `message` (`{"message": "Invalid API key"}`) and sometimes `errors`:
//! 401 is a bad or revoked key, 403 a key without the endpoint's permission
//! (`users.track`, `users.delete`), 429 the workspace's rate limit (with
//! `X-RateLimit-Reset`), 5xx transient; any other 4xx refuses the request's
//! content.

use std::time::Duration;

use serde_json::Value;

use super::BrazeConfig;
pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Hints};

const MAX_MESSAGE_CHARS: usize = 1500;

/// `POST path` with a JSON body; returns the body of a 2xx answer.
pub async fn post(
    client: &reqwest::Client,
    config: &BrazeConfig,
    path: &str,
    body: &Value,
) -> Result<String, Failure> {
    let request = client
        .post(format!("{}{path}", config.rest_endpoint))
        .bearer_auth(config.api_key.expose())
        .json(body);
    let answer = api::send(request, "Braze", config.delivery.timeout).await?;
    if answer.is_success() {
        return Ok(answer.body);
    }
    Err(classify(answer.status, answer.retry_after, &answer.body))
}

const HINTS: Hints = Hints {
    unauthorized: "check the destination's api_key: Braze refused it (Settings → APIs and Identifiers)",
    forbidden: "the API key lacks a permission: it needs users.track, and users.delete in mirror mode",
};

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    api::classify(status, retry_after, error_message(status, body), &HINTS)
}

/// `Braze 400: Valid data must be provided … (minor errors: …)`.
pub fn error_message(status: u16, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str);
    let minor: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| match e.get("type").and_then(Value::as_str) {
                    Some(kind) => kind.to_owned(),
                    None => e.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut text = match message {
        Some(message) => format!("Braze {status}: {message}"),
        None if body.trim().is_empty() => format!("Braze {status}"),
        None => format!("Braze {status}: {}", body.trim()),
    };
    if !minor.is_empty() {
        text.push_str(&format!(" ({})", minor.join("; ")));
    }
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braze_errors_become_messages_and_classes() {
        assert!(matches!(
            classify(401, None, r#"{"message":"Invalid API key"}"#),
            Failure::Unauthorized(m) if m.starts_with("Braze 401: Invalid API key (check the destination's api_key")
        ));
        assert!(matches!(
            classify(403, None, r#"{"message":"Insufficient permissions"}"#),
            Failure::Forbidden(m) if m.contains("users.track")
        ));
        assert!(matches!(
            classify(400, None, r#"{"message":"Too many attributes objects","errors":[{"type":"at most 75","input_array":"attributes"}]}"#),
            Failure::Rejected(m) if m == "Braze 400: Too many attributes objects (at most 75)"
        ));
        assert_eq!(
            classify(429, Some(Duration::from_secs(2)), ""),
            Failure::Throttled {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(
            matches!(classify(502, None, "<html>"), Failure::Transient(m, None) if m == "Braze 502: <html>")
        );
    }
}
