//! Calling Meta's Graph API and classifying its answers. Graph errors are
//! `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`,
//! mostly with HTTP 400 whatever the cause, so the `code` decides: 190
//! (and 102) an invalid or expired token; 10 and 200-299 a missing
//! permission; 100 with subcode 33 an audience that does not exist or the
//! token cannot see; 4, 17, 32, 613 and 80003 (Custom Audience calls of
//! the ad account) throttling, waited out for the
//! `estimated_time_to_regain_access` of `X-Business-Use-Case-Usage`; 1 and
//! 2 transient; anything else refuses the request.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::MetaCustomAudienceConfig;
pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Answer, Hints};

const MAX_MESSAGE_CHARS: usize = 1500;

/// Calls `method /{version}/{path}` with an optional JSON body; returns the
/// body of a 2xx answer.
pub async fn call(
    client: &reqwest::Client,
    config: &MetaCustomAudienceConfig,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<String, Failure> {
    let mut request = client
        .request(
            method,
            format!("{}/{}/{path}", config.base_url, config.api_version),
        )
        .bearer_auth(config.access_token.expose());
    if let Some(body) = body {
        request = request.json(body);
    }
    let answer = api::send(request, "Meta", config.delivery.timeout).await?;
    if answer.is_success() {
        return Ok(answer.body);
    }
    Err(classify(&answer))
}

const HINTS: Hints = Hints {
    unauthorized: "check the destination's access_token: Meta refused it (expired, revoked, or not a system user token)",
    forbidden: "the token lacks a permission: it needs ads_management on the ad account that owns the audience, and the Custom Audience terms accepted",
};

pub fn classify(answer: &Answer) -> Failure {
    let error = serde_json::from_str::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let code = error
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64);
    let subcode = error
        .as_ref()
        .and_then(|e| e.get("error_subcode"))
        .and_then(Value::as_i64);
    let message = error_message(answer.status, error.as_ref(), &answer.body);
    match code {
        Some(190 | 102) => Failure::Unauthorized(format!("{message} ({})", HINTS.unauthorized)),
        Some(10 | 200..=299) => Failure::Forbidden(format!("{message} ({})", HINTS.forbidden)),
        Some(100) if subcode == Some(33) => Failure::NotFound(message),
        Some(4 | 17 | 32 | 613 | 80003) => Failure::Throttled {
            retry_after: answer
                .retry_after
                .or_else(|| regain_access(&answer.headers)),
        },
        Some(1 | 2) => Failure::Transient(message, answer.retry_after),
        Some(_) if answer.status < 500 => Failure::Rejected(message),
        _ => api::classify(answer.status, answer.retry_after, message, &HINTS),
    }
}

/// The longest `estimated_time_to_regain_access` (minutes) in
/// `X-Business-Use-Case-Usage`: `{"<business id>": [{"type",
/// "call_count", …, "estimated_time_to_regain_access"}]}`.
pub fn regain_access(headers: &HeaderMap) -> Option<Duration> {
    let usage: Value =
        serde_json::from_str(headers.get("x-business-use-case-usage")?.to_str().ok()?).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|u| u.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    Some(Duration::from_secs(minutes * 60))
}

/// `Meta 400: (#100) Invalid parameter [code 100]`.
fn error_message(status: u16, error: Option<&Value>, body: &str) -> String {
    let text = match error {
        Some(error) => {
            let message = error
                .get("error_user_msg")
                .or_else(|| error.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            match error.get("code").and_then(Value::as_i64) {
                Some(code) => format!("Meta {status}: {message} [code {code}]"),
                None => format!("Meta {status}: {message}"),
            }
        }
        None if body.trim().is_empty() => format!("Meta {status}"),
        None => format!("Meta {status}: {}", body.trim()),
    };
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str, headers: &[(&'static str, &str)]) -> Answer {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap());
        }
        Answer {
            status,
            retry_after: None,
            headers: map,
            body: body.to_owned(),
        }
    }

    #[test]
    fn graph_errors_are_classified_by_their_code() {
        assert!(matches!(
            classify(&answer(400, r#"{"error":{"message":"Error validating access token: Session has expired","type":"OAuthException","code":190,"error_subcode":463}}"#, &[])),
            Failure::Unauthorized(m) if m.starts_with("Meta 400: Error validating access token: Session has expired [code 190]")
        ));
        assert!(matches!(
            classify(&answer(
                400,
                r#"{"error":{"message":"Unsupported post request. Object with ID '1' does not exist","type":"GraphMethodException","code":100,"error_subcode":33}}"#,
                &[]
            )),
            Failure::NotFound(_)
        ));
        assert!(matches!(
            classify(&answer(403, r#"{"error":{"message":"(#200) Missing permissions","type":"OAuthException","code":200}}"#, &[])),
            Failure::Forbidden(m) if m.contains("ads_management")
        ));
        let usage = r#"{"1234":[{"type":"custom_audience","call_count":100,"total_cputime":12,"total_time":40,"estimated_time_to_regain_access":3}]}"#;
        assert_eq!(
            classify(&answer(
                400,
                r#"{"error":{"message":"There have been too many calls to this ad-account.","type":"OAuthException","code":80003}}"#,
                &[("x-business-use-case-usage", usage)]
            )),
            Failure::Throttled {
                retry_after: Some(Duration::from_secs(180))
            }
        );
        assert!(matches!(
            classify(&answer(
                500,
                r#"{"error":{"message":"An unknown error occurred","code":1}}"#,
                &[]
            )),
            Failure::Transient(_, None)
        ));
        assert!(matches!(
            classify(&answer(400, r#"{"error":{"message":"(#100) Invalid parameter","code":100}}"#, &[])),
            Failure::Rejected(m) if m == "Meta 400: (#100) Invalid parameter [code 100]"
        ));
    }
}
