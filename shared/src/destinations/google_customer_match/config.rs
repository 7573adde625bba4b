//! `type = "google_customer_match"`: the members of one Google Ads
//! Customer Match user list, through offline user data jobs.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::GoogleCustomerMatchDestination;
use super::normalize::{ADDRESS, FIELDS};
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

/// Members per job request: with at most 3 identifiers each, well under
/// Google's 100,000 identifiers per `addOperations` request.
pub const MAX_BATCH: usize = 10_000;

pub const DEFAULT_API_VERSION: &str = "v20";

#[derive(Debug, Clone)]
pub struct GoogleCustomerMatchConfig {
    /// The Google Ads account that owns the list (digits, no dashes).
    pub customer_id: String,
    /// The manager account the credentials reach it through, if any.
    pub login_customer_id: Option<String>,
    /// The Customer Match (CRM-based) user list.
    pub user_list_id: String,
    pub developer_token: Secret,
    pub client_id: Secret,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    /// `GRANTED` or `DENIED`, sent as the job's consent, when set.
    pub ad_user_data_consent: Option<String>,
    pub ad_personalization_consent: Option<String>,
    /// `https://googleads.googleapis.com`, or an emulator's address.
    pub base_url: String,
    /// `https://oauth2.googleapis.com/token`, or an emulator's.
    pub token_url: String,
    pub api_version: String,
    pub delivery: DeliverySettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    customer_id: String,
    login_customer_id: Option<String>,
    user_list_id: String,
    developer_token: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    ad_user_data_consent: Option<String>,
    ad_personalization_consent: Option<String>,
    base_url: Option<String>,
    token_url: Option<String>,
    #[serde(default = "default_api_version")]
    api_version: String,
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.to_owned()
}

/// One job at a time per list (Google refuses concurrent changes to a
/// list: `CONCURRENT_MODIFICATION`); each job is three requests
/// (create, add operations, run) carrying up to 10,000 members.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(MAX_BATCH, 1)
        .cap(BatchCap {
            max: MAX_BATCH,
            api_takes: "Ebb's Customer Match jobs take",
            unit: "members",
            hint: " (Google takes at most 100,000 identifiers a request)",
        })
        .rate_limit(RateLimit {
            requests: 60,
            per: Duration::from_secs(60),
        })
        .adaptive_concurrency(false)
}

/// Customer ids are written `123-456-7890` in the Google Ads UI.
fn account_id(table: &ConnectorTable<'_>, field: &str, raw: &str) -> Result<String, ConfigError> {
    let id: String = raw.chars().filter(|c| *c != '-').collect();
    if id.len() != 10 || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(table.invalid(
            field,
            format!("`{raw}` is not a Google Ads customer id (10 digits, e.g. 123-456-7890)"),
        ));
    }
    Ok(id)
}

fn consent(
    table: &ConnectorTable<'_>,
    field: &str,
    raw: Option<String>,
) -> Result<Option<String>, ConfigError> {
    match raw.map(|r| r.to_uppercase()) {
        None => Ok(None),
        Some(value) if value == "GRANTED" || value == "DENIED" => Ok(Some(value)),
        Some(other) => Err(table.invalid(
            field,
            format!("`{other}` is not a consent status; use \"granted\" or \"denied\""),
        )),
    }
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let customer_id = account_id(table, "customer_id", &raw.customer_id)?;
    let login_customer_id = raw
        .login_customer_id
        .as_deref()
        .map(|id| account_id(table, "login_customer_id", id))
        .transpose()?;
    if raw.user_list_id.is_empty() || !raw.user_list_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(table.invalid(
            "user_list_id",
            "must be the Customer Match list's numeric id (Tools → Audience manager)",
        ));
    }
    let version_ok = raw
        .api_version
        .strip_prefix('v')
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()));
    if !version_ok {
        return Err(table.invalid(
            "api_version",
            format!(
                "`{}` is not a Google Ads API version such as \"{DEFAULT_API_VERSION}\"",
                raw.api_version
            ),
        ));
    }
    let base_url = match raw.base_url {
        Some(url) => table.service_url("base_url", &url)?,
        None => "https://googleads.googleapis.com".to_owned(),
    };
    let token_url = match raw.token_url {
        Some(url) => table.service_url("token_url", &url)?,
        None => "https://oauth2.googleapis.com/token".to_owned(),
    };
    Ok(Arc::new(GoogleCustomerMatchConfig {
        customer_id,
        login_customer_id,
        user_list_id: raw.user_list_id,
        developer_token: table.secret("developer_token", &raw.developer_token)?,
        client_id: table.secret("client_id", &raw.client_id)?,
        client_secret: table.secret("client_secret", &raw.client_secret)?,
        refresh_token: table.secret("refresh_token", &raw.refresh_token)?,
        ad_user_data_consent: consent(table, "ad_user_data_consent", raw.ad_user_data_consent)?,
        ad_personalization_consent: consent(
            table,
            "ad_personalization_consent",
            raw.ad_personalization_consent,
        )?,
        base_url,
        token_url,
        api_version: raw.api_version,
        delivery,
    }))
}

