//! Calling HubSpot and classifying its answers. Non-2xx answers carry
//! `{"status":"error","message":…,"category":…,"correlationId":…}`: 401 is a
//! bad or expired token, 403 a missing scope, 404 an unknown object type
//! (all fatal: configuration, not content); 429 is back-pressure (its
//! `policyName` says which limit); 5xx, 408 and timeouts are transient; any
//! other 4xx (400 `VALIDATION_ERROR`, 409 `CONFLICT`) refuses the content.

use std::time::Duration;

use super::HubSpotConfig;
use serde_json::Value;

pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Hints};
#[cfg(test)]
use crate::destinations::util::outcome::Attempt;

const MAX_MESSAGE_CHARS: usize = 1500;

pub async fn get(
    client: &reqwest::Client,
    config: &HubSpotConfig,
    path: &str,
) -> Result<String, Failure> {
    let request = client.get(format!("{}{path}", config.base_url));
    send(request, config).await.map(|(_, body)| body)
}

/// POSTs `body`; returns the status (200, 201, 204 or 207) and body of a
/// 2xx answer.
pub async fn post(
    client: &reqwest::Client,
    config: &HubSpotConfig,
    path: &str,
    body: &Value,
) -> Result<(u16, String), Failure> {
    let request = client.post(format!("{}{path}", config.base_url)).json(body);
    send(request, config).await
}

async fn send(
    request: reqwest::RequestBuilder,
    config: &HubSpotConfig,
) -> Result<(u16, String), Failure> {
    let request = request.bearer_auth(config.access_token.expose());
    let answer = api::send(request, "HubSpot", config.delivery.timeout).await?;
    if answer.is_success() {
        return Ok((answer.status, answer.body));
    }
    Err(classify(answer.status, answer.retry_after, &answer.body))
}

const HINTS: Hints = Hints {
    unauthorized: "check the destination's access_token: HubSpot refused it",
    forbidden: "the private app lacks a scope this object type needs",
};

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    api::classify(status, retry_after, error_message(status, body), &HINTS)
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
