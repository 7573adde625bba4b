//! Sending queued alert messages. A message that fails is tried again
//! after 2, 4, 8 … seconds (at most 10 minutes apart), and given up after
//! 20 attempts; its last error is kept. URLs are secrets: never logged.

use std::time::Duration;

use ebb_shared::config::{AlertTarget, Config};
use ebb_shared::state::alerts::{self, Delivery};
use sqlx::PgPool;

use super::message;
use crate::error::PlannerError;

const MAX_ATTEMPTS: i32 = 20;
const MAX_BACKOFF: Duration = Duration::from_secs(600);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends the messages that are due; returns how many were delivered.
pub async fn deliver_due(
    config: &Config,
    pool: &PgPool,
    client: &reqwest::Client,
) -> Result<usize, PlannerError> {
    let mut sent = 0;
    for delivery in alerts::due(pool, 50).await? {
        let Some(alert) = config.alerts.iter().find(|a| a.name == delivery.alert) else {
            alerts::failed(
                pool,
                delivery.id,
                "the alert is no longer in the config",
                None,
            )
            .await?;
            continue;
        };
        match send(client, &alert.target, &delivery).await {
            Ok(()) => {
                alerts::delivered(pool, delivery.id).await?;
                sent += 1;
            }
            Err(error) => {
                let attempts = delivery.attempts + 1;
                let retry_in = (attempts < MAX_ATTEMPTS).then(|| {
                    Duration::from_secs(2u64.saturating_pow(attempts as u32)).min(MAX_BACKOFF)
                });
                tracing::warn!(alert = %delivery.alert, attempts, error = %error, retry_in = ?retry_in, "alert message not delivered");
                alerts::failed(pool, delivery.id, &error, retry_in).await?;
            }
        }
    }
    Ok(sent)
}

async fn send(
    client: &reqwest::Client,
    target: &AlertTarget,
    delivery: &Delivery,
) -> Result<(), String> {
    let (url, body) = match target {
        AlertTarget::Webhook(url) => (url, message::webhook(delivery)),
        AlertTarget::Slack(url) => (url, message::slack(delivery)),
    };
    let response = client
        .post(url.expose())
        .timeout(TIMEOUT)
        .json(&body)
        .send()
        .await
        // reqwest's errors can carry the URL, a secret: keep the kind only.
        .map_err(|e| {
            if e.is_timeout() {
                "the receiver did not answer in time".to_owned()
            } else if e.is_connect() {
                "cannot connect to the receiver".to_owned()
            } else {
                "the request failed".to_owned()
            }
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered HTTP {status}"))
    }
}
