//! Destinations: one folder per type, each holding everything about it
//! (`config.rs`: its typed config and checks; `service.rs`: calling it;
//! `request_builder.rs`: its request bodies; `schema.rs` and `validate.rs`
//! where it has a schema to check records against), on machinery written
//! once in `util/` (retries, batch splitting, limits, vendor answers).
//!
//! - [`registry`]: the types, by their `type` in config.
//! - [`DestinationConfig`]: what a typed config can do (build, check).
//! - [`Destination`]: what the delivery machinery calls.
//! - [`record`]: the records of a batch, as a destination is given them.
//! - [`budget`]: what a batch costs in requests, for `ebb plan`.

pub mod budget;
pub mod config;
pub mod destination;
pub mod error;
pub mod record;
pub mod registry;
pub mod util;

pub mod braze;
pub mod customerio;
pub mod google_customer_match;
pub mod http;
pub mod hubspot;
pub mod intercom;
pub mod mailchimp;
pub mod meta_custom_audience;
pub mod postgres;
pub mod salesforce;
pub mod zendesk;

pub use config::{
    BuildContext, Built, ConnectionCheck, ConnectionProblem, DestinationConfig, MappingReport,
    build,
};
pub use destination::Destination;
pub use error::DestinationError;
