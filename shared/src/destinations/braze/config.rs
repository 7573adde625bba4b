//! `type = "braze"`: user profiles of one Braze workspace, written through
//! `/users/track`, with Braze's batch cap and rate limit as defaults.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::BrazeDestination;
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

/// Braze's REST API for one workspace.
#[derive(Debug, Clone)]
pub struct BrazeConfig {
    /// A REST API key with the `users.track` (and, in mirror mode,
    /// `users.delete`) permission; sent as a Bearer token.
    pub api_key: Secret,
    /// The instance's REST endpoint (`https://rest.iad-01.braze.com`), from
    /// `instance`, or given as `rest_endpoint` (also an emulator's address).
    pub rest_endpoint: String,
    /// How a record names its user profile.
    pub match_by: MatchBy,
    /// `_update_existing_only`: only update profiles Braze already has
    /// (never with `user_alias`, whose profiles Braze only creates
    /// when this is off).
    pub update_existing_only: bool,
    /// Attribute objects per `/users/track` request (Braze takes at most
    /// 75), timeout, retries and limits.
    pub delivery: DeliverySettings,
}

/// The identifier `/users/track` matches a profile on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchBy {
    /// The mapped field `external_id`: Braze's own user id.
    ExternalId,
    /// The mapped field `email`.
    Email,
    /// A user alias: the mapped field `alias_name` under the configured
    /// `alias_label`.
    UserAlias { label: String },
}

