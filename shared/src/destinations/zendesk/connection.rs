//! `ebb check --connect` for Zendesk: who the credentials act as (`GET
//! /api/v2/users/me`), the account's rate limit (that answer's
//! `X-Rate-Limit` header) against the configured one, and whether each
//! mapped custom field exists (`GET /api/v2/user_fields` or
//! `organization_fields`).

use reqwest::Method;
use serde::Deserialize;

use super::service::{self, Failure};
use super::validate::standard_fields;
use super::{ZendeskConfig, ZendeskObject};
use crate::destinations::util::api::parse_answer;

#[derive(Debug, Deserialize)]
struct Me {
    user: MeUser,
}

#[derive(Debug, Deserialize)]
struct MeUser {
    id: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    role: String,
}

#[derive(Debug, Deserialize)]
struct CustomField {
    key: String,
    #[serde(default = "active")]
    active: bool,
}

fn active() -> bool {
    true
}

/// The mapping's problems, and who the credentials act as
/// (`ops@acme.com (admin)`).
pub async fn problems(
    client: &reqwest::Client,
    config: &ZendeskConfig,
    fields: &[(&str, &str)],
) -> Result<(Vec<String>, String), Failure> {
    let mut problems = Vec::new();
    let answer = service::call(client, config, Method::GET, "/users/me", None).await?;
    let me: Me = parse_answer("Zendesk", "the users/me request", &answer.body)?;
    let acting_as = format!(
        "{} ({})",
        me.user.email.as_deref().unwrap_or("an anonymous user"),
        me.user.role
    );
    let may_write = matches!(me.user.role.as_str(), "agent" | "admin");
    if me.user.id.is_none() || !may_write {
        problems.push(format!(
            "the credentials act as {acting_as}; Zendesk lets only agents and admins write {} (organizations: admins, or agents whose role may manage them)",
            config.object.plural()
        ));
    }
    if let Some(problem) = rate_limit_problem(config, &answer.headers) {
        problems.push(problem);
    }
    let custom: Vec<&str> = fields
        .iter()
        .map(|(field, _)| *field)
        .filter(|field| !standard_fields(config.object).contains(field))
        .collect();
    if !custom.is_empty() {
        let kind = match config.object {
            ZendeskObject::Users => "user_fields",
            ZendeskObject::Organizations => "organization_fields",
        };
        let answer = service::call(client, config, Method::GET, &format!("/{kind}"), None).await?;
        let listed: serde_json::Value =
            parse_answer("Zendesk", &format!("the {kind} request"), &answer.body)?;
        let known: Vec<CustomField> = listed
            .get(kind)
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| {
                Failure::Unexpected(format!(
                    "Zendesk's answer to the {kind} request is not what its API documents: {e}"
                ))
            })?
            .unwrap_or_default();
        let place = match config.object {
            ZendeskObject::Users => "Admin Center → People → Configuration → User fields",
            ZendeskObject::Organizations => {
                "Admin Center → People → Configuration → Organization fields"
            }
        };
        for field in custom {
            match known.iter().find(|f| f.key == field) {
                None => problems.push(format!(
                    "`{field}` is neither a Zendesk {} property nor a custom field of this account; create a field with key `{field}` ({place}) or map a standard property",
                    config.object.singular()
                )),
                Some(f) if !f.active => problems.push(format!(
                    "the custom field `{field}` is inactive in Zendesk; Zendesk keeps no values for it until it is activated ({place})"
                )),
                Some(_) => {}
            }
        }
    }
    Ok((problems, acting_as))
}

/// The account's limit from `X-Rate-Limit` (requests a minute), compared
/// with the destination's `rate_limit`.
fn rate_limit_problem(
    config: &ZendeskConfig,
    headers: &reqwest::header::HeaderMap,
) -> Option<String> {
    let account: f64 = ["x-rate-limit", "ratelimit-limit"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok()?.trim().parse().ok())?;
    let configured = config.delivery.limits.rate_limit?;
    let per_minute = f64::from(configured.requests) * 60.0 / configured.per.as_secs_f64();
    (per_minute > account + 0.5).then(|| {
        format!(
            "Zendesk allows this account {account} requests a minute (its X-Rate-Limit header) and the destination's rate_limit allows {per_minute:.0}: \
             set rate_limit = {{ requests = {account}, per_seconds = 60 }} or the requests over it are answered 429"
        )
    })
}
