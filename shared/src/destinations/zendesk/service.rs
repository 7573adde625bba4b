//! Calling Zendesk's Support API and classifying its answers. Errors are
//! `{"error": "RecordInvalid", "description": …, "details": {field:
//! [{"description", "error"}]}}` (422), `{"error": "Couldn't authenticate
//! you"}` (401), `{"error": {"title", "message"}}` (403 and others); 429 is
//! the account's rate limit (or its 30 queued jobs), with `Retry-After`;
//! 5xx transient; any other 4xx refuses the content.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::ZendeskConfig;
use super::config::Credentials;
pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Answer, Hints};

const MAX_MESSAGE_CHARS: usize = 1500;

/// Sends `method path` (a path under `/api/v2`) and returns Zendesk's
/// answer whatever its status.
pub async fn send(
    client: &reqwest::Client,
    config: &ZendeskConfig,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, Failure> {
    let mut request = client
        .request(method, format!("{}/api/v2{path}", config.base_url))
        .header("Accept", "application/json");
    request = match &config.credentials {
        Credentials::ApiToken { email, token } => {
            request.basic_auth(format!("{email}/token"), Some(token.expose()))
        }
        Credentials::OAuth(token) => request.bearer_auth(token.expose()),
    };
    if let Some(body) = body {
        request = request.json(body);
    }
    api::send(request, "Zendesk", config.delivery.timeout).await
}

/// [`send`], with a non-2xx answer as its [`Failure`].
pub async fn call(
    client: &reqwest::Client,
    config: &ZendeskConfig,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, Failure> {
    let answer = send(client, config, method, path, body).await?;
    if answer.is_success() {
        return Ok(answer);
    }
    Err(classify(answer.status, answer.retry_after, &answer.body))
}

const HINTS: Hints = Hints {
    unauthorized: "check the destination's email and api_token (or oauth_token): Zendesk refused them, or token access is off (Admin Center → Apps and integrations → Zendesk API)",
    forbidden: "the credentials' user may not do this: writing users takes an agent or admin, organizations an admin",
};

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    api::classify(status, retry_after, error_message(status, body), &HINTS)
}

/// `Zendesk 422: Email: nope is not properly formatted`.
pub fn error_message(status: u16, body: &str) -> String {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(parsed) => describe(&parsed),
        Err(_) => body.trim().to_owned(),
    };
    let text = if text.is_empty() {
        format!("Zendesk {status}")
    } else {
        format!("Zendesk {status}: {text}")
    };
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// What an error body (or a job result) says: the details' descriptions
/// when it has them, else its error and description.
pub fn describe(error: &Value) -> String {
    let details: Vec<String> = match error.get("details") {
        Some(Value::Object(fields)) => fields
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|d| d.get("description").and_then(Value::as_str))
            .map(str::to_owned)
            .collect(),
        Some(Value::String(details)) => vec![details.clone()],
        _ => Vec::new(),
    };
    if !details.is_empty() {
        return details.join("; ");
    }
    match error.get("error") {
        Some(Value::String(code)) => match error.get("description").and_then(Value::as_str) {
            Some(description) => format!("{code}: {description}"),
            None => code.clone(),
        },
        Some(Value::Object(e)) => {
            let part = |name| e.get(name).and_then(Value::as_str).unwrap_or_default();
            match (part("title"), part("message")) {
                (title, "") => title.to_owned(),
                ("", message) => message.to_owned(),
                (title, message) => format!("{title}: {message}"),
            }
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zendesk_errors_become_messages_and_classes() {
        assert!(matches!(
            classify(401, None, r#"{"error":"Couldn't authenticate you"}"#),
            Failure::Unauthorized(m) if m.starts_with("Zendesk 401: Couldn't authenticate you (check the destination's email")
        ));
        assert!(matches!(
            classify(422, None, r#"{"error":"RecordInvalid","description":"Record validation errors","details":{"name":[{"description":"Name: has already been taken","error":"DuplicateValue"}]}}"#),
            Failure::Rejected(m) if m == "Zendesk 422: Name: has already been taken"
        ));
        assert!(matches!(
            classify(403, None, r#"{"error":{"title":"Forbidden","message":"You do not have access to this page."}}"#),
            Failure::Forbidden(m) if m.starts_with("Zendesk 403: Forbidden: You do not have access to this page.")
        ));
        assert!(matches!(
            classify(404, None, r#"{"error":"RecordNotFound","description":"Not found"}"#),
            Failure::NotFound(m) if m == "Zendesk 404: RecordNotFound: Not found"
        ));
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), "Rate limited"),
            Failure::Throttled {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(
            matches!(classify(503, None, ""), Failure::Transient(m, None) if m == "Zendesk 503")
        );
    }
}
