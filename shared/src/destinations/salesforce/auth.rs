//! OAuth 2.0 refresh-token flow: an access token and the org's instance URL
//! from `POST {login_url}/services/oauth2/token`, kept per worker process
//! and refreshed when Salesforce answers 401 (`INVALID_SESSION_ID`: the
//! session expired or was revoked).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::SalesforceConfig;
use crate::secret::Secret;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::destinations::util::api::{self, Failure};

/// An access token and where to use it.
pub struct Session {
    pub access_token: Secret,
    pub instance_url: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    instance_url: String,
}

pub struct TokenSource {
    client: reqwest::Client,
    config: SalesforceConfig,
    current: Mutex<Option<Arc<Session>>>,
    refreshes: AtomicU32,
}

impl TokenSource {
    pub fn new(client: reqwest::Client, config: &SalesforceConfig) -> Self {
        Self {
            client,
            config: config.clone(),
            current: Mutex::new(None),
            refreshes: AtomicU32::new(0),
        }
    }

    /// The current session, refreshing the token first if there is none.
    pub async fn session(&self) -> Result<Arc<Session>, Failure> {
        let mut current = self.current.lock().await;
        if let Some(session) = current.as_ref() {
            return Ok(session.clone());
        }
        let session = Arc::new(refresh(&self.client, &self.config).await?);
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(object = %self.config.object, "obtained a Salesforce access token");
        *current = Some(session.clone());
        Ok(session)
    }

    /// Drops `stale` (Salesforce refused it), unless another request
    /// already replaced it.
    pub async fn invalidate(&self, stale: &Arc<Session>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, stale)) {
            *current = None;
        }
    }
}

/// Exchanges the refresh token for an access token.
pub async fn refresh(
    client: &reqwest::Client,
    config: &SalesforceConfig,
) -> Result<Session, Failure> {
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("client_id", config.client_id.expose()),
        ("client_secret", config.client_secret.expose()),
        ("refresh_token", config.refresh_token.expose()),
    ]);
    let request = client
        .post(format!("{}/services/oauth2/token", config.login_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let answer = api::send(request, "Salesforce", config.delivery.timeout).await?;
    if answer.is_success() {
        let token: TokenAnswer = api::parse_answer("Salesforce", "a token refresh", &answer.body)?;
        return Ok(Session {
            access_token: Secret::new(token.access_token),
            instance_url: token.instance_url.trim_end_matches('/').to_owned(),
        });
    }
    // `{"error":"invalid_grant","error_description":"expired access/refresh token"}`
    let parsed: Option<Value> = serde_json::from_str(&answer.body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (error, description) = (field("error"), field("error_description"));
    let message = format!("Salesforce OAuth {}: {error}: {description}", answer.status);
    Err(match (answer.status, error.as_str()) {
        (
            400 | 401,
            "invalid_grant" | "invalid_client_id" | "invalid_client" | "unauthorized_client",
        ) => Failure::Unauthorized(format!(
            "{message} (check the destination's client_id, client_secret and refresh_token)"
        )),
        (429, _) => Failure::Throttled {
            retry_after: answer.retry_after,
        },
        (500..=599, _) => Failure::Transient(message, answer.retry_after),
        _ => Failure::Unauthorized(message),
    })
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(byte as char)
                }
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(
            super::form(&[("refresh_token", "5Aep861.a+b/c=="), ("x", "ä b")]),
            "refresh_token=5Aep861.a%2Bb%2Fc%3D%3D&x=%C3%A4%20b"
        );
    }
}
