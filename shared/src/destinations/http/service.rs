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
use crate::destinations::util::api::{self, Answer, Hints};
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

/// A non-2xx answer, with the receiver's body as the message.
fn classify(answer: &Answer, config: &HttpConfig) -> api::Failure {
    let status = StatusCode::from_u16(answer.status)
        .map_or_else(|_| answer.status.to_string(), |s| s.to_string());
    let body = redact_values(&answer.body, config);
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
    let mut text = text.to_owned();
    for value in config.headers.values() {
        let value = value.expose();
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
    fn echoed_credentials_are_blanked_out_of_the_reason() {
        let Attempt::Rejected(reason) = answer(400, None, "bad request; you sent tok-123456")
        else {
            panic!("a 400 rejects the content");
        };
        assert!(!reason.contains("tok-123456"), "{reason}");
        assert!(reason.contains("[redacted]"), "{reason}");
    }
}