impl GoogleCustomerMatchConfig {
    /// `customers/{customer_id}/userLists/{user_list_id}`.
    pub fn user_list(&self) -> String {
        format!(
            "customers/{}/userLists/{}",
            self.customer_id, self.user_list_id
        )
    }
}

impl DestinationConfig for GoogleCustomerMatchConfig {
    fn type_name(&self) -> &'static str {
        "google_customer_match"
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    /// A job for the removals (and old identifiers of changed records) and
    /// one for the additions: create, add operations, run.
    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        3 * (u64::from(batch.removes + batch.updates_by_id > 0)
            + u64::from(batch.writes + batch.updates_by_id > 0))
    }

    fn requests_note(&self, _sync: &SyncConfig) -> Option<&'static str> {
        Some("not counted: the OAuth token refresh, about once an hour per worker")
    }

    fn check_mapping(
        &self,
        destination: &str,
        mapping: &[FieldMapping],
        _primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        let fields: Vec<String> = FIELDS.iter().map(|f| (*f).to_owned()).collect();
        audience::identifiers_only(
            destination,
            mapping,
            |field| FIELDS.contains(&field),
            &fields,
            "a Customer Match list",
        )?;
        let address: Vec<&str> = ADDRESS
            .iter()
            .copied()
            .filter(|f| mapping.iter().any(|m| m.field == *f))
            .collect();
        if !address.is_empty() && address.len() < ADDRESS.len() {
            let missing: Vec<&str> = ADDRESS
                .iter()
                .copied()
                .filter(|f| !address.contains(f))
                .collect();
            return Err(format!(
                "destination `{destination}`: Google matches an address only with first_name, last_name, country_code and postal_code together; map {} too, or none of them",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(GoogleCustomerMatchDestination::new(
            ctx.http.clone(),
            self,
            ctx.limiter.clone(),
        )))
    }

    /// Reads the user list: the credentials and developer token are
    /// checked, and a list that is not a Customer Match list, or is closed,
    /// is named.
    fn check_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        sync: &'a SyncConfig,
        _fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async move {
            let checked = super::list_problems(client, self).await.map(|(problems, name)| {
                (
                    problems,
                    format!(
                        "Google Ads accepts the credentials for sync `{}`: Customer Match list {} ({name})",
                        sync.name, self.user_list_id
                    ),
                )
            });
            Some(connection_check(checked, &self.base_url, "the user list"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};

    const GOOGLE: &str = r#"
    [destinations.list]
    type = "google_customer_match"
    customer_id = "123-456-7890"
    user_list_id = "987654321"
    developer_token = "dev-token-abc"
    client_id = "client.apps.googleusercontent.com"
    client_secret = "client-secret-def"
    refresh_token = "1//refresh-ghi"
    {EXTRA}

    [syncs.buyers_google]
    source = "warehouse"
    model = "SELECT id, email, first_name FROM analytics.customers"
    primary_key = "id"
    destination = "list"
    [syncs.buyers_google.mapping]
    {MAPPING}
    "#;

    fn with_google(extra: &str, mapping: &str) -> String {
        format!(
            "{VALID}{}",
            GOOGLE
                .replace("{EXTRA}", extra)
                .replace("{MAPPING}", mapping)
        )
    }

    #[test]
    fn google_config_takes_account_ids_with_dashes_and_whole_addresses() {
        let config = parse_config(&with_google(
            "ad_user_data_consent = \"granted\"",
            "email = \"email\"",
        ))
        .unwrap();
        let Some(google) = config
            .destination("list")
            .and_then(|d| d.downcast_ref::<GoogleCustomerMatchConfig>())
        else {
            panic!("not a google_customer_match destination");
        };
        assert_eq!(google.customer_id, "1234567890");
        assert_eq!(
            google.user_list(),
            "customers/1234567890/userLists/987654321"
        );
        assert_eq!(google.ad_user_data_consent.as_deref(), Some("GRANTED"));
        let debug = format!("{config:?}");
        for secret in ["dev-token-abc", "client-secret-def", "refresh-ghi"] {
            assert!(!debug.contains(secret), "{secret} redacted");
        }
        let cases = [
            (
                with_google("", "email = \"email\"\nplan = \"plan\""),
                "syncs.buyers_google.mapping",
                "`plan` is not one",
            ),
            (
                with_google("", "email = \"email\"\nfirst_name = \"first_name\""),
                "syncs.buyers_google.mapping",
                "map last_name, country_code, postal_code too",
            ),
            (
                with_google("login_customer_id = \"12-34\"", "email = \"email\""),
                "list.login_customer_id",
                "10 digits",
            ),
            (
                with_google(
                    "ad_personalization_consent = \"maybe\"",
                    "email = \"email\"",
                ),
                "list.ad_personalization_consent",
                "\"granted\" or \"denied\"",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse_config(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(message), "{key}: {err}");
        }
    }
}
