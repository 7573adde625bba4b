//! Calling an HTTP destination and classifying its answers, for every HTTP
//! destination (the generic `http` one and each vendor): the shared client,
//! network errors, and one table of what each status means
//! ([`status_class`]). Each vendor supplies how to read its error bodies.

use std::time::Duration;

use crate::secret::redact_url;
use reqwest::header::{LOCATION, RETRY_AFTER};

use super::outcome::Attempt;
use super::retry::parse_retry_after;
use crate::destinations::{ConnectionProblem, DestinationError};

/// The HTTP client every destination shares, one per process (pooled). It
/// never follows redirects: following one turns a `POST` into a `GET` (301,
/// 302, 303) whose 200 would count as delivered, and sends the request,
/// custom credential headers included, to another host. A 3xx is a
/// configuration error that names the new location (see [`send`]).
pub fn client() -> Result<reqwest::Client, DestinationError> {
    reqwest::Client::builder()
        .user_agent(concat!("ebb/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| DestinationError::Setup {
            destination: "http".into(),
            message: e.to_string(),
        })
}

/// Why a call did not get a 2xx answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 401: the credentials are wrong, revoked or expired.
    Unauthorized(String),
    /// 403: the credentials lack a permission (scope, role).
    Forbidden(String),
    /// 404 (and 501/505): no such resource (object type, list, endpoint).
    NotFound(String),
    /// The host could not be reached at all.
    Unreachable(String),
    Throttled {
        retry_after: Option<Duration>,
    },
    Transient(String, Option<Duration>),
    /// The content was refused (400, 409, other 4xx).
    Rejected(String),
    /// A 2xx answer that does not follow the vendor's documented shape.
    Unexpected(String),
    /// The destination's config does not fit the account (an unknown or
    /// read-only field in the mapping).
    Misconfigured(String),
}

impl From<Failure> for Attempt {
    fn from(failure: Failure) -> Attempt {
        match failure {
            Failure::Unauthorized(m)
            | Failure::Forbidden(m)
            | Failure::NotFound(m)
            | Failure::Misconfigured(m) => Attempt::Fatal(m),
            Failure::Throttled { retry_after } => Attempt::Throttled { retry_after },
            Failure::Unreachable(message) => Attempt::Transient {
                message,
                retry_after: None,
            },
            Failure::Transient(message, retry_after) => Attempt::Transient {
                message,
                retry_after,
            },
            Failure::Rejected(m) => Attempt::Rejected(m),
            // The request may have been applied; retrying finds out.
            Failure::Unexpected(message) => Attempt::Transient {
                message,
                retry_after: None,
            },
        }
    }
}

impl Failure {
    /// What `ebb check --connect` says when a check failed: `base_url` is
    /// where it went, `what` the resource it looked for (an object type, an
    /// audience).
    pub fn connection_problem(self, base_url: &str, what: &str) -> ConnectionProblem {
        let (kind, message) = match self {
            Failure::Unauthorized(m) => ("bad credentials", m),
            Failure::Forbidden(m) => ("missing permissions", m),
            Failure::Unreachable(m) => ("unreachable", format!("{m} ({base_url})")),
            Failure::NotFound(m) => ("not found", format!("{what}: {m}")),
            Failure::Throttled { .. } => (
                "rate limited",
                "the destination answered 429; try again shortly".to_owned(),
            ),
            Failure::Transient(m, _)
            | Failure::Rejected(m)
            | Failure::Unexpected(m)
            | Failure::Misconfigured(m) => ("unexpected answer", m),
        };
        ConnectionProblem { kind, message }
    }
}

