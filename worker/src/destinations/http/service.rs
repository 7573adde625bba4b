//! Sending a body and classifying the answer: 2xx delivered; 429 throttled
//! (back-pressure, honouring `Retry-After`); 408, 425 and 5xx (but 501/505)
//! transient, honouring `Retry-After`; 3xx (never followed), 401, 403, 404,
//! 405, 407, 501 and 505 fatal (configuration, not content); any other 4xx
//! rejects the content. The receiver's answer becomes the DLQ reason with
//! the configured header values (tokens) blanked out, since receivers echo
//! requests back in their errors.

use std::time::Duration;

use ebb_shared::config::HttpDestinationConfig;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};

use crate::destinations::util::outcome::Attempt;
use crate::destinations::util::retry::parse_retry_after;
use ebb_shared::secret::redact_url;

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
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(redact_url);
            let text = response.text().await.unwrap_or_default();
            let text = redact_values(&text, config);
            classify(status, retry_after, location.as_deref(), &text)
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

/// `text` with every configured header value (and the URL's password)
/// replaced: a receiver that echoes the request in its error would
/// otherwise put the token into the DLQ reason.
fn redact_values(text: &str, config: &HttpDestinationConfig) -> String {
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

pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    location: Option<&str>,
    body: &str,
) -> Attempt {
    let snippet: String = body.trim().chars().take(MAX_BODY_CHARS).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    match status.as_u16() {
        300..=399 => Attempt::Fatal(format!(
            "HTTP {status}: the destination redirects to {}; Ebb does not follow redirects for writes \
             (the request would change method or reach another host with its credentials): set the \
             destination's url to the new location",
            location.unwrap_or("(no Location header)")
        )),
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
        // 1xx: the receiver did not take the batch.
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
        assert_eq!(classify(StatusCode::OK, None, None, ""), Attempt::Delivered);
        assert_eq!(
            classify(StatusCode::NO_CONTENT, None, None, ""),
            Attempt::Delivered
        );
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(2)),
                None,
                ""
            ),
            Attempt::Throttled {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, None, ""),
            Attempt::Transient { .. }
        ));
        assert!(matches!(
            classify(StatusCode::NOT_IMPLEMENTED, None, None, ""),
            Attempt::Fatal(_)
        ));
        assert!(
            matches!(classify(StatusCode::UNAUTHORIZED, None, None, "bad token"), Attempt::Fatal(m) if m.contains("bad token"))
        );
        assert!(
            matches!(classify(StatusCode::UNPROCESSABLE_ENTITY, None, None, "{\"error\":\"invalid email\"}"),
            Attempt::Rejected(m) if m.contains("invalid email"))
        );
        assert!(matches!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, None, None, ""),
            Attempt::Rejected(_)
        ));
        for status in [301, 302, 303, 307, 308] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                matches!(classify(status, None, Some("https://new.example.com/in"), ""),
                Attempt::Fatal(m) if m.contains("redirects to https://new.example.com/in")),
                "{status}"
            );
        }
    }
}
