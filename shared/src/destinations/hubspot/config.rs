//! `type = "hubspot"`: one CRM object type, records matched on one
//! property, with HubSpot's batch cap and rate limit as defaults.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::HubSpotDestination;
use crate::config::{
    BatchCap, ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping,
    RateLimit, SyncConfig,
};
use crate::destinations::budget::BatchWrites;
use crate::destinations::util::limiter::Limiter;
use crate::destinations::util::vendor::{connection_check, match_field_mapped};
use crate::destinations::{
    BuildContext, ConnectionCheck, Destination, DestinationConfig, DestinationError,
};
use crate::secret::Secret;
use crate::state::intents::IntentLog;

/// HubSpot CRM v3: one object type, records matched on one property.
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// A private app's access token (`Authorization: Bearer`).
    pub access_token: Secret,
    /// `contacts`, `companies`, `deals`, … or a custom object's type id (`2-…`).
    pub object_type: String,
    /// The property records are matched on (e.g. `email`); the sync's
    /// mapping must fill it.
    pub match_on: String,
    /// `https://api.hubapi.com`, or an emulator's address.
    pub base_url: String,
    /// Inputs per batch request (HubSpot takes at most 100), timeout,
    /// retries and limits.
    pub delivery: DeliverySettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHubSpotConfig {
    access_token: String,
    object: String,
    match_on: String,
    #[serde(default = "default_base_url")]
    base_url: String,
}

fn default_base_url() -> String {
    "https://api.hubapi.com".to_owned()
}

/// HubSpot's batch endpoints take at most 100 inputs.
pub const MAX_BATCH: usize = 100;

/// HubSpot documents no cap on requests in flight; a handful keeps well
/// inside the rate limit without queueing at HubSpot. Its burst limit for
/// a private app on Free and Starter accounts is 100 requests per 10
/// seconds, per account (Professional and Enterprise allow 190; raise it in
/// config), and its daily limit 250,000 requests (Professional 650,000,
/// Enterprise 1,000,000).
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(MAX_BATCH, 5)
        .cap(BatchCap {
            max: MAX_BATCH,
            api_takes: "HubSpot's batch endpoints take",
            unit: "inputs",
            hint: "",
        })
        .rate_limit(RateLimit {
            requests: 100,
            per: Duration::from_secs(10),
        })
        .daily_request_quota(250_000)
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawHubSpotConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let access_token = table.secret("access_token", &raw.access_token)?;
    let object_ok = !raw.object.is_empty()
        && raw
            .object
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
    if !object_ok {
        return Err(table.invalid(
            "object",
            format!(
                "`{}` is not a HubSpot object type; use e.g. `contacts`, `companies`, `deals` or a custom object's type id like `2-1234567`",
                raw.object
            ),
        ));
    }
    if raw.match_on.trim().is_empty() {
        return Err(table.invalid(
            "match_on",
            "must name the HubSpot property records are matched on, e.g. `email`",
        ));
    }
    let base_url = table.service_url("base_url", &raw.base_url)?;
    Ok(Arc::new(HubSpotConfig {
        access_token,
        object_type: raw.object,
        match_on: raw.match_on.trim().to_owned(),
        base_url,
        delivery,
    }))
}

impl DestinationConfig for HubSpotConfig {
    fn type_name(&self) -> &'static str {
        "hubspot"
    }

    fn keeps_fields_on_update(&self) -> bool {
        true
    }

    /// `batch/archive`, `batch/update` and `batch/upsert` (or
    /// `batch/create`): one request each, 100 inputs at most.
    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        batch.kinds()
    }

    fn requests_note(&self, _sync: &SyncConfig) -> Option<&'static str> {
        Some(
            "not counted: one search before a create whose earlier outcome was lost, and a read of the object's properties per worker every 5 minutes",
        )
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    fn check_mapping(
        &self,
        destination: &str,
        mapping: &[FieldMapping],
        primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        let how = format!(
            "matches records on the HubSpot property `{}`",
            self.match_on
        );
        match_field_mapped(destination, &how, &self.match_on, mapping, primary_key)
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        let search_limiter = Limiter::new(
            ctx.redis.clone(),
            ctx.queue_prefix,
            &format!("{}/search", ctx.name),
            &super::search_limits(),
        );
        Ok(Arc::new(HubSpotDestination::new(
            ctx.http.clone(),
            self,
            IntentLog::new(ctx.state.clone()),
            ctx.limiter.clone(),
            search_limiter,
        )))
    }

    fn check_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        sync: &'a SyncConfig,
        fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async move {
            let checked = super::check_mapping(client, self, fields)
                .await
                .map(|check| {
                    let how = if check.upserts {
                        format!("upserted by `{}`", self.match_on)
                    } else {
                        format!(
                            "created, and looked up by `{}` when an earlier create's outcome is unknown",
                            self.match_on
                        )
                    };
                    let accepted = format!(
                        "HubSpot {} accept the mapping of sync `{}`; records are {how}",
                        self.object_type, sync.name
                    );
                    (check.problems, accepted)
                });
            let what = format!("object type `{}`", self.object_type);
            Some(connection_check(checked, &self.base_url, &what))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};
    use crate::config::{Limits, RateLimit};

    const HUBSPOT: &str = r#"
    [destinations.hubspot]
    type = "hubspot"
    access_token = "${CRM_TOKEN}"
    object = "contacts"
    match_on = "email"
    {EXTRA}

    [syncs.contacts_to_hubspot]
    source = "warehouse"
    model = "SELECT id, email, first_name FROM analytics.customers"
    primary_key = "id"
    destination = "hubspot"
    [syncs.contacts_to_hubspot.mapping]
    {MAPPING}
    "#;

    fn with_hubspot(extra: &str, mapping: &str) -> String {
        format!(
            "{VALID}{}",
            HUBSPOT
                .replace("{EXTRA}", extra)
                .replace("{MAPPING}", mapping)
        )
    }

    #[test]
    fn hubspot_destination_defaults_and_checks() {
        let config = parse_config(&with_hubspot(
            "",
            "email = \"email\"\nfirstname = \"first_name\"",
        ))
        .unwrap();
        let Some(hubspot) = config
            .destination("hubspot")
            .and_then(|d| d.downcast_ref::<HubSpotConfig>())
        else {
            panic!("not a hubspot destination");
        };
        assert_eq!(hubspot.base_url, "https://api.hubapi.com");
        assert_eq!(hubspot.delivery.batch_size, 100);
        assert_eq!(hubspot.access_token.expose(), "tok-123");
        assert!(!format!("{config:?}").contains("tok-123"), "token redacted");
        assert_eq!(
            hubspot.delivery.limits,
            Limits {
                max_concurrency: 5,
                rate_limit: Some(RateLimit {
                    requests: 100,
                    per: std::time::Duration::from_secs(10),
                }),
                adaptive_concurrency: true,
            }
        );

        let err = parse_config(&with_hubspot("batch_size = 200", "email = \"email\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("destinations.hubspot.batch_size") && err.contains("at most 100 inputs"),
            "{err}"
        );
        let err = parse_config(&with_hubspot("", "firstname = \"first_name\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("syncs.contacts_to_hubspot.mapping")
                && err.contains("matches records on the HubSpot property `email`")
                && err.contains("the mapping must fill it"),
            "{err}"
        );
        let bad_object = with_hubspot("", "email = \"email\"")
            .replace("object = \"contacts\"", "object = \"contacts/../owners\"");
        let err = parse_config(&bad_object).unwrap_err().to_string();
        assert!(
            err.contains("destinations.hubspot.object")
                && err.contains("is not a HubSpot object type"),
            "{err}"
        );
    }
}
