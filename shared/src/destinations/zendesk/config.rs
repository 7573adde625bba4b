//! `type = "zendesk"`: users or organizations of one Zendesk Support
//! account, written through its bulk endpoints and background jobs.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::ZendeskDestination;
use crate::config::{
    BatchCap, ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping,
    RateLimit, SyncConfig,
};
use crate::destinations::budget::BatchWrites;
use crate::destinations::util::vendor::{connection_check, match_field_mapped};
use crate::destinations::{
    BuildContext, ConnectionCheck, Destination, DestinationConfig, DestinationError,
};
use crate::secret::Secret;

/// The bulk endpoints (`create_or_update_many`, `destroy_many`) take at
/// most 100 users or ids per request.
pub const MAX_BATCH: usize = 100;

/// One Zendesk Support account.
#[derive(Debug, Clone)]
pub struct ZendeskConfig {
    /// `https://{subdomain}.zendesk.com`, or an emulator's address.
    pub base_url: String,
    pub credentials: Credentials,
    /// What the sync writes: users or organizations.
    pub object: ZendeskObject,
    /// The field users are matched on by `create_or_update_many`:
    /// `external_id` or `email` (organizations: `external_id`).
    pub match_by: MatchBy,
    /// How long a background job is waited for before its records are
    /// tried again (the writes are upserts: a second job does no harm).
    pub job_timeout: Duration,
    /// Records per task, timeout, retries and limits.
    pub delivery: DeliverySettings,
}

