//! `type = "salesforce"`: one sObject, upserted by an External ID field,
//! through sObject Collections or Bulk API 2.0 jobs.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::SalesforceDestination;
use crate::config::{
    BatchCap, ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping,
    MAX_BATCH_SIZE, SyncConfig,
};
use crate::destinations::budget::BatchWrites;
use crate::destinations::util::vendor::{connection_check, match_field_mapped};
use crate::destinations::{
    BuildContext, ConnectionCheck, Destination, DestinationConfig, DestinationError,
};
use crate::secret::Secret;

/// Salesforce REST API: one sObject, upserted by an external id field.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Where OAuth tokens come from: `https://login.salesforce.com`,
    /// `https://test.salesforce.com` (sandboxes) or a My Domain URL.
    pub login_url: String,
    pub client_id: Secret,
    pub client_secret: Secret,
    pub refresh_token: Secret,
    /// `62.0`: the `vXX.X` of REST paths.
    pub api_version: String,
    /// `Contact`, `Lead`, `Account`, `Invoice__c`, …
    pub object: String,
    /// The external id field records are upserted by (e.g. `Warehouse_Id__c`).
    pub external_id: String,
    /// `collections` (sObject Collections, 200 records a request) or
    /// `bulk` (one Bulk API 2.0 ingest job per batch, for large runs).
    pub api: SalesforceApi,
    /// Records per request (collections: at most 200) or per job (bulk),
    /// timeout, retries and limits.
    pub delivery: DeliverySettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SalesforceApi {
    Collections,
    Bulk,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSalesforceConfig {
    #[serde(default = "default_login_url")]
    login_url: String,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    #[serde(default = "default_api_version")]
    api_version: String,
    object: String,
    external_id: String,
    #[serde(default = "default_api")]
    api: SalesforceApi,
}

fn default_login_url() -> String {
    "https://login.salesforce.com".to_owned()
}

fn default_api_version() -> String {
    "62.0".to_owned()
}

fn default_api() -> SalesforceApi {
    SalesforceApi::Collections
}

/// sObject Collections take at most 200 records per request.
pub const MAX_BATCH: usize = 200;

/// A Bulk API 2.0 job per batch of this many records.
const BULK_BATCH: usize = 10_000;

/// Salesforce caps long-running requests per org at 25; a handful in flight
/// leaves room for the org's other integrations. An Enterprise Edition org
/// has 100,000 API requests per 24 hours, plus 1,000 per user licence.
fn defaults(api: SalesforceApi) -> DeliveryDefaults {
    let (batch_size, max) = match api {
        SalesforceApi::Collections => (MAX_BATCH, MAX_BATCH),
        SalesforceApi::Bulk => (BULK_BATCH, MAX_BATCH_SIZE),
    };
    DeliveryDefaults::new(batch_size, 5)
        .cap(BatchCap {
            max,
            api_takes: "Salesforce takes",
            unit: "records",
            hint: "; set `api = \"bulk\"` for larger batches",
        })
        .daily_request_quota(100_000)
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawSalesforceConfig = table.typed()?;
    let delivery = table.delivery(&defaults(raw.api))?;
    let login_url = table.service_url("login_url", &raw.login_url)?;
    let version_ok = raw
        .api_version
        .split_once('.')
        .is_some_and(|(major, minor)| {
            !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()) && minor == "0"
        });
    if !version_ok {
        return Err(table.invalid(
            "api_version",
            format!(
                "`{}` is not a Salesforce API version; use e.g. `62.0`",
                raw.api_version
            ),
        ));
    }
    let name_ok = |name: &str| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    for (field, value) in [("object", &raw.object), ("external_id", &raw.external_id)] {
        if !name_ok(value) {
            return Err(table.invalid(
                field,
                format!("`{value}` is not a Salesforce API name (letters, digits and `_`, e.g. `Contact` or `Warehouse_Id__c`)"),
            ));
        }
    }
    Ok(Arc::new(SalesforceConfig {
        login_url,
        client_id: table.secret("client_id", &raw.client_id)?,
        client_secret: table.secret("client_secret", &raw.client_secret)?,
        refresh_token: table.secret("refresh_token", &raw.refresh_token)?,
        api_version: raw.api_version,
        object: raw.object,
        external_id: raw.external_id,
        api: raw.api,
        delivery,
    }))
}