/// A vendor's answer, whatever its status.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// For the vendors whose headers say more (rate limits, ids).
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request` (auth already set); only network failures and redirects
/// (which are never followed) are errors.
pub async fn send(
    request: reqwest::RequestBuilder,
    vendor: &str,
    timeout: Duration,
) -> Result<Answer, Failure> {
    let response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| send_error(&e, vendor))?;
    let status = response.status().as_u16();
    if status_class(status) == StatusClass::Redirect {
        // The shared client follows no redirect (see `client`).
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "(no Location header)".to_owned(), redact_url);
        return Err(Failure::Misconfigured(format!(
            "{vendor} answered HTTP {status}: it redirects to {location}; Ebb does not follow redirects \
             for writes (the request would change method or carry its credentials to another host): \
             set the destination's URL to the new location"
        )));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
    };
    let now = chrono::Utc::now();
    let retry_after = header(RETRY_AFTER.as_str())
        .and_then(|v| parse_retry_after(v, now))
        // Braze and Intercom say when their window resets instead.
        .or_else(|| {
            (status == 429)
                .then(|| header("x-ratelimit-reset"))
                .flatten()
                .and_then(|v| parse_rate_limit_reset(v, now))
        });
    let headers = response.headers().clone();
    let body = response.text().await.map_err(|e| {
        Failure::Transient(
            format!("connection dropped while reading {vendor}'s answer: {e}"),
            None,
        )
    })?;
    Ok(Answer {
        status,
        retry_after,
        headers,
        body,
    })
}

/// An `X-RateLimit-Reset` value: when the rate-limit window resets, as
/// Unix seconds (Braze, Intercom) or, for small values, seconds from now.
pub fn parse_rate_limit_reset(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let secs: f64 = value
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)?;
    // Any Unix time after 2001 is above this; a delta never is.
    if secs >= 1_000_000_000.0 {
        let wait = secs - now.timestamp_millis() as f64 / 1000.0;
        Some(Duration::from_secs_f64(wait.max(0.0)))
    } else {
        Some(Duration::from_secs_f64(secs))
    }
}

// reqwest errors can carry the URL, which may hold a key: keep the kind and
// the cause only.
fn send_error(e: &reqwest::Error, vendor: &str) -> Failure {
    let source = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    if e.is_connect() {
        Failure::Unreachable(format!("cannot connect to {vendor}{source}"))
    } else if e.is_timeout() {
        Failure::Transient(format!("{vendor} did not answer in time{source}"), None)
    } else {
        Failure::Transient(format!("request to {vendor} failed{source}"), None)
    }
}

/// What to tell an operator about a 401 and a 403 from this vendor.
pub struct Hints {
    pub unauthorized: &'static str,
    pub forbidden: &'static str,
}

/// What an HTTP status means for a write: one table for every HTTP
/// destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx: applied.
    Applied,
    /// 3xx: never followed; a configuration error naming the new location.
    Redirect,
    /// 401, 407: the credentials (or the proxy's) are wrong or expired.
    Unauthorized,
    /// 403: the credentials lack a permission.
    Forbidden,
    /// 404, 405, 501, 505: no such resource, method or protocol version:
    /// the destination's URL or object is wrong.
    NotFound,
    /// 429: back-pressure, waited out without spending a retry.
    Throttled,
    /// 408, 425 and other 5xx: worth retrying.
    Transient,
    /// Any other 4xx: the content was refused.
    Refused,
    /// 1xx as a final answer: nothing Ebb can read an outcome from.
    Unexpected,
}

pub fn status_class(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Applied,
        300..=399 => StatusClass::Redirect,
        401 | 407 => StatusClass::Unauthorized,
        403 => StatusClass::Forbidden,
        404 | 405 | 501 | 505 => StatusClass::NotFound,
        429 => StatusClass::Throttled,
        408 | 425 | 500..=599 => StatusClass::Transient,
        400..=499 => StatusClass::Refused,
        _ => StatusClass::Unexpected,
    }
}

/// Classifies a non-2xx answer by [`status_class`]; `message` is the
/// destination's error, already read from its body.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    message: String,
    hints: &Hints,
) -> Failure {
    match status_class(status) {
        StatusClass::Unauthorized => {
            Failure::Unauthorized(format!("{message} ({})", hints.unauthorized))
        }
        StatusClass::Forbidden => Failure::Forbidden(format!("{message} ({})", hints.forbidden)),
        StatusClass::NotFound => Failure::NotFound(message),
        StatusClass::Throttled => Failure::Throttled { retry_after },
        StatusClass::Transient => Failure::Transient(message, retry_after),
        StatusClass::Refused => Failure::Rejected(message),
        StatusClass::Redirect => Failure::Misconfigured(format!(
            "{message}: a redirect, which Ebb does not follow for writes; set the destination's URL to the new location"
        )),
        // The request may have been applied; sending it again finds out.
        StatusClass::Applied | StatusClass::Unexpected => Failure::Unexpected(format!(
            "{message}: not a final answer Ebb can read an outcome from"
        )),
    }
}

/// Reads a 2xx answer's JSON body (an empty body reads as `null`); a body
/// that does not parse is an unexpected answer, named by `what`.
pub fn parse_answer<T: serde::de::DeserializeOwned>(
    vendor: &str,
    what: &str,
    body: &str,
) -> Result<T, Failure> {
    let body = if body.trim().is_empty() { "null" } else { body };
    serde_json::from_str(body).map_err(|e| {
        Failure::Unexpected(format!(
            "{vendor}'s answer to {what} is not what its API documents: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_resets_are_unix_times_or_deltas() {
        let now = chrono::DateTime::from_timestamp(1_765_000_000, 0).unwrap();
        assert_eq!(
            parse_rate_limit_reset("1765000003", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_rate_limit_reset("1764999990", now),
            Some(Duration::ZERO),
            "a reset in the past: now"
        );
        assert_eq!(
            parse_rate_limit_reset("2", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_rate_limit_reset("soon", now), None);
        assert_eq!(parse_rate_limit_reset("-1", now), None);
    }
}
