//! Sending a body and classifying the answer by the status table every
//! HTTP destination shares (`util::api::status_class`): 2xx delivered; 429
//! throttled (back-pressure, honouring `Retry-After`); 408, 425 and 5xx (but
//! 501/505) transient, honouring `Retry-After`; 3xx (never followed), 401,
//! 403, 404, 405, 407, 501 and 505 fatal (configuration, not content); any
//! other 4xx rejects the content. The receiver's answer becomes the DLQ
//! reason with the configured header values (tokens) blanked out, since
//! receivers echo requests back in their errors.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use super::HttpConfig;
use super::template::RenderedRequest;
use crate::destinations::util::api::{self, Answer, Failure, Hints};
use crate::destinations::util::outcome::Attempt;

const MAX_BODY_CHARS: usize = 1000;

/// As in the IETF draft "The Idempotency-Key HTTP Header Field" (and Stripe).
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

const HINTS: Hints = Hints {
    unauthorized: "check the credentials in the destination's headers",
    forbidden: "the credentials in the destination's headers lack a permission",
};

pub async fn post(
    client: &reqwest::Client,
    config: &HttpConfig,
    body: Vec<u8>,
    idempotency_key: &str,
) -> Attempt {
    let mut request = client
        .post(config.url.expose())
        .header(CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_KEY, idempotency_key);
    for (name, value) in &config.headers {
        request = request.header(name.as_str(), value.expose());
    }
    match api::send(
        request.body(body),
        "the destination",
        config.delivery.timeout,
    )
    .await
    {
        Ok(answer) if answer.is_success() => Attempt::Delivered,
        Ok(answer) => classify(&answer, config).into(),
        Err(failure) => failure.into(),
    }
}

