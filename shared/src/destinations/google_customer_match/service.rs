//! Calling the Google Ads API (REST): an OAuth access token from the
//! refresh token, kept until shortly before it expires (and dropped when
//! Google answers 401), the developer token and `login-customer-id`
//! headers, and what Google's errors mean. Errors are `{"error": {"code",
//! "message", "status", "details": [{"errors": [{"errorCode": {kind:
//! value}, "message", "location"}]}]}}`: 401 credentials, 403 access or
//! an unapproved developer token, 429 `RESOURCE_EXHAUSTED` (waited out),
//! a list that cannot take Customer Match members (`INVALID_USER_LIST_*`,
//! terms not accepted) a misconfiguration, `CONCURRENT_MODIFICATION`
//! transient.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::Mutex;

use super::GoogleCustomerMatchConfig;
pub use crate::destinations::util::api::Failure;
use crate::destinations::util::api::{self, Hints};
use crate::destinations::util::oauth::{self, RefreshGrant};
use crate::secret::Secret;

const MAX_MESSAGE_CHARS: usize = 1500;

/// A token is refreshed this long before Google says it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// The list-level errors no retry can cure.
const MISCONFIGURED: &[&str] = &[
    "INVALID_USER_LIST_ID",
    "INVALID_USER_LIST_TYPE",
    "INCOMPATIBLE_UPLOAD_KEY_TYPE",
    "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS",
];

/// Calls on behalf of one destination, with its access token.
pub struct GoogleAds {
    client: reqwest::Client,
    pub config: GoogleCustomerMatchConfig,
    token: Mutex<Option<(Arc<Secret>, Instant)>>,
}

impl GoogleAds {
    pub fn new(client: reqwest::Client, config: &GoogleCustomerMatchConfig) -> Self {
        Self {
            client,
            config: config.clone(),
            token: Mutex::new(None),
        }
    }

    async fn access_token(&self) -> Result<Arc<Secret>, Failure> {
        let mut current = self.token.lock().await;
        if let Some((token, expires)) = current.as_ref()
            && Instant::now() + EXPIRY_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let grant = RefreshGrant {
            vendor: "Google",
            token_url: &self.config.token_url,
            client_id: self.config.client_id.expose(),
            client_secret: self.config.client_secret.expose(),
            refresh_token: self.config.refresh_token.expose(),
            timeout: self.config.delivery.timeout,
        };
        let answer = oauth::refresh(&self.client, &grant).await?;
        let Some(token) = answer.get("access_token").and_then(Value::as_str) else {
            return Err(Failure::Unexpected(
                "Google's answer to a token refresh has no access_token".into(),
            ));
        };
        let lifetime = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        let token = Arc::new(Secret::new(token.to_owned()));
        *current = Some((
            token.clone(),
            Instant::now() + Duration::from_secs(lifetime),
        ));
        tracing::info!(customer = %self.config.customer_id, "obtained a Google Ads access token");
        Ok(token)
    }

    /// `POST {base_url}/{version}/{path}` with a JSON body; returns the
    /// body of a 2xx answer. A 401 drops the access token and tries once
    /// more with a new one.
    pub async fn post(&self, path: &str, body: &Value) -> Result<String, Failure> {
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let mut request = self
                .client
                .request(
                    Method::POST,
                    format!(
                        "{}/{}/{path}",
                        self.config.base_url, self.config.api_version
                    ),
                )
                .bearer_auth(token.expose())
                .header("developer-token", self.config.developer_token.expose())
                .json(body);
            if let Some(login) = &self.config.login_customer_id {
                request = request.header("login-customer-id", login);
            }
            let answer = api::send(request, "Google Ads", self.config.delivery.timeout).await?;
            if answer.is_success() {
                return Ok(answer.body);
            }
            if answer.status == 401 && !refreshed {
                refreshed = true;
                let mut current = self.token.lock().await;
                if current
                    .as_ref()
                    .is_some_and(|(t, _)| Arc::ptr_eq(t, &token))
                {
                    *current = None;
                }
                continue;
            }
            return Err(classify(answer.status, answer.retry_after, &answer.body));
        }
    }
}

const HINTS: Hints = Hints {
    unauthorized: "check the destination's client_id, client_secret, refresh_token and developer_token: Google refused them",
    forbidden: "the credentials' user needs access to customer_id (through login_customer_id when it is a manager account's), and the developer token must be approved for the account",
};

pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let codes = error.map(error_codes).unwrap_or_default();
    let message = error_message(status, error, body);
    if codes
        .iter()
        .any(|(_, value)| MISCONFIGURED.contains(&value.as_str()))
    {
        return Failure::Misconfigured(message);
    }
    if codes
        .iter()
        .any(|(_, value)| value == "CONCURRENT_MODIFICATION")
    {
        return Failure::Transient(message, retry_after);
    }
    if status == 429 {
        let delay = retry_after.or_else(|| error.and_then(retry_delay));
        return Failure::Throttled { retry_after: delay };
    }
    api::classify(status, retry_after, message, &HINTS)
}

/// The `GoogleAdsFailure` errors of an error or partial failure.
pub fn failures(error: &Value) -> Vec<&Value> {
    error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("errors").and_then(Value::as_array))
        .flatten()
        .collect()
}

/// Each error's code: (`offlineUserDataJobError`, `INVALID_USER_LIST_ID`).
fn error_codes(error: &Value) -> Vec<(String, String)> {
    failures(error)
        .into_iter()
        .filter_map(|e| e.get("errorCode").and_then(Value::as_object))
        .flatten()
        .map(|(kind, value)| (kind.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// One `GoogleAdsFailure` error as a reason: `The country code is invalid.
/// (offlineUserDataJobError: INVALID_COUNTRY_CODE)`.
pub fn describe(failure: &Value) -> String {
    let message = failure
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)");
    let code = failure
        .get("errorCode")
        .and_then(Value::as_object)
        .and_then(|c| c.iter().next())
        .map(|(kind, value)| format!(" ({kind}: {})", value.as_str().unwrap_or_default()))
        .unwrap_or_default();
    format!("{message}{code}")
}

/// `quotaErrorDetails.retryDelay` (`"30s"`) of a 429's details.
fn retry_delay(error: &Value) -> Option<Duration> {
    let delay = failures(error)
        .into_iter()
        .find_map(|e| e.pointer("/details/quotaErrorDetails/retryDelay"))?
        .as_str()?;
    let secs: f64 = delay.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn error_message(status: u16, error: Option<&Value>, body: &str) -> String {
    let text = match error {
        Some(error) => {
            let reasons: Vec<String> = failures(error).into_iter().map(describe).collect();
            if reasons.is_empty() {
                let message = error.get("message").and_then(Value::as_str).unwrap_or("");
                format!("Google Ads {status}: {message}")
            } else {
                format!("Google Ads {status}: {}", reasons.join("; "))
            }
        }
        None if body.trim().is_empty() => format!("Google Ads {status}"),
        None => format!("Google Ads {status}: {}", body.trim()),
    };
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn google_error(status: &str, code: u16, kind: &str, value: &str, message: &str) -> String {
        serde_json::json!({"error": {"code": code, "message": "Request contains an invalid argument.", "status": status,
            "details": [{"@type": "type.googleapis.com/google.ads.googleads.v20.errors.GoogleAdsFailure",
                "errors": [{"errorCode": {kind: value}, "message": message}], "requestId": "r1"}]}})
        .to_string()
    }

    #[test]
    fn google_ads_errors_become_messages_and_classes() {
        let body = google_error(
            "INVALID_ARGUMENT",
            400,
            "offlineUserDataJobError",
            "INVALID_USER_LIST_ID",
            "The user list ID provided for the job is invalid.",
        );
        assert!(matches!(
            classify(400, None, &body),
            Failure::Misconfigured(m) if m == "Google Ads 400: The user list ID provided for the job is invalid. (offlineUserDataJobError: INVALID_USER_LIST_ID)"
        ));
        let body = google_error(
            "ABORTED",
            409,
            "databaseError",
            "CONCURRENT_MODIFICATION",
            "Multiple requests were attempting to modify the same resource at once.",
        );
        assert!(matches!(
            classify(409, None, &body),
            Failure::Transient(_, None)
        ));
        let quota = serde_json::json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Too many requests.",
            "details": [{"errors": [{"errorCode": {"quotaError": "RESOURCE_TEMPORARILY_EXHAUSTED"}, "message": "Too many requests.",
                "details": {"quotaErrorDetails": {"retryDelay": "30s"}}}]}]}}).to_string();
        assert_eq!(
            classify(429, None, &quota),
            Failure::Throttled {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        let body = google_error(
            "UNAUTHENTICATED",
            401,
            "authenticationError",
            "OAUTH_TOKEN_INVALID",
            "Oauth token is invalid.",
        );
        assert!(
            matches!(classify(401, None, &body), Failure::Unauthorized(m) if m.contains("developer_token"))
        );
    }
}