impl MatchBy {
    /// The mapped field that names the profile.
    pub fn field(&self) -> &'static str {
        match self {
            MatchBy::ExternalId => "external_id",
            MatchBy::Email => "email",
            MatchBy::UserAlias { .. } => "alias_name",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrazeConfig {
    api_key: String,
    instance: Option<String>,
    rest_endpoint: Option<String>,
    #[serde(default = "default_match_by")]
    match_by: String,
    alias_label: Option<String>,
    #[serde(default)]
    update_existing_only: bool,
}

fn default_match_by() -> String {
    "external_id".to_owned()
}

/// Braze's instances and their REST endpoints
/// (<https://www.braze.com/docs/api/basics/#endpoints>).
pub const INSTANCES: &[(&str, &str)] = &[
    ("US-01", "https://rest.iad-01.braze.com"),
    ("US-02", "https://rest.iad-02.braze.com"),
    ("US-03", "https://rest.iad-03.braze.com"),
    ("US-04", "https://rest.iad-04.braze.com"),
    ("US-05", "https://rest.iad-05.braze.com"),
    ("US-06", "https://rest.iad-06.braze.com"),
    ("US-07", "https://rest.iad-07.braze.com"),
    ("US-08", "https://rest.iad-08.braze.com"),
    ("US-10", "https://rest.us-10.braze.com"),
    ("EU-01", "https://rest.fra-01.braze.eu"),
    ("EU-02", "https://rest.fra-02.braze.eu"),
    ("AU-01", "https://rest.au-01.braze.com"),
    ("ID-01", "https://rest.id-01.braze.com"),
    ("JP-01", "https://rest.jp-01.braze.com"),
    ("KR-01", "https://rest.kr-01.braze.com"),
];

/// `/users/track` takes at most 75 attribute objects per request.
pub const MAX_BATCH: usize = 75;
/// `/users/delete` takes at most 50 identifiers per request.
pub const MAX_DELETES: usize = 50;

/// Braze limits `/users/track` to 3,000 requests per 3 seconds per
/// workspace (the base limit since October 2024; raise it in config when
/// Braze raised yours). It documents no cap on requests in flight.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(MAX_BATCH, 16)
        .cap(BatchCap {
            max: MAX_BATCH,
            api_takes: "Braze's /users/track takes",
            unit: "attribute objects",
            hint: "",
        })
        .rate_limit(RateLimit {
            requests: 3000,
            per: Duration::from_secs(3),
        })
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawBrazeConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let api_key = table.secret("api_key", &raw.api_key)?;
    let rest_endpoint = match (&raw.instance, &raw.rest_endpoint) {
        (Some(_), Some(_)) => {
            return Err(table.invalid(
                "rest_endpoint",
                "give `instance` or `rest_endpoint`, not both",
            ));
        }
        (None, Some(url)) => table.service_url("rest_endpoint", url)?,
        (Some(instance), None) => {
            let wanted = instance.trim().to_uppercase();
            match INSTANCES.iter().find(|(name, _)| *name == wanted) {
                Some((_, url)) => (*url).to_owned(),
                None => {
                    let names: Vec<&str> = INSTANCES.iter().map(|(name, _)| *name).collect();
                    return Err(table.invalid(
                        "instance",
                        format!(
                            "`{instance}` is not a Braze instance; use one of {} (the dashboard's URL names it), or give `rest_endpoint`",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        (None, None) => {
            return Err(table.invalid_table(
                "a braze destination needs `instance` (e.g. \"US-01\", as your dashboard's URL says) or `rest_endpoint`",
            ));
        }
    };
    let match_by = match (raw.match_by.as_str(), raw.alias_label) {
        ("external_id", None) => MatchBy::ExternalId,
        ("email", None) => MatchBy::Email,
        ("user_alias", Some(label)) if !label.trim().is_empty() => MatchBy::UserAlias { label },
        ("user_alias", _) => {
            return Err(table.invalid(
                "alias_label",
                "match_by = \"user_alias\" needs the label of the aliases, e.g. alias_label = \"warehouse_id\"",
            ));
        }
        ("external_id" | "email", Some(_)) => {
            return Err(table.invalid("alias_label", "is only used with match_by = \"user_alias\""));
        }
        (other, _) => {
            return Err(table.invalid(
                "match_by",
                format!("`{other}` is not a way to match Braze profiles; use `external_id`, `email` or `user_alias`"),
            ));
        }
    };
    if raw.update_existing_only && matches!(match_by, MatchBy::UserAlias { .. }) {
        return Err(table.invalid(
            "update_existing_only",
            "Braze creates alias-only profiles only with _update_existing_only off; remove update_existing_only or match by external_id or email",
        ));
    }
    Ok(Arc::new(BrazeConfig {
        api_key,
        rest_endpoint,
        match_by,
        update_existing_only: raw.update_existing_only,
        delivery,
    }))
}

impl DestinationConfig for BrazeConfig {
    fn type_name(&self) -> &'static str {
        "braze"
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    /// A `/users/track` per kind of upsert in the batch (new records and
    /// records delivered before go in requests of their own), and a
    /// `/users/delete` per 50 removals.
    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        let tracks = u64::from(batch.writes > 0) + u64::from(batch.updates_by_id > 0);
        tracks + batch.removes.div_ceil(MAX_DELETES as u64)
    }

    fn check_mapping(
        &self,
        destination: &str,
        mapping: &[FieldMapping],
        primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        let field = self.match_by.field();
        let how = format!("matches Braze profiles by `{field}`");
        match_field_mapped(destination, &how, field, mapping, primary_key)
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(BrazeDestination::new(
            ctx.http.clone(),
            self,
            ctx.limiter.clone(),
        )))
    }

    /// Braze has no schema to read with a `users.track` key: the check is
    /// that the key reaches the workspace and may track users. Any field
    /// name is an attribute (Braze creates custom attributes on first
    /// write).
    fn check_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        sync: &'a SyncConfig,
        _fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async move {
            let accepted = format!(
                "Braze at {} accepts the key for sync `{}`; profiles are matched by `{}`",
                self.rest_endpoint,
                sync.name,
                self.match_by.field()
            );
            let checked = super::check_key(client, self)
                .await
                .map(|()| (Vec::new(), accepted));
            Some(connection_check(
                checked,
                &self.rest_endpoint,
                "/users/track",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};

    const BRAZE: &str = r#"
    [destinations.engagement]
    type = "braze"
    api_key = "braze-key-123"
    {EXTRA}

    [syncs.profiles]
    source = "warehouse"
    model = "SELECT id, email, first_name FROM analytics.customers"
    primary_key = "id"
    destination = "engagement"
    [syncs.profiles.mapping]
    {MAPPING}
    "#;

    fn with_braze(extra: &str, mapping: &str) -> String {
        format!(
            "{VALID}{}",
            BRAZE
                .replace("{EXTRA}", extra)
                .replace("{MAPPING}", mapping)
        )
    }

    #[test]
    fn braze_destination_takes_its_endpoint_from_the_instance() {
        let config = parse_config(&with_braze(
            "instance = \"eu-01\"",
            "external_id = \"id\"\nemail = \"email\"",
        ))
        .unwrap();
        let Some(braze) = config
            .destination("engagement")
            .and_then(|d| d.downcast_ref::<BrazeConfig>())
        else {
            panic!("not a braze destination");
        };
        assert_eq!(braze.rest_endpoint, "https://rest.fra-01.braze.eu");
        assert_eq!(braze.match_by, MatchBy::ExternalId);
        assert_eq!(braze.delivery.batch_size, 75);
        assert_eq!(
            braze
                .delivery
                .limits
                .rate_limit
                .map(|r| (r.requests, r.per)),
            Some((3000, Duration::from_secs(3)))
        );
        assert!(
            !format!("{config:?}").contains("braze-key-123"),
            "key redacted"
        );

        // Without a [mapping], the model's columns are the fields: `ebb
        // check` looks for the match field among them.
        assert!(parse_config(&with_braze("instance = \"US-01\"", "")).is_ok());

        let alias = parse_config(&with_braze(
            "instance = \"US-03\"\nmatch_by = \"user_alias\"\nalias_label = \"warehouse_id\"",
            "alias_name = \"id\"",
        ))
        .unwrap();
        let braze = alias
            .destination("engagement")
            .and_then(|d| d.downcast_ref::<BrazeConfig>())
            .unwrap();
        assert_eq!(
            braze.match_by,
            MatchBy::UserAlias {
                label: "warehouse_id".into()
            }
        );
    }

    #[test]
    fn a_batch_costs_a_track_per_kind_of_upsert_and_a_delete_per_fifty_removals() {
        let config =
            parse_config(&with_braze("instance = \"US-01\"", "external_id = \"id\"")).unwrap();
        let braze = config.destination("engagement").unwrap();
        let sync = config.syncs.get("profiles").unwrap();
        let cost = |removes, updates_by_id, writes| {
            braze.requests_for(
                sync,
                &BatchWrites {
                    removes,
                    updates_by_id,
                    writes,
                },
            )
        };
        assert_eq!(cost(0, 0, 75), 1);
        assert_eq!(cost(0, 30, 45), 2);
        assert_eq!(cost(75, 0, 0), 2);
        assert_eq!(cost(0, 0, 0), 0);
    }

    #[test]
    fn braze_config_errors_name_the_field_and_the_fix() {
        let cases = [
            (
                with_braze("", "external_id = \"id\""),
                "destinations.engagement",
                "needs `instance`",
            ),
            (
                with_braze("instance = \"US-09\"", "external_id = \"id\""),
                "engagement.instance",
                "is not a Braze instance; use one of US-01",
            ),
            (
                with_braze(
                    "instance = \"US-01\"\nbatch_size = 76",
                    "external_id = \"id\"",
                ),
                "engagement.batch_size",
                "at most 75 attribute objects",
            ),
            (
                with_braze(
                    "instance = \"US-01\"\nmatch_by = \"phone\"",
                    "external_id = \"id\"",
                ),
                "engagement.match_by",
                "use `external_id`, `email` or `user_alias`",
            ),
            (
                with_braze(
                    "instance = \"US-01\"\nmatch_by = \"user_alias\"",
                    "alias_name = \"id\"",
                ),
                "engagement.alias_label",
                "needs the label",
            ),
            (
                with_braze(
                    "instance = \"US-01\"\nmatch_by = \"email\"",
                    "external_id = \"id\"",
                ),
                "syncs.profiles.mapping",
                "matches Braze profiles by `email`",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse_config(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(message), "{key}: {err}");
        }
    }
}
