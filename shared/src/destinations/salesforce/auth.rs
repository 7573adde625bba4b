//! OAuth 2.0 refresh-token flow: an access token and the org's instance URL
//! from `POST {login_url}/services/oauth2/token`, kept per worker process
//! and refreshed when Salesforce answers 401 (`INVALID_SESSION_ID`: the
//! session expired or was revoked).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::SalesforceConfig;
use crate::secret::Secret;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::destinations::util::api::Failure;
use crate::destinations::util::oauth::{self, RefreshGrant};

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
    let token_url = format!("{}/services/oauth2/token", config.login_url);
    let grant = RefreshGrant {
        vendor: "Salesforce",
        token_url: &token_url,
        client_id: config.client_id.expose(),
        client_secret: config.client_secret.expose(),
        refresh_token: config.refresh_token.expose(),
        timeout: config.delivery.timeout,
    };
    let answer = oauth::refresh(client, &grant).await?;
    let token: TokenAnswer = serde_json::from_value(answer).map_err(|e| {
        Failure::Unexpected(format!(
            "Salesforce's answer to a token refresh is not what its API documents: {e}"
        ))
    })?;
    Ok(Session {
        access_token: Secret::new(token.access_token),
        instance_url: token.instance_url.trim_end_matches('/').to_owned(),
    })
}
