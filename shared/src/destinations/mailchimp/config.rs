//! `type = "mailchimp"`: the members of one audience, with Mailchimp's
//! batch cap and connection limit as defaults.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::MailchimpDestination;
use crate::config::{
    BatchCap, ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping,
    SyncConfig,
};
use crate::destinations::budget::BatchWrites;
use crate::destinations::util::vendor::connection_check;
use crate::destinations::{
    BuildContext, ConnectionCheck, Destination, DestinationConfig, DestinationError,
};
use crate::secret::Secret;

/// Mailchimp Marketing API 3.0: the members of one audience (list).
#[derive(Debug, Clone)]
pub struct MailchimpConfig {
    /// `<key>-<data center>`; sent as HTTP Basic auth.
    pub api_key: Secret,
    pub list_id: String,
    /// `https://<dc>.api.mailchimp.com`, from the key's data center, or an
    /// emulator's address.
    pub base_url: String,
    /// The status a new member gets: `subscribed`, `pending` (double
    /// opt-in) or `transactional`. Existing members' status is never changed.
    pub status_if_new: String,
    /// What mirror mode does with members whose rows left the model.
    pub mirror_removal: MailchimpRemoval,
    /// Members per batch-subscribe request (Mailchimp takes at most 500),
    /// timeout, retries and limits.
    pub delivery: DeliverySettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailchimpRemoval {
    /// `DELETE …/members/{hash}`: archived, restorable, history kept.
    Archive,
    /// `…/actions/delete-permanent`: gone for good; Mailchimp will not let
    /// the address be re-added through the API.
    Delete,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailchimpConfig {
    api_key: String,
    list_id: String,
    base_url: Option<String>,
    #[serde(default = "default_status_if_new")]
    status_if_new: String,
    #[serde(default = "default_mirror_removal")]
    mirror_removal: MailchimpRemoval,
}

fn default_status_if_new() -> String {
    "subscribed".to_owned()
}

fn default_mirror_removal() -> MailchimpRemoval {
    MailchimpRemoval::Archive
}

/// Mailchimp's batch subscribe takes at most 500 members.
pub const MAX_BATCH: usize = 500;

/// Mailchimp allows 10 simultaneous connections per API key.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(MAX_BATCH, 10).cap(BatchCap {
        max: MAX_BATCH,
        api_takes: "Mailchimp's batch subscribe takes",
        unit: "members",
        hint: "",
    })
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawMailchimpConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let api_key = table.secret("api_key", &raw.api_key)?;
    let base_url = match raw.base_url {
        Some(url) => table.service_url("base_url", &url)?,
        None => {
            let data_center = api_key
                .expose()
                .rsplit_once('-')
                .map(|(_, dc)| dc.to_owned())
                .filter(|dc| !dc.is_empty() && dc.chars().all(|c| c.is_ascii_alphanumeric()));
            match data_center {
                Some(dc) => format!("https://{dc}.api.mailchimp.com"),
                None => {
                    return Err(table.invalid(
                        "api_key",
                        "a Mailchimp API key ends in `-<data center>` (e.g. `…-us6`); copy the whole key from Account → Extras → API keys",
                    ));
                }
            }
        }
    };
    if !matches!(
        raw.status_if_new.as_str(),
        "subscribed" | "pending" | "transactional"
    ) {
        return Err(table.invalid(
            "status_if_new",
            format!(
                "`{}` is not a status for new members; use `subscribed`, `pending` (double opt-in) or `transactional`",
                raw.status_if_new
            ),
        ));
    }
    if raw.list_id.trim().is_empty() || !raw.list_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(table.invalid(
            "list_id",
            "must be the audience's list id (letters and digits, e.g. `a1b2c3d4e5`; Audience → Settings → Audience name and defaults)",
        ));
    }
    Ok(Arc::new(MailchimpConfig {
        api_key,
        list_id: raw.list_id,
        base_url,
        status_if_new: raw.status_if_new,
        mirror_removal: raw.mirror_removal,
        delivery,
    }))
}

