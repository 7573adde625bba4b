//! Sending a body and classifying the answer: 2xx delivered; 429 throttled
//! (back-pressure, honouring `Retry-After`); 408, 425 and 5xx (but 501/505)
//! transient, honouring `Retry-After`; 401, 403, 404,
//! 405, 407, 501 and 505 fatal (configuration, not content); any other 4xx
//! rejects the content.

use std::time::Duration;

use ebb_shared::config::HttpDestinationConfig;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use crate::destinations::util::outcome::Attempt;
use crate::destinations::util::retry::parse_retry_after;

const MAX_BODY_CHARS: usize = 1000;

/// As in the IETF draft "The Idempotency-Key HTTP Header Field" (and Stripe).
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

pub async fn post(
    client: &reqwest::Client,
    config: &HttpDestinationConfig,
    body: Vec<u8>,
    idempotency_key: &str,
) -> Attempt {
    let mut request = client
        .post(config.url.expose())
        .timeout(Duration::from_secs(config.timeout_secs))
        .header(CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_KEY, idempotency_key);
    for (name, value) in &config.headers {
        request = request.header(name.as_str(), value.expose());
    }
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            classify(status, retry_after, &text)
        }
        // reqwest errors can carry the URL; the URL may hold a token, so
        // keep only the error kind.
        Err(e) => Attempt::Transient {
            message: describe_send_error(&e),
            retry_after: None,
        },
    }
}

fn describe_send_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the response"
    } else {
        "request failed"
    };
    let source = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    format!("{kind}{source}")
}

pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> Attempt {
    let snippet: String = body.trim().chars().take(MAX_BODY_CHARS).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    match status.as_u16() {
        200..=299 => Attempt::Delivered,
        429 => Attempt::Throttled { retry_after },
        408 | 425 => Attempt::Transient {
            message,
            retry_after,
        },
        501 | 505 => Attempt::Fatal(message),
        500..=599 => Attempt::Transient {
            message,
            retry_after,
        },
        401 | 403 | 404 | 405 | 407 => Attempt::Fatal(message),
        400..=499 => Attempt::Rejected(message),
        // 1xx/3xx after redirects: the receiver did not take the batch.
        _ => Attempt::Fatal(message),
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, chrono::Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_documented_table() {
        assert_eq!(classify(StatusCode::OK, None, ""), Attempt::Delivered);
        assert_eq!(
            classify(StatusCode::NO_CONTENT, None, ""),
            Attempt::Delivered
        );
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(2)),
                ""
            ),
            Attempt::Throttled {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, ""),
            Attempt::Transient { .. }
        ));
        assert!(matches!(
            classify(StatusCode::NOT_IMPLEMENTED, None, ""),
            Attempt::Fatal(_)
        ));
        assert!(
            matches!(classify(StatusCode::UNAUTHORIZED, None, "bad token"), Attempt::Fatal(m) if m.contains("bad token"))
        );
        assert!(
            matches!(classify(StatusCode::UNPROCESSABLE_ENTITY, None, "{\"error\":\"invalid email\"}"),
            Attempt::Rejected(m) if m.contains("invalid email"))
        );
        assert!(matches!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, None, ""),
            Attempt::Rejected(_)
        ));
    }
}