#[derive(Debug, Clone)]
pub enum Credentials {
    /// An API token, sent as HTTP Basic `{email}/token:{token}`.
    ApiToken { email: String, token: Secret },
    /// An OAuth access token, sent as a Bearer token.
    OAuth(Secret),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZendeskObject {
    Users,
    Organizations,
}

impl ZendeskObject {
    /// The singular, as Zendesk's bodies name one: `user`, `organization`.
    pub fn singular(self) -> &'static str {
        match self {
            ZendeskObject::Users => "user",
            ZendeskObject::Organizations => "organization",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ZendeskObject::Users => "users",
            ZendeskObject::Organizations => "organizations",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    ExternalId,
    Email,
}

impl MatchBy {
    pub fn field(self) -> &'static str {
        match self {
            MatchBy::ExternalId => "external_id",
            MatchBy::Email => "email",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZendeskConfig {
    subdomain: Option<String>,
    base_url: Option<String>,
    email: Option<String>,
    api_token: Option<String>,
    oauth_token: Option<String>,
    #[serde(default = "default_object")]
    object: ZendeskObject,
    #[serde(default = "default_match_by")]
    match_by: MatchBy,
    #[serde(default = "default_job_timeout_secs")]
    job_timeout_secs: u64,
}

fn default_object() -> ZendeskObject {
    ZendeskObject::Users
}

fn default_match_by() -> MatchBy {
    MatchBy::ExternalId
}

fn default_job_timeout_secs() -> u64 {
    300
}

/// Zendesk's Support API allows 200 requests a minute on its smallest plan
/// (Team; Growth and Professional 400, Enterprise 700, 2,500 with the High
/// Volume add-on: raise `rate_limit` to your plan's), polls of job
/// statuses included; an account runs at most 30 background jobs at once.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(MAX_BATCH, 4)
        .cap(BatchCap {
            max: MAX_BATCH,
            api_takes: "Zendesk's bulk endpoints take",
            unit: "records",
            hint: "",
        })
        .rate_limit(RateLimit {
            requests: 200,
            per: Duration::from_secs(60),
        })
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawZendeskConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let base_url = match (&raw.subdomain, &raw.base_url) {
        (Some(_), Some(_)) => {
            return Err(table.invalid("base_url", "give `subdomain` or `base_url`, not both"));
        }
        (None, Some(url)) => table.service_url("base_url", url)?,
        (Some(subdomain), None) => {
            let subdomain = subdomain.trim();
            if subdomain.is_empty()
                || !subdomain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(table.invalid(
                    "subdomain",
                    format!("`{subdomain}` is not a Zendesk subdomain; give the `acme` of acme.zendesk.com"),
                ));
            }
            format!("https://{subdomain}.zendesk.com")
        }
        (None, None) => {
            return Err(table.invalid_table(
                "a zendesk destination needs `subdomain` (the `acme` of acme.zendesk.com) or `base_url`",
            ));
        }
    };
    let credentials = match (raw.email, raw.api_token, raw.oauth_token) {
        (Some(email), Some(token), None) => {
            if !crate::destinations::util::email::is_email(email.trim()) {
                return Err(table.invalid(
                    "email",
                    "must be the email address of the agent or admin the API token acts as",
                ));
            }
            Credentials::ApiToken {
                email: email.trim().to_owned(),
                token: table.secret("api_token", &token)?,
            }
        }
        (None, None, Some(token)) => Credentials::OAuth(table.secret("oauth_token", &token)?),
        (None, Some(_), None) => {
            return Err(table.invalid(
                "email",
                "an API token needs the email address of the agent or admin it acts as",
            ));
        }
        _ => {
            return Err(table.invalid_table(
                "a zendesk destination needs `email` and `api_token` (Admin Center → Apps and integrations → Zendesk API), or `oauth_token`, not both",
            ));
        }
    };
    if raw.object == ZendeskObject::Organizations && raw.match_by != MatchBy::ExternalId {
        return Err(table.invalid(
            "match_by",
            "Zendesk matches organizations on `external_id` only",
        ));
    }
    if raw.job_timeout_secs == 0 || raw.job_timeout_secs > 3600 {
        return Err(table.invalid(
            "job_timeout_secs",
            "must be between 1 and 3600 (Zendesk keeps a job's status for an hour)",
        ));
    }
    Ok(Arc::new(ZendeskConfig {
        base_url,
        credentials,
        object: raw.object,
        match_by: raw.match_by,
        job_timeout: Duration::from_secs(raw.job_timeout_secs),
        delivery,
    }))
}

impl DestinationConfig for ZendeskConfig {
    fn type_name(&self) -> &'static str {
        "zendesk"
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    /// Users: a `create_or_update_many` per kind of write, a `destroy_many`
    /// for the removals, each with at least one poll of its job.
    /// Organizations: a `create_or_update` per record, and the removals'
    /// `destroy_many` and its poll.
    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        let removals = 2 * u64::from(batch.removes > 0);
        match self.object {
            ZendeskObject::Users => {
                let jobs = u64::from(batch.writes > 0) + u64::from(batch.updates_by_id > 0);
                2 * jobs + removals
            }
            ZendeskObject::Organizations => batch.writes + batch.updates_by_id + removals,
        }
    }

    fn requests_note(&self, _sync: &SyncConfig) -> Option<&'static str> {
        Some(
            "counted: one poll per background job; a job Zendesk takes longer to run is polled more often (every 0.5 s, then up to every 5 s)",
        )
    }

