//! Calling Mailchimp's Marketing API 3.0 and classifying its answers.
//! Errors are problem documents (`{"type","title","status","detail",
//! "instance"}`): 401 is a bad key ("API Key Invalid"), 403 a disabled user
//! or missing permission, 404 an unknown audience, 429 more than 10
//! simultaneous connections; 5xx are transient; any other 4xx ("Invalid
//! Resource", "Member Exists", "Forgotten Email Not Subscribed") refuses
//! the content.

use std::time::Duration;

use super::MailchimpConfig;
use reqwest::Method;
use serde_json::Value;

pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Hints};

const MAX_MESSAGE_CHARS: usize = 1500;

/// Calls `method path` with an optional JSON body; returns the body of a
/// 2xx answer.
pub async fn call(
    client: &reqwest::Client,
    config: &MailchimpConfig,
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

/// Calls `method path` and returns Mailchimp's answer whatever its status;
/// only a failure to get one is an error.
pub async fn send(
    client: &reqwest::Client,
    config: &MailchimpConfig,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<api::Answer, Failure> {
    let mut request = client
        .request(method, format!("{}/3.0{path}", config.base_url))
        // Mailchimp takes any user name with the key as password.
        .basic_auth("ebb", Some(config.api_key.expose()));
    if let Some(body) = body {
        request = request.json(body);
    }
    api::send(request, "Mailchimp", config.delivery.timeout).await
}

/// Whether `body` is Mailchimp's own problem document for `status`, rather
/// than a page from a proxy or load balancer in between.
pub fn is_problem_document(status: u16, body: &str) -> bool {
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    doc.get("status").and_then(Value::as_u64) == Some(u64::from(status))
        && doc.get("title").is_some_and(Value::is_string)
        && doc.get("type").and_then(Value::as_str).is_some_and(|t| {
            t.starts_with("https://mailchimp.com/developer/marketing/docs/errors/")
        })
}

const HINTS: Hints = Hints {
    unauthorized: "check the destination's api_key: Mailchimp refused it",
    forbidden: "the key's user lacks access to this audience",
};

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    api::classify(status, retry_after, error_message(status, body), &HINTS)
}

/// `Mailchimp 400 Invalid Resource: Please provide a valid email address.`
pub fn error_message(status: u16, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let text = |field: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let field_errors: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("field").and_then(Value::as_str).unwrap_or("?"),
                        e.get("message").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut message = match (text("title"), text("detail")) {
        (Some(title), Some(detail)) => format!("Mailchimp {status} {title}: {detail}"),
        (Some(title), None) => format!("Mailchimp {status} {title}"),
        _ if body.trim().is_empty() => format!("Mailchimp {status}"),
        _ => format!("Mailchimp {status}: {}", body.trim()),
    };
    if !field_errors.is_empty() {
        message.push_str(&format!(" ({})", field_errors.join("; ")));
    }
    message.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_documents_become_messages_and_classes() {
        let body = r#"{"type":"https://mailchimp.com/developer/marketing/docs/errors/","title":"API Key Invalid","status":401,"detail":"Your API key may be invalid, or you've attempted to access the wrong datacenter.","instance":"0d4e"}"#;
        assert!(matches!(classify(401, None, body), Failure::Unauthorized(m)
            if m.starts_with("Mailchimp 401 API Key Invalid: Your API key may be invalid")));
        let body = r#"{"title":"Invalid Resource","status":400,"detail":"The resource submitted could not be validated.","errors":[{"field":"merge_fields.PLAN","message":"Value must be one of: free, pro"}]}"#;
        assert!(matches!(classify(400, None, body), Failure::Rejected(m)
            if m.ends_with("(merge_fields.PLAN: Value must be one of: free, pro)")));
        assert_eq!(
            classify(429, None, "{}"),
            Failure::Throttled { retry_after: None }
        );
        assert!(matches!(classify(404, None, "{}"), Failure::NotFound(_)));
        let not_found = r#"{"type":"https://mailchimp.com/developer/marketing/docs/errors/","title":"Resource Not Found","status":404,"detail":"The requested resource could not be found.","instance":"1"}"#;
        assert!(is_problem_document(404, not_found));
        assert!(!is_problem_document(404, "<html>404 Not Found</html>"));
        assert!(!is_problem_document(
            404,
            r#"{"status":404,"title":"Not Found"}"#
        ));
        assert!(!is_problem_document(400, not_found));
        assert!(
            matches!(classify(503, None, ""), Failure::Transient(m, None) if m == "Mailchimp 503")
        );
    }
}
