//! The destination types Ebb knows: each `type` with the parser of its
//! typed config. Adding a destination type adds its folder and one line
//! here (see `docs/connectors.md`).

use std::sync::Arc;

use super::DestinationConfig;
use super::{
    braze, customerio, google_customer_match, http, hubspot, intercom, mailchimp,
    meta_custom_audience, postgres, salesforce, zendesk,
};
use crate::config::{ConfigError, ConnectorTable};

/// One destination type.
pub struct DestinationType {
    /// Its `type = "…"` in config.
    pub name: &'static str,
    /// Reads and checks its `[destinations.NAME]` table.
    pub parse: fn(&ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError>,
}

pub const DESTINATION_TYPES: &[DestinationType] = &[
    DestinationType {
        name: "http",
        parse: http::config::parse,
    },
    DestinationType {
        name: "postgres",
        parse: postgres::config::parse,
    },
    DestinationType {
        name: "hubspot",
        parse: hubspot::config::parse,
    },
    DestinationType {
        name: "mailchimp",
        parse: mailchimp::config::parse,
    },
    DestinationType {
        name: "salesforce",
        parse: salesforce::config::parse,
    },
    DestinationType {
        name: "braze",
        parse: braze::config::parse,
    },
    DestinationType {
        name: "customerio",
        parse: customerio::config::parse,
    },
    DestinationType {
        name: "intercom",
        parse: intercom::config::parse,
    },
    DestinationType {
        name: "zendesk",
        parse: zendesk::config::parse,
    },
    DestinationType {
        name: "google_customer_match",
        parse: google_customer_match::config::parse,
    },
    DestinationType {
        name: "meta_custom_audience",
        parse: meta_custom_audience::config::parse,
    },
];

/// Reads a `[destinations.NAME]` table with the parser its `type` names.
pub(crate) fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let names: Vec<&str> = DESTINATION_TYPES.iter().map(|t| t.name).collect();
    let kind = table.type_of(&names)?;
    match DESTINATION_TYPES.iter().find(|t| t.name == kind) {
        Some(destination_type) => (destination_type.parse)(table),
        None => Err(table.invalid("type", format!("unknown type `{kind}`"))),
    }
}