    fn check_mapping(
        &self,
        destination: &str,
        mapping: &[FieldMapping],
        primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        let field = self.match_by.field();
        let how = format!("matches Zendesk {} on `{field}`", self.object.plural());
        match_field_mapped(destination, &how, field, mapping, primary_key)?;
        if !mapping.is_empty() && !mapping.iter().any(|m| m.field == "name") {
            return Err(format!(
                "destination `{destination}` creates Zendesk {} and Zendesk requires a `name` for each: map one (e.g. `name = \"full_name\"`)",
                self.object.plural()
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(ZendeskDestination::new(
            ctx.http.clone(),
            self,
            ctx.limiter.clone(),
        )))
    }

    /// Reads who the credentials act as, the account's rate limit (its
    /// `X-Rate-Limit` header) and its custom user or organization fields.
    fn check_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        sync: &'a SyncConfig,
        fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async move {
            let checked = super::connection::problems(client, self, fields)
                .await
                .map(|(problems, acting_as)| {
                    let accepted = format!(
                        "Zendesk accepts the mapping of sync `{}` as {acting_as}; {} are matched on `{}`",
                        sync.name,
                        self.object.plural(),
                        self.match_by.field()
                    );
                    (problems, accepted)
                });
            Some(connection_check(checked, &self.base_url, "the account"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};

    const ZENDESK: &str = r#"
    [destinations.support]
    type = "zendesk"
    {EXTRA}

    [syncs.users_zd]
    source = "warehouse"
    model = "SELECT id, email, first_name FROM analytics.customers"
    primary_key = "id"
    destination = "support"
    [syncs.users_zd.mapping]
    {MAPPING}
    "#;

    const TOKEN: &str =
        "subdomain = \"acme\"\nemail = \"ops@acme.com\"\napi_token = \"zd-token-123\"";

    fn with_zendesk(extra: &str, mapping: &str) -> String {
        format!(
            "{VALID}{}",
            ZENDESK
                .replace("{EXTRA}", extra)
                .replace("{MAPPING}", mapping)
        )
    }

    #[test]
    fn zendesk_config_takes_the_subdomain_and_one_kind_of_credentials() {
        let config = parse_config(&with_zendesk(
            TOKEN,
            "external_id = \"id\"\nname = \"first_name\"",
        ))
        .unwrap();
        let Some(zendesk) = config
            .destination("support")
            .and_then(|d| d.downcast_ref::<ZendeskConfig>())
        else {
            panic!("not a zendesk destination");
        };
        assert_eq!(zendesk.base_url, "https://acme.zendesk.com");
        assert_eq!(zendesk.object, ZendeskObject::Users);
        assert_eq!(zendesk.match_by, MatchBy::ExternalId);
        assert_eq!(zendesk.delivery.batch_size, 100);
        assert_eq!(
            zendesk
                .delivery
                .limits
                .rate_limit
                .map(|r| (r.requests, r.per)),
            Some((200, Duration::from_secs(60)))
        );
        assert!(
            !format!("{config:?}").contains("zd-token-123"),
            "token redacted"
        );
        assert!(
            parse_config(&with_zendesk(TOKEN, "")).is_ok(),
            "no [mapping]: checked by `ebb check`"
        );
        let cases = [
            (
                with_zendesk(
                    "subdomain = \"acme.zendesk.com\"\noauth_token = \"t\"",
                    "external_id = \"id\"\nname = \"first_name\"",
                ),
                "support.subdomain",
                "give the `acme` of acme.zendesk.com",
            ),
            (
                with_zendesk(
                    "subdomain = \"acme\"\napi_token = \"t\"",
                    "external_id = \"id\"\nname = \"first_name\"",
                ),
                "support.email",
                "needs the email address",
            ),
            (
                with_zendesk(
                    &format!("{TOKEN}\noauth_token = \"t\""),
                    "external_id = \"id\"\nname = \"first_name\"",
                ),
                "support",
                "not both",
            ),
            (
                with_zendesk(TOKEN, "email = \"email\"\nname = \"first_name\""),
                "syncs.users_zd.mapping",
                "matches Zendesk users on `external_id`",
            ),
            (
                with_zendesk(TOKEN, "external_id = \"id\""),
                "syncs.users_zd.mapping",
                "requires a `name`",
            ),
            (
                with_zendesk(
                    &format!("{TOKEN}\nobject = \"organizations\"\nmatch_by = \"email\""),
                    "external_id = \"id\"\nname = \"first_name\"",
                ),
                "support.match_by",
                "organizations on `external_id` only",
            ),
            (
                with_zendesk(
                    &format!("{TOKEN}\nbatch_size = 101"),
                    "external_id = \"id\"\nname = \"first_name\"",
                ),
                "support",
                "100",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse_config(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(message), "{key}: {err}");
        }
    }
}
