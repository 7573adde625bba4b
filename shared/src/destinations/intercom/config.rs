//! `type = "intercom"`: contacts of one Intercom workspace, one request
//! per record (Intercom has no batch endpoint for contacts).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::IntercomDestination;
use crate::config::{
    ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping, RateLimit,
    SyncConfig,
};
use crate::destinations::budget::BatchWrites;
use crate::destinations::util::vendor::{connection_check, match_field_mapped};
use crate::destinations::{
    BuildContext, ConnectionCheck, Destination, DestinationConfig, DestinationError,
};
use crate::secret::Secret;

/// Intercom's REST API for one workspace.
#[derive(Debug, Clone)]
pub struct IntercomConfig {
    /// An access token (private app or OAuth), sent as a Bearer token.
    pub access_token: Secret,
    /// `https://api.intercom.io`, the EU or AU host, or an emulator.
    pub base_url: String,
    /// The contact field records are matched on: `external_id` or `email`.
    pub match_on: MatchOn,
    /// `user` or `lead`: the role of contacts Ebb creates.
    pub role: String,
    /// Requests per record, timeout, retries and limits.
    pub delivery: DeliverySettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchOn {
    ExternalId,
    Email,
}

impl MatchOn {
    pub fn field(self) -> &'static str {
        match self {
            MatchOn::ExternalId => "external_id",
            MatchOn::Email => "email",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntercomConfig {
    access_token: String,
    #[serde(default = "default_region")]
    region: String,
    base_url: Option<String>,
    #[serde(default = "default_match_on")]
    match_on: MatchOn,
    #[serde(default = "default_role")]
    role: String,
}

fn default_region() -> String {
    "us".to_owned()
}

fn default_match_on() -> MatchOn {
    MatchOn::ExternalId
}

fn default_role() -> String {
    "user".to_owned()
}

/// Intercom allows a private app 10,000 calls a minute, enforced in
/// 10-second windows (1,666 each); its headers say what is left.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(50, 10).rate_limit(RateLimit {
        requests: 1666,
        per: Duration::from_secs(10),
    })
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawIntercomConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let access_token = table.secret("access_token", &raw.access_token)?;
    let base_url = match raw.base_url {
        Some(url) => table.service_url("base_url", &url)?,
        None => match raw.region.as_str() {
            "us" => "https://api.intercom.io".to_owned(),
            "eu" => "https://api.eu.intercom.io".to_owned(),
            "au" => "https://api.au.intercom.io".to_owned(),
            other => {
                return Err(table.invalid(
                    "region",
                    format!("`{other}` is not an Intercom region; use `us`, `eu` or `au` (where the workspace is hosted)"),
                ));
            }
        },
    };
    if !matches!(raw.role.as_str(), "user" | "lead") {
        return Err(table.invalid(
            "role",
            format!("`{}` is not a contact role; use `user` or `lead`", raw.role),
        ));
    }
    Ok(Arc::new(IntercomConfig {
        access_token,
        base_url,
        match_on: raw.match_on,
        role: raw.role,
        delivery,
    }))
}

impl DestinationConfig for IntercomConfig {
    fn type_name(&self) -> &'static str {
        "intercom"
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    /// A search and a create or update per new record, an update per record
    /// delivered before, a delete per removal.
    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        2 * batch.writes + batch.updates_by_id + batch.removes
    }

    fn check_mapping(
        &self,
        destination: &str,
        mapping: &[FieldMapping],
        primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        let field = self.match_on.field();
        let how = format!("matches Intercom contacts on `{field}`");
        match_field_mapped(destination, &how, field, mapping, primary_key)
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(IntercomDestination::new(
            ctx.http.clone(),
            self,
            ctx.limiter.clone(),
        )))
    }

    /// Reads the workspace's contact data attributes: the token is checked,
    /// and each mapped custom attribute must exist in Intercom.
    fn check_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        sync: &'a SyncConfig,
        fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async move {
            let accepted = format!(
                "Intercom accepts the mapping of sync `{}`; contacts are matched on `{}`",
                sync.name,
                self.match_on.field()
            );
            let checked = super::mapping_problems(client, self, fields)
                .await
                .map(|problems| (problems, accepted));
            Some(connection_check(
                checked,
                &self.base_url,
                "contact data attributes",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};

    const INTERCOM: &str = r#"
    [destinations.support]
    type = "intercom"
    access_token = "dG9rOmFiYzEyMw=="
    {EXTRA}

    [syncs.contacts_ic]
    source = "warehouse"
    model = "SELECT id, email, first_name FROM analytics.customers"
    primary_key = "id"
    destination = "support"
    [syncs.contacts_ic.mapping]
    {MAPPING}
    "#;

    fn with_intercom(extra: &str, mapping: &str) -> String {
        format!(
            "{VALID}{}",
            INTERCOM
                .replace("{EXTRA}", extra)
                .replace("{MAPPING}", mapping)
        )
    }

    #[test]
    fn intercom_config_picks_the_regional_host_and_checks_its_fields() {
        let config =
            parse_config(&with_intercom("region = \"eu\"", "external_id = \"id\"")).unwrap();
        let Some(intercom) = config
            .destination("support")
            .and_then(|d| d.downcast_ref::<IntercomConfig>())
        else {
            panic!("not an intercom destination");
        };
        assert_eq!(intercom.base_url, "https://api.eu.intercom.io");
        assert_eq!(intercom.match_on, MatchOn::ExternalId);
        assert_eq!(intercom.role, "user");
        assert!(
            !format!("{config:?}").contains("dG9rOmFiYzEyMw"),
            "token redacted"
        );
        assert!(
            parse_config(&with_intercom("", "")).is_ok(),
            "no [mapping]: checked by `ebb check`"
        );
        let cases = [
            (
                with_intercom("region = \"apac\"", "external_id = \"id\""),
                "support.region",
                "use `us`, `eu` or `au`",
            ),
            (
                with_intercom("role = \"admin\"", "external_id = \"id\""),
                "support.role",
                "use `user` or `lead`",
            ),
            (
                with_intercom("match_on = \"email\"", "external_id = \"id\""),
                "syncs.contacts_ic.mapping",
                "matches Intercom contacts on `email`",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse_config(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(message), "{key}: {err}");
        }
    }
}
