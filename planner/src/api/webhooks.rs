//! `POST /api/v1/webhooks/dbt`: dbt Cloud's "job run completed" webhook.
//! Not behind a bearer token: dbt Cloud signs each delivery instead, with
//! the webhook's secret (`Authorization: <hex HMAC-SHA256 of the body>`).
//! A successful run of a job starts every sync that reads a model the job
//! builds (`[dbt].jobs`; every dbt-model sync for a job not listed), with
//! the trigger `dbt:<job id>`. dbt Cloud retries deliveries: a retried one
//! starts nothing twice (the dbt run id is the idempotency key).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ebb_shared::StateError;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::problem::Problem;
use crate::control::trigger::{self, IdempotencyKey};
use crate::error::PlannerError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What the webhook did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DbtWebhookAnswer {
    /// Runs started (or started by an earlier delivery of the same dbt run).
    pub triggered: Vec<Triggered>,
    /// Syncs not started, and why (paused, already running).
    pub skipped: Vec<Skipped>,
    /// Why nothing was considered (not a completed, successful run).
    pub ignored: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Triggered {
    pub sync: String,
    pub run_id: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    pub sync: String,
    pub reason: String,
}

/// The part of dbt Cloud's payload Ebb reads.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DbtEvent {
    /// `job.run.started`, `job.run.completed`, `job.run.errored`.
    pub event_type: String,
    pub data: DbtRun,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DbtRun {
    pub job_id: String,
    pub run_id: String,
    /// `Success`, `Error`, `Cancelled`, …
    pub run_status: String,
}

/// dbt Cloud's job webhook.
#[utoipa::path(post, path = "/webhooks/dbt", tag = "webhooks",
    params(("Authorization" = String, Header, description = "dbt Cloud's signature: the hex HMAC-SHA256 of the body, keyed with the webhook's secret ([dbt].webhook_secret)")),
    request_body = DbtEvent,
    responses(
        (status = 202, description = "What the event started", body = DbtWebhookAnswer),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A missing or wrong signature", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The dbt webhook is off", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn dbt_webhook(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<DbtWebhookAnswer>), Problem> {
    let config = &api.ctx.config;
    if !headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Err(Problem::unauthorized(
            "dbt Cloud signs its webhooks in the Authorization header; it is missing",
        ));
    }
    let Some((dbt, secret)) = config
        .dbt
        .as_ref()
        .and_then(|dbt| dbt.webhook_secret.as_ref().map(|secret| (dbt, secret)))
    else {
        return Err(Problem::not_found(
            "the dbt webhook is off: set [dbt].webhook_secret to the webhook's secret from dbt Cloud",
        ));
    };
    verify(&headers, &body, secret.expose().as_bytes())?;
    let event: DbtEvent = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("not a dbt Cloud webhook payload: {e}")))?;
    let ignore = |why: String| {
        Ok((
            StatusCode::ACCEPTED,
            Json(DbtWebhookAnswer {
                triggered: Vec::new(),
                skipped: Vec::new(),
                ignored: Some(why),
            }),
        ))
    };
    if event.event_type != "job.run.completed" {
        return ignore(format!("`{}` is not a completed run", event.event_type));
    }
    if event.data.run_status != "Success" {
        return ignore(format!(
            "dbt run {} of job {} ended `{}`; its models were not rebuilt",
            event.data.run_id, event.data.job_id, event.data.run_status
        ));
    }
    let built: Option<BTreeSet<&str>> = dbt
        .jobs
        .get(&event.data.job_id)
        .map(|models| models.iter().map(String::as_str).collect());
    let trigger_label = format!("dbt:{}", event.data.job_id);
    let mut answer = DbtWebhookAnswer {
        triggered: Vec::new(),
        skipped: Vec::new(),
        ignored: None,
    };
    for sync in config.syncs.values() {
        let Some(model) = sync.model.dbt_model() else {
            continue;
        };
        if built.as_ref().is_some_and(|built| !built.contains(model)) {
            continue;
        }
        if ebb_shared::state::syncs::is_paused(&api.ctx.pool, &sync.name)
            .await
            .map_err(PlannerError::from)?
        {
            answer.skipped.push(Skipped {
                sync: sync.name.clone(),
                reason: "its schedule is paused".into(),
            });
            continue;
        }
        let key = format!("dbt-run:{}", event.data.run_id);
        let started = trigger::start_in_background(
            &api.ctx,
            sync,
            false,
            &trigger_label,
            Some(IdempotencyKey {
                caller: &format!("dbt:{}", sync.name),
                key: &key,
            }),
        )
        .await;
        match started {
            Ok(started) => answer.triggered.push(Triggered {
                sync: sync.name.clone(),
                run_id: started.run.id,
            }),
            Err(PlannerError::State(StateError::RunActive { run_id, .. })) => {
                answer.skipped.push(Skipped {
                    sync: sync.name.clone(),
                    reason: format!("run #{run_id} is still active"),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Checks dbt Cloud's signature in constant time.
fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), Problem> {
    let signature = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| {
            Problem::unauthorized(
                "dbt Cloud signs its webhooks in the Authorization header; it is missing",
            )
        })?;
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|_| Problem::unauthorized("the webhook secret cannot key an HMAC"))?;
    mac.update(body);
    let expected = ebb_shared::hex::encode(&mac.finalize().into_bytes());
    if bool::from(
        expected
            .as_bytes()
            .ct_eq(signature.to_ascii_lowercase().as_bytes()),
    ) {
        Ok(())
    } else {
        Err(Problem::unauthorized(
            "the signature does not match the body: check [dbt].webhook_secret against the webhook's secret in dbt Cloud",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let body = b"what do ya want for nothing?";
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
                .parse()
                .unwrap(),
        );
        assert!(verify(&headers, body, b"Jefe").is_ok());
        assert_eq!(
            verify(&headers, b"something else", b"Jefe")
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            verify(&HeaderMap::new(), body, b"Jefe").unwrap_err().status,
            401
        );
    }
}