impl DestinationConfig for MailchimpConfig {
    fn type_name(&self) -> &'static str {
        "mailchimp"
    }

    /// One batch subscribe for the new members; a `PUT` per member known
    /// before (and a tags request after it when `tags` is mapped); one
    /// archive or delete per removed member.
    fn requests_for(&self, sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        let tags_mapped = sync.mapping.iter().any(|m| m.field == super::schema::TAGS);
        let per_update = if tags_mapped { 2 } else { 1 };
        u64::from(batch.writes > 0) + per_update * batch.updates_by_id + batch.removes
    }

    fn requests_note(&self, sync: &SyncConfig) -> Option<&'static str> {
        let tags_mapped = sync.mapping.iter().any(|m| m.field == super::schema::TAGS);
        Some(if tags_mapped {
            "counted: a tags request per updated member (fewer when a member has no tags). Not counted: a `PUT` per new member Mailchimp already had, and a read of the merge fields per worker every 5 minutes"
        } else {
            "not counted: a `PUT` per new member Mailchimp already had, and a read of the merge fields per worker every 5 minutes"
        })
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    fn check_mapping(
        &self,
        _destination: &str,
        mapping: &[FieldMapping],
        _primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        if mapping.iter().any(|m| m.field == "email_address") {
            return Ok(());
        }
        Err("Mailchimp members are keyed by email: the mapping must fill `email_address` (e.g. `email_address = \"email\"`); merge fields go by their tag (`FNAME = \"first_name\"`), and `tags` may list tags".to_owned())
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(MailchimpDestination::new(
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
                "Mailchimp audience {} accepts the mapping of sync `{}`",
                self.list_id, sync.name
            );
            let checked = super::check_mapping(client, self, fields)
                .await
                .map(|check| (check.problems, accepted));
            let what = format!("audience `{}`", self.list_id);
            Some(connection_check(checked, &self.base_url, &what))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{VALID, parse as parse_config};

    const MAILCHIMP: &str = r#"
    [destinations.newsletter]
    type = "mailchimp"
    api_key = "{KEY}"
    list_id = "a1b2c3d4e5"
    {EXTRA}

    [syncs.subscribers]
    source = "warehouse"
    model = "SELECT id, email, first_name FROM analytics.customers"
    primary_key = "id"
    destination = "newsletter"
    [syncs.subscribers.mapping]
    {MAPPING}
    "#;

    fn with_mailchimp(key: &str, extra: &str, mapping: &str) -> String {
        format!(
            "{VALID}{}",
            MAILCHIMP
                .replace("{KEY}", key)
                .replace("{EXTRA}", extra)
                .replace("{MAPPING}", mapping)
        )
    }

    #[test]
    fn a_sync_to_mailchimp_cannot_keep_fields_set_on_create() {
        let text = with_mailchimp(
            "0123abcd-us6",
            "",
            "email_address = \"email\"\nFNAME = \"first_name\"",
        )
        .replace(
            "destination = \"newsletter\"",
            "destination = \"newsletter\"\n    on_create_only = [\"FNAME\"]",
        );
        let err = parse_config(&text).unwrap_err().to_string();
        assert!(
            err.contains("syncs.subscribers.on_create_only")
                && err.contains("writes every mapped field on update"),
            "{err}"
        );
    }

    #[test]
    fn mailchimp_destination_takes_its_data_center_from_the_key() {
        let config = parse_config(&with_mailchimp(
            "0123abcd-us6",
            "",
            "email_address = \"email\"",
        ))
        .unwrap();
        let Some(mailchimp) = config
            .destination("newsletter")
            .and_then(|d| d.downcast_ref::<MailchimpConfig>())
        else {
            panic!("not a mailchimp destination");
        };
        assert_eq!(mailchimp.base_url, "https://us6.api.mailchimp.com");
        assert_eq!(mailchimp.status_if_new, "subscribed");
        assert_eq!(mailchimp.mirror_removal, MailchimpRemoval::Archive);
        assert_eq!(mailchimp.delivery.batch_size, 500);
        assert_eq!(mailchimp.delivery.limits.max_concurrency, 10);
        assert!(!format!("{config:?}").contains("0123abcd"), "key redacted");

        let cases = [
            (
                with_mailchimp("0123abcd", "", "email_address = \"email\""),
                "newsletter.api_key",
                "ends in `-<data center>`",
            ),
            (
                with_mailchimp(
                    "k-us6",
                    "status_if_new = \"unsubscribed\"",
                    "email_address = \"email\"",
                ),
                "newsletter.status_if_new",
                "is not a status for new members",
            ),
            (
                with_mailchimp("k-us6", "batch_size = 501", "email_address = \"email\""),
                "newsletter.batch_size",
                "at most 500 members",
            ),
            (
                with_mailchimp(
                    "k-us6",
                    "mirror_removal = \"purge\"",
                    "email_address = \"email\"",
                ),
                "newsletter",
                "unknown variant `purge`",
            ),
            (
                with_mailchimp("k-us6", "", "FNAME = \"first_name\""),
                "syncs.subscribers.mapping",
                "must fill `email_address`",
            ),
        ];
        for (text, key, message) in cases {
            let err = parse_config(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(message), "{key}: {err}");
        }
    }
}
