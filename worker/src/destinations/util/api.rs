//! Calling a SaaS vendor's JSON API and classifying its answers, for every
//! vendor destination: network errors, and the status classes vendors share
//! (401 credentials, 403 permissions, 404 unknown resource, 429
//! back-pressure, 5xx transient, other 4xx refused content). Each vendor
//! supplies how to read its error bodies.

use std::time::Duration;

use ebb_shared::secret::redact_url;
use reqwest::header::{LOCATION, RETRY_AFTER};

use super::outcome::Attempt;
use super::retry::parse_retry_after;

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

/// A vendor's answer, whatever its status.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
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
    if (300..400).contains(&status) {
        // The shared client follows no redirect (see `http::client`).
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "(no Location header)".to_owned(), redact_url);
        return Err(Failure::Misconfigured(format!(
            "{vendor} answered HTTP {status}, redirecting to {location}; Ebb does not follow redirects \
             for writes (the request would change method or carry its credentials to another host): \
             check the destination's base_url"
        )));
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let body = response.text().await.map_err(|e| {
        Failure::Transient(
            format!("connection dropped while reading {vendor}'s answer: {e}"),
            None,
        )
    })?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
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

/// Classifies a non-2xx answer; `message` is the vendor's error, already
/// read from its body.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    message: String,
    hints: &Hints,
) -> Failure {
    match status {
        401 => Failure::Unauthorized(format!("{message} ({})", hints.unauthorized)),
        403 => Failure::Forbidden(format!("{message} ({})", hints.forbidden)),
        404 | 501 | 505 => Failure::NotFound(message),
        429 => Failure::Throttled { retry_after },
        408 | 425 | 500..=599 => Failure::Transient(message, retry_after),
        _ => Failure::Rejected(message),
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
