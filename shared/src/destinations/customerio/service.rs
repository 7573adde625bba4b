//! Calling Customer.io's Track API and classifying its answers. A batch is
//! answered 200 when every entry was taken, 207 with `errors` (each with
//! its `batch_index`, `reason`, `field` and `message`) when some were not;
//! 401 is a wrong Site ID or key, 429 the workspace's rate limit, 5xx
//! transient, any other 4xx a request refused as a whole (its `errors`, or
//! a v1-style `{"meta": {"error": …}}`).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::CustomerIoConfig;
pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Hints};

const MAX_MESSAGE_CHARS: usize = 1500;

/// Calls `method path` with an optional JSON body; returns the status and
/// body of a 2xx answer.
pub async fn call(
    client: &reqwest::Client,
    config: &CustomerIoConfig,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), Failure> {
    let mut request = client
        .request(method, format!("{}{path}", config.base_url))
        .basic_auth(&config.site_id, Some(config.api_key.expose()));
    if let Some(body) = body {
        request = request.json(body);
    }
    let answer = api::send(request, "Customer.io", config.delivery.timeout).await?;
    if answer.is_success() {
        return Ok((answer.status, answer.body));
    }
    Err(classify(answer.status, answer.retry_after, &answer.body))
}

const HINTS: Hints = Hints {
    unauthorized: "check the destination's site_id and api_key: Customer.io refused them (a Track API key, not an App API key)",
    forbidden: "the Track API key may not write to this workspace",
};

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    api::classify(status, retry_after, error_message(status, body), &HINTS)
}

/// One entry error as Customer.io words it: `email: invalid (…)`.
pub fn entry_error(error: &Value) -> String {
    let text = |name| error.get(name).and_then(Value::as_str).unwrap_or_default();
    let mut out = String::new();
    if !text("field").is_empty() {
        out.push_str(text("field"));
        out.push_str(": ");
    }
    out.push_str(if text("message").is_empty() {
        text("reason")
    } else {
        text("message")
    });
    if !text("reason").is_empty() && !text("message").is_empty() {
        out.push_str(&format!(" ({})", text("reason")));
    }
    out
}

/// `Customer.io 400: identifiers: must contain id or email (required)`.
pub fn error_message(status: u16, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let errors: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .map(|errors| errors.iter().map(entry_error).collect())
        .unwrap_or_default();
    let meta = parsed
        .as_ref()
        .and_then(|v| v.pointer("/meta/error"))
        .and_then(Value::as_str);
    let text = match (meta, errors.is_empty()) {
        (Some(error), _) => format!("Customer.io {status}: {error}"),
        (None, false) => format!("Customer.io {status}: {}", errors.join("; ")),
        (None, true) if body.trim().is_empty() => format!("Customer.io {status}"),
        (None, true) => format!("Customer.io {status}: {}", body.trim()),
    };
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customerio_errors_become_messages_and_classes() {
        assert!(matches!(
            classify(401, None, "Unauthorized request"),
            Failure::Unauthorized(m) if m.starts_with("Customer.io 401: Unauthorized request (check the destination's site_id")
        ));
        assert!(matches!(
            classify(400, None, r#"{"errors":[{"reason":"required","field":"identifiers","message":"must contain id or email"}]}"#),
            Failure::Rejected(m) if m == "Customer.io 400: identifiers: must contain id or email (required)"
        ));
        assert!(matches!(
            classify(400, None, r#"{"meta":{"error":"request body too large"}}"#),
            Failure::Rejected(m) if m == "Customer.io 400: request body too large"
        ));
        assert_eq!(
            classify(429, None, ""),
            Failure::Throttled { retry_after: None }
        );
        assert!(
            matches!(classify(503, None, ""), Failure::Transient(m, None) if m == "Customer.io 503")
        );
    }
}
