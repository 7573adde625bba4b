//! `type = "meta_custom_audience"`: the members of one Meta (Facebook,
//! Instagram) customer-list Custom Audience.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::MetaCustomAudienceDestination;
use super::normalize::{KEYS, key_of};
use crate::config::{
    BatchCap, ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping,
    RateLimit, SyncConfig,
};
use crate::destinations::budget::BatchWrites;
use crate::destinations::util::audience;
use crate::destinations::util::vendor::connection_check;
use crate::destinations::{
    BuildContext, ConnectionCheck, Destination, DestinationConfig, DestinationError,
};
use crate::secret::Secret;

/// `/{audience_id}/users` takes at most 10,000 members per request.
pub const MAX_BATCH: usize = 10_000;

/// The Graph API version Ebb's requests follow.
pub const DEFAULT_API_VERSION: &str = "v23.0";

#[derive(Debug, Clone)]
pub struct MetaCustomAudienceConfig {
    /// The Custom Audience's id (a customer-list audience).
    pub audience_id: String,
    /// A system user's access token with `ads_management`.
    pub access_token: Secret,
    /// `https://graph.facebook.com`, or an emulator's address.
    pub base_url: String,
    pub api_version: String,
    pub delivery: DeliverySettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    audience_id: String,
    access_token: String,
    base_url: Option<String>,
    #[serde(default = "default_api_version")]
    api_version: String,
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.to_owned()
}

/// Meta caps a request at 10,000 members, and throttles Custom Audience
/// calls per ad account (error 80003) without publishing a fixed rate:
/// one request a second keeps a sync far below it (10,000 members a
/// second), two in flight.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(MAX_BATCH, 2)
        .cap(BatchCap {
            max: MAX_BATCH,
            api_takes: "Meta's /{audience_id}/users takes",
            unit: "members",
            hint: "",
        })
        .rate_limit(RateLimit {
            requests: 60,
            per: Duration::from_secs(60),
        })
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let access_token = table.secret("access_token", &raw.access_token)?;
    if raw.audience_id.is_empty() || !raw.audience_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(table.invalid(
            "audience_id",
            "must be the Custom Audience's numeric id (Ads Manager → Audiences)",
        ));
    }
    let version_ok = raw
        .api_version
        .strip_prefix('v')
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if !version_ok {
        return Err(table.invalid(
            "api_version",
            format!(
                "`{}` is not a Graph API version such as \"{DEFAULT_API_VERSION}\"",
                raw.api_version
            ),
        ));
    }
    let base_url = match raw.base_url {
        Some(url) => table.service_url("base_url", &url)?,
        None => "https://graph.facebook.com".to_owned(),
    };
    Ok(Arc::new(MetaCustomAudienceConfig {
        audience_id: raw.audience_id,
        access_token,
        base_url,
        api_version: raw.api_version,
        delivery,
    }))
}

impl DestinationConfig for MetaCustomAudienceConfig {
    fn type_name(&self) -> &'static str {
        "meta_custom_audience"
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    /// A `DELETE` for the members removed (and the old identifiers of
    /// records whose identifiers changed), a `POST` for those added.
    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        u64::from(batch.removes + batch.updates_by_id > 0)
            + u64::from(batch.writes + batch.updates_by_id > 0)
    }

    fn check_mapping(
        &self,
        destination: &str,
        mapping: &[FieldMapping],
        _primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        let keys: Vec<String> = KEYS.iter().map(|k| k.to_lowercase()).collect();
        audience::identifiers_only(
            destination,
            mapping,
            |field| key_of(field).is_some(),
            &keys,
            "a Custom Audience",
        )
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(MetaCustomAudienceDestination::new(
            ctx.http.clone(),
            self,
            ctx.limiter.clone(),
        )))
    }

    /// Reads the audience: the token is checked, and an audience that is not
    /// a customer list is named.
    fn check_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        sync: &'a SyncConfig,
        _fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async move {
            let checked = super::audience_problems(client, self)
                .await
                .map(|(problems, name)| {
                    (
                        problems,
                        format!(
                            "Meta accepts the token for sync `{}`: Custom Audience {} ({name})",
                            sync.name, self.audience_id
                        ),
                    )
                });
            Some(connection_check(
                checked,
                &self.base_url,
                "the Custom Audience",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};

    const META: &str = r#"
    [destinations.audience]
    type = "meta_custom_audience"
    audience_id = "23851234567890123"
    access_token = "EAAB-meta-token-123"
    {EXTRA}

    [syncs.buyers]
    source = "warehouse"
    model = "SELECT id, email, first_name FROM analytics.customers"
    primary_key = "id"
    destination = "audience"
    [syncs.buyers.mapping]
    {MAPPING}
    "#;

    fn with_meta(extra: &str, mapping: &str) -> String {
        format!(
            "{VALID}{}",
            META.replace("{EXTRA}", extra).replace("{MAPPING}", mapping)
        )
    }

    #[test]
    fn meta_config_takes_only_customer_list_keys() {
        let config =
            parse_config(&with_meta("", "email = \"email\"\nfn = \"first_name\"")).unwrap();
        let Some(meta) = config
            .destination("audience")
            .and_then(|d| d.downcast_ref::<MetaCustomAudienceConfig>())
        else {
            panic!("not a meta_custom_audience destination");
        };
        assert_eq!(meta.base_url, "https://graph.facebook.com");
        assert_eq!(meta.delivery.batch_size, 10_000);
        assert!(
            !format!("{config:?}").contains("EAAB-meta-token"),
            "token redacted"
        );
        let cases = [
            (
                with_meta("", "email = \"email\"\nplan = \"plan\""),
                "syncs.buyers.mapping",
                "`plan` is not one",
            ),
            (
                with_meta("api_version = \"23\"", "email = \"email\""),
                "audience.api_version",
                "Graph API version",
            ),
            (
                with_meta("", "email = \"email\"").replace("23851234567890123", "my-audience"),
                "audience.audience_id",
                "numeric id",
            ),
            (
                with_meta("batch_size = 10001", "email = \"email\""),
                "audience",
                "10000",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse_config(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(message), "{key}: {err}");
        }
    }
}