impl DestinationConfig for SalesforceConfig {
    fn type_name(&self) -> &'static str {
        "salesforce"
    }

    fn keeps_fields_on_update(&self) -> bool {
        true
    }

    /// sObject Collections: one request per kind of write (200 records at
    /// most). Bulk API 2.0: a job per kind of write, each created,
    /// uploaded, closed, polled at least once and read back (successful and
    /// failed results): 6 requests.
    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        match self.api {
            SalesforceApi::Collections => batch.kinds(),
            SalesforceApi::Bulk => 6 * batch.kinds(),
        }
    }

    fn requests_note(&self, _sync: &SyncConfig) -> Option<&'static str> {
        Some(match self.api {
            SalesforceApi::Collections => {
                "not counted: the OAuth token refresh and the sObject describe, once per worker every 5 minutes"
            }
            SalesforceApi::Bulk => {
                "a bulk job is counted as polled once; a job Salesforce takes longer over is polled again (every 0.25 s, backing off to 10 s). Not counted: the OAuth token refresh and the sObject describe, once per worker every 5 minutes"
            }
        })
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
            "upserts {} records by the external id `{}`",
            self.object, self.external_id
        );
        match_field_mapped(destination, &how, &self.external_id, mapping, primary_key)
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(SalesforceDestination::new(
            ctx.http.clone(),
            self,
            ctx.limiter.clone(),
        )))
    }

    fn check_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        sync: &'a SyncConfig,
        fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async move {
            let accepted = format!(
                "Salesforce {} accepts the mapping of sync `{}`; records are upserted by `{}`",
                self.object, sync.name, self.external_id
            );
            let checked = super::check_mapping(client, self, fields)
                .await
                .map(|check| (check.problems, accepted));
            let what = format!("object `{}` (API v{})", self.object, self.api_version);
            Some(connection_check(checked, &self.login_url, &what))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};

    #[test]
    fn salesforce_destination_defaults_and_checks() {
        let salesforce = |extra: &str, mapping: &str| {
            format!(
                r#"{VALID}
    [destinations.sf]
    type = "salesforce"
    client_id = "${{CRM_TOKEN}}"
    client_secret = "s3cret"
    refresh_token = "r3fresh"
    object = "Contact"
    external_id = "Warehouse_Id__c"
    {extra}

    [syncs.to_sf]
    source = "warehouse"
    model = "SELECT id, email FROM analytics.customers"
    primary_key = "id"
    destination = "sf"
    [syncs.to_sf.mapping]
    {mapping}
    "#
            )
        };
        let config = parse_config(&salesforce(
            "",
            "Warehouse_Id__c = \"id\"\nEmail = \"email\"",
        ))
        .unwrap();
        let Some(sf) = config
            .destination("sf")
            .and_then(|d| d.downcast_ref::<SalesforceConfig>())
        else {
            panic!("not a salesforce destination");
        };
        assert_eq!(sf.login_url, "https://login.salesforce.com");
        assert_eq!(sf.api_version, "62.0");
        assert_eq!(sf.delivery.batch_size, 200);
        assert_eq!(sf.delivery.limits.max_concurrency, 5);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("r3fresh") && !debug.contains("tok-123")
        );

        let cases = [
            (
                salesforce("batch_size = 201", "Warehouse_Id__c = \"id\""),
                "sf.batch_size",
                "at most 200 records",
            ),
            (
                salesforce("api_version = \"v62\"", "Warehouse_Id__c = \"id\""),
                "sf.api_version",
                "is not a Salesforce API version",
            ),
            (
                salesforce("", "Email = \"email\""),
                "syncs.to_sf.mapping",
                "the mapping must fill it",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse_config(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(message), "{key}: {err}");
        }
        let bulk = parse_config(&salesforce("api = \"bulk\"", "Warehouse_Id__c = \"id\"")).unwrap();
        let Some(bulk) = bulk
            .destination("sf")
            .and_then(|d| d.downcast_ref::<SalesforceConfig>())
        else {
            panic!("not a salesforce destination");
        };
        assert_eq!(
            (bulk.api, bulk.delivery.batch_size),
            (SalesforceApi::Bulk, 10_000)
        );
        let bad_object = salesforce("", "Warehouse_Id__c = \"id\"")
            .replace("object = \"Contact\"", "object = \"Contact; DROP\"");
        let err = parse_config(&bad_object).unwrap_err().to_string();
        assert!(
            err.contains("sf.object") && err.contains("is not a Salesforce API name"),
            "{err}"
        );
    }
}
