//! `type = "customerio"`: people of one Customer.io workspace, written
//! through the Track API v2 batch endpoint.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::CustomerIoDestination;
use crate::config::{
    ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping, RateLimit,
    SyncConfig,
};
use crate::destinations::util::vendor::{connection_check, match_field_mapped};
use crate::destinations::{
    BuildContext, ConnectionCheck, Destination, DestinationConfig, DestinationError,
};
use crate::secret::Secret;

/// The Track API of one workspace.
#[derive(Debug, Clone)]
pub struct CustomerIoConfig {
    /// The workspace's Site ID: the user name of HTTP Basic auth.
    pub site_id: String,
    /// Its Track API key: the password.
    pub api_key: Secret,
    /// `us` or `eu`: where the workspace's data lives.
    pub region: Region,
    /// `https://track.customer.io`, `https://track-eu.customer.io`, or an
    /// emulator's address.
    pub base_url: String,
    /// The identifier people are identified (and deleted) by.
    pub identify_by: IdentifyBy,
    /// People per batch task, timeout, retries and limits. Requests are cut
    /// at Customer.io's 500 KB, whatever the batch size.
    pub delivery: DeliverySettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Us,
    Eu,
}

impl Region {
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentifyBy {
    /// The mapped field `id`: the workspace's own person id.
    Id,
    /// The mapped field `email` (workspaces that identify by email).
    Email,
}

impl IdentifyBy {
    pub fn field(self) -> &'static str {
        match self {
            IdentifyBy::Id => "id",
            IdentifyBy::Email => "email",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomerIoConfig {
    site_id: String,
    api_key: String,
    #[serde(default = "default_region")]
    region: Region,
    base_url: Option<String>,
    #[serde(default = "default_identify_by")]
    identify_by: IdentifyBy,
}

fn default_region() -> Region {
    Region::Us
}

fn default_identify_by() -> IdentifyBy {
    IdentifyBy::Id
}

/// Customer.io asks Track API clients to stay under 100 requests a second
/// per workspace (a fair-use limit; beyond it, 429).
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(100, 10).rate_limit(RateLimit {
        requests: 100,
        per: Duration::from_secs(1),
    })
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawCustomerIoConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let api_key = table.secret("api_key", &raw.api_key)?;
    if raw.site_id.trim().is_empty() || raw.site_id.contains(char::is_whitespace) {
        return Err(table.invalid(
            "site_id",
            "must be the workspace's Site ID (Settings → Workspace Settings → API Credentials → Track API keys)",
        ));
    }
    let base_url = match raw.base_url {
        Some(url) => table.service_url("base_url", &url)?,
        None => match raw.region {
            Region::Us => "https://track.customer.io".to_owned(),
            Region::Eu => "https://track-eu.customer.io".to_owned(),
        },
    };
    Ok(Arc::new(CustomerIoConfig {
        site_id: raw.site_id,
        api_key,
        region: raw.region,
        base_url,
        identify_by: raw.identify_by,
        delivery,
    }))
}

impl DestinationConfig for CustomerIoConfig {
    fn type_name(&self) -> &'static str {
        "customerio"
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
        let field = self.identify_by.field();
        let how = format!("identifies Customer.io people by `{field}`");
        match_field_mapped(destination, &how, field, mapping, primary_key)?;
        if mapping.len() > super::validate::MAX_ATTRIBUTES + 1 {
            return Err(format!(
                "the mapping has {} fields; Customer.io takes at most {} attributes per person in one request",
                mapping.len(),
                super::validate::MAX_ATTRIBUTES
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(CustomerIoDestination::new(
            ctx.http.clone(),
            self,
            ctx.limiter.clone(),
        )))
    }

    /// Asks the Track API where the workspace lives: the credentials are
    /// checked, and a workspace in the other region is named.
    fn check_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        sync: &'a SyncConfig,
        _fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async move {
            let accepted = format!(
                "Customer.io workspace {} accepts the key for sync `{}`; people are identified by `{}`",
                self.site_id,
                sync.name,
                self.identify_by.field()
            );
            let checked = super::region_problems(client, self)
                .await
                .map(|problems| (problems, accepted));
            Some(connection_check(checked, &self.base_url, "the workspace"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};

    const CUSTOMERIO: &str = r#"
    [destinations.people]
    type = "customerio"
    site_id = "site123"
    api_key = "track-key-456"
    {EXTRA}

    [syncs.customers_cio]
    source = "warehouse"
    model = "SELECT id, email, first_name FROM analytics.customers"
    primary_key = "id"
    destination = "people"
    [syncs.customers_cio.mapping]
    {MAPPING}
    "#;

    fn with_customerio(extra: &str, mapping: &str) -> String {
        format!(
            "{VALID}{}",
            CUSTOMERIO
                .replace("{EXTRA}", extra)
                .replace("{MAPPING}", mapping)
        )
    }

    #[test]
    fn customerio_destination_takes_its_address_from_the_region() {
        let config = parse_config(&with_customerio("region = \"eu\"", "id = \"id\"")).unwrap();
        let Some(cio) = config
            .destination("people")
            .and_then(|d| d.downcast_ref::<CustomerIoConfig>())
        else {
            panic!("not a customerio destination");
        };
        assert_eq!(cio.base_url, "https://track-eu.customer.io");
        assert_eq!(cio.identify_by, IdentifyBy::Id);
        assert_eq!(
            cio.delivery.limits.rate_limit.map(|r| (r.requests, r.per)),
            Some((100, Duration::from_secs(1)))
        );
        assert!(
            !format!("{config:?}").contains("track-key-456"),
            "key redacted"
        );

        assert!(
            parse_config(&with_customerio("", "")).is_ok(),
            "no [mapping]: checked by `ebb check`"
        );
        let cases = [
            (
                with_customerio("region = \"apac\"", "id = \"id\""),
                "people",
                "unknown variant `apac`",
            ),
            (
                with_customerio("", "email = \"email\""),
                "syncs.customers_cio.mapping",
                "identifies Customer.io people by `id`",
            ),
            (
                with_customerio("identify_by = \"email\"", "id = \"id\""),
                "syncs.customers_cio.mapping",
                "by `email`",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse_config(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(message), "{key}: {err}");
        }
        let err = parse_config(
            &with_customerio("", "id = \"id\"").replace("site_id = \"site123\"", "site_id = \" \""),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("people.site_id") && err.contains("Site ID"),
            "{err}"
        );
    }
}