/// Sends a request rendered from the templates. A 2xx answer is a
/// success unless `error_path` finds an error in it (`null`, `false` and
/// `""` are not errors), which rejects the request's records.
pub async fn send_rendered(
    client: &reqwest::Client,
    config: &HttpConfig,
    request: RenderedRequest,
    idempotency_key: &str,
    error_path: Option<&serde_json_path::JsonPath>,
) -> Result<(), Failure> {
    let mut builder = client
        .request(request.method, &request.url)
        .header(IDEMPOTENCY_KEY, idempotency_key);
    let has_content_type = request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if request.body.is_some() && !has_content_type {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(body) = request.body {
        builder = builder.body(body);
    }
    let rendered_values: Vec<&str> = request.headers.iter().map(|(_, v)| v.as_str()).collect();
    let answer = api::send(builder, "the destination", config.delivery.timeout).await?;
    if !answer.is_success() {
        return Err(classify_with(&answer, config, &rendered_values));
    }
    if let Some(path) = error_path
        && let Some(error) = error_in(&answer.body, path)
    {
        let error = redact(&redact_values(&error, config), &rendered_values);
        let snippet: String = error.chars().take(MAX_BODY_CHARS).collect();
        return Err(Failure::Rejected(format!(
            "HTTP {} with an error at {}: {snippet}",
            answer.status, path
        )));
    }
    Ok(())
}

/// What `path` finds in a JSON answer, when it is an error: the first
/// value that is not `null`, `false` or `""`, as text.
fn error_in(body: &str, path: &serde_json_path::JsonPath) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    path.query(&answer)
        .all()
        .into_iter()
        .find_map(|found| match found {
            serde_json::Value::Null | serde_json::Value::Bool(false) => None,
            serde_json::Value::String(s) if s.is_empty() => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
}

/// A non-2xx answer, with the receiver's body as the message.
fn classify(answer: &Answer, config: &HttpConfig) -> api::Failure {
    classify_with(answer, config, &[])
}

/// [`classify`], also blanking out `rendered` header values (templated
/// headers, which may carry credentials).
fn classify_with(answer: &Answer, config: &HttpConfig, rendered: &[&str]) -> api::Failure {
    let status = StatusCode::from_u16(answer.status)
        .map_or_else(|_| answer.status.to_string(), |s| s.to_string());
    let body = redact(&redact_values(&answer.body, config), rendered);
    let snippet: String = body.trim().chars().take(MAX_BODY_CHARS).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    api::classify(answer.status, answer.retry_after, message, &HINTS)
}

/// `text` with every configured header value (and the URL's password)
/// replaced: a receiver that echoes the request in its error would
/// otherwise put the token into the DLQ reason.
fn redact_values(text: &str, config: &HttpConfig) -> String {
    let values: Vec<&str> = config.headers.values().map(|v| v.expose()).collect();
    redact(text, &values)
}

fn redact(text: &str, values: &[&str]) -> String {
    let mut text = text.to_owned();
    for &value in values {
        // Short values (`1`, `yes`) are not credentials and would blank
        // out half the message.
        if value.len() >= 6 {
            text = text.replace(value, "[redacted]");
            // A bearer token is often echoed without its scheme.
            if let Some((_, token)) = value.split_once(' ')
                && token.len() >= 6
            {
                text = text.replace(token, "[redacted]");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::config::{DeliverySettings, Limits};
    use crate::secret::Secret;

    fn config() -> HttpConfig {
        HttpConfig {
            url: Secret::new("http://127.0.0.1:9/in"),
            headers: BTreeMap::from([(
                "Authorization".to_owned(),
                Secret::new("Bearer tok-123456"),
            )]),
            templated: None,
            delivery: DeliverySettings {
                batch_size: 100,
                timeout: Duration::from_secs(30),
                max_retries: 5,
                limits: Limits {
                    max_concurrency: 8,
                    rate_limit: None,
                    adaptive_concurrency: true,
                },
                daily_request_quota: None,
            },
        }
    }

    fn answer(status: u16, retry_after: Option<Duration>, body: &str) -> Attempt {
        classify(
            &Answer {
                status,
                retry_after,
                headers: Default::default(),
                body: body.to_owned(),
            },
            &config(),
        )
        .into()
    }

    #[test]
    fn classification_follows_the_documented_table() {
        assert_eq!(
            answer(429, Some(Duration::from_secs(2)), ""),
            Attempt::Throttled {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(answer(503, None, ""), Attempt::Transient { .. }));
        assert!(matches!(answer(408, None, ""), Attempt::Transient { .. }));
        for fatal in [401, 403, 404, 405, 407, 501, 505] {
            assert!(
                matches!(answer(fatal, None, ""), Attempt::Fatal(_)),
                "{fatal}"
            );
        }
        assert!(
            matches!(answer(401, None, "bad token"), Attempt::Fatal(m) if m.contains("bad token"))
        );
        assert!(matches!(answer(422, None, "{\"error\":\"invalid email\"}"),
            Attempt::Rejected(m) if m.contains("invalid email") && m.starts_with("HTTP 422 Unprocessable Entity")));
        assert!(matches!(answer(413, None, ""), Attempt::Rejected(_)));
    }

    #[test]
    fn an_error_path_finds_errors_in_successful_answers() {
        let path = serde_json_path::JsonPath::parse("$.error").unwrap();
        assert_eq!(
            error_in(r#"{"ok": false, "error": "email taken"}"#, &path).as_deref(),
            Some("email taken")
        );
        for fine in [
            r#"{"ok": true, "error": null}"#,
            r#"{"error": ""}"#,
            r#"{"error": false}"#,
            "{}",
            "not json",
        ] {
            assert_eq!(error_in(fine, &path), None, "{fine}");
        }
        let list = serde_json_path::JsonPath::parse("$.errors[*].message").unwrap();
        assert_eq!(
            error_in(r#"{"errors": [{"message": "bad plan"}]}"#, &list).as_deref(),
            Some("bad plan")
        );
        assert_eq!(
            error_in(r#"{"error": {"code": 7}}"#, &path).as_deref(),
            Some(r#"{"code":7}"#)
        );
    }

    #[test]
    fn echoed_credentials_are_blanked_out_of_the_reason() {
        let Attempt::Rejected(reason) = answer(400, None, "bad request; you sent tok-123456")
        else {
            panic!("a 400 rejects the content");
        };
        assert!(!reason.contains("tok-123456"), "{reason}");
        assert!(reason.contains("[redacted]"), "{reason}");
    }
}
