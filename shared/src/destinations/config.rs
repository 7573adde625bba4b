//! [`DestinationConfig`]: what every destination type's typed config can
//! do (report its delivery settings, check a sync's mapping, build the
//! destination for a worker, check the connection for `ebb check
//! --connect`), what building one is given, and [`build`], which builds
//! one as every process does.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use sqlx::PgPool;

use super::budget::BatchWrites;
use super::destination::Destination;
use super::error::DestinationError;
use super::util::limiter::Limiter;
use crate::config::{AsAny, Config, DeliverySettings, FieldMapping, SyncConfig};

/// A destination type's typed config, read from its `[destinations.NAME]`
/// table by the parser its registry entry names.
pub trait DestinationConfig: AsAny + fmt::Debug + Send + Sync {
    /// The `type` of its table.
    fn type_name(&self) -> &'static str;

    /// Batch size, timeout, retries and limits.
    fn delivery(&self) -> &DeliverySettings;

    /// Checks, without connecting, that a sync's mapping gives this
    /// destination what it needs (e.g. the field records are matched on).
    /// `destination` is the destination's name; `sends_removed`, whether
    /// the sync sends deletes (mirror mode). The message is shown as the
    /// error of the sync's `mapping`.
    fn check_mapping(
        &self,
        _destination: &str,
        _mapping: &[FieldMapping],
        _primary_key: &str,
        _sends_removed: bool,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Whether updates leave a sync's `on_create_only` fields alone (and
    /// send only the fields that changed, where the vendor takes partial
    /// updates). A sync may only declare `on_create_only` where they do.
    fn keeps_fields_on_update(&self) -> bool {
        false
    }

    /// The requests one batch with these writes takes when every answer is
    /// a success (no retries, splits or lookups): the plan's API budget.
    /// Most destinations send a batch in one request.
    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        u64::from(batch.total() > 0)
    }

    /// What [`Self::requests_for`] leaves out, said beside the estimate.
    fn requests_note(&self, _sync: &SyncConfig) -> Option<&'static str> {
        None
    }

    /// The destination every sync writing to it delivers through, in one
    /// worker process.
    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError>;

    /// `ebb check --connect`: reaches the destination with its credentials
    /// and checks `fields` (mapped field, model column type) against its
    /// schema. `None` for destinations reached at run time only.
    fn check_connection<'a>(
        &'a self,
        _client: &'a reqwest::Client,
        _sync: &'a SyncConfig,
        _fields: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Option<ConnectionCheck>> {
        Box::pin(async { None })
    }
}

impl<'a> dyn DestinationConfig + 'a {
    /// The typed config of a destination type, when it is of that type.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}

/// What building a destination is given.
pub struct BuildContext<'a> {
    /// The destination's name in config.
    pub name: &'a str,
    /// The syncs that write to it.
    pub syncs: &'a [&'a SyncConfig],
    /// The process's HTTP client (see [`super::util::api::client`]).
    pub http: &'a reqwest::Client,
    /// Carries limits shared by every worker (see [`Limiter`]).
    pub redis: &'a ConnectionManager,
    pub queue_prefix: &'a str,
    /// Ebb's state database (create intents, see `state::intents`).
    pub state: &'a PgPool,
    /// The destination's limits, shared by its syncs.
    pub limiter: Arc<Limiter>,
}

/// A destination built by [`build`].
pub struct Built<'c> {
    pub destination: Arc<dyn Destination>,
    /// Carries the destination's limits, shared by every sync writing to
    /// it, across all processes.
    pub limiter: Arc<Limiter>,
    /// The syncs that write to it.
    pub syncs: Vec<&'c SyncConfig>,
}

/// Builds destination `name` of `config` as workers and `ebb verify` do:
/// with the limiter every process shares through `redis`, for the syncs
/// that write to it. `None` when no sync writes to it (or it is not in
/// `config`).
pub fn build<'c>(
    config: &'c Config,
    name: &str,
    http: &reqwest::Client,
    redis: &ConnectionManager,
    state: &PgPool,
) -> Result<Option<Built<'c>>, DestinationError> {
    let Some(destination_config) = config.destination(name) else {
        return Ok(None);
    };
    let syncs: Vec<&SyncConfig> = config
        .syncs
        .values()
        .filter(|sync| sync.destination == name)
        .collect();
    if syncs.is_empty() {
        return Ok(None);
    }
    let limiter = Arc::new(Limiter::new(
        redis.clone(),
        &config.state.queue_prefix,
        name,
        &destination_config.delivery().limits,
    ));
    let destination = destination_config.build(&BuildContext {
        name,
        syncs: &syncs,
        http,
        redis,
        queue_prefix: &config.state.queue_prefix,
        state,
        limiter: limiter.clone(),
    })?;
    Ok(Some(Built {
        destination,
        limiter,
        syncs,
    }))
}

/// What `ebb check --connect` found for one sync's destination.
pub type ConnectionCheck = Result<MappingReport, ConnectionProblem>;

/// The destination was reached and read its schema.
#[derive(Debug)]
pub struct MappingReport {
    /// What was checked, said when there is no problem: "HubSpot contacts
    /// accept the mapping of sync `x`; records are upserted by `email`".
    pub accepted: String,
    /// Each problem of the mapping, one line each.
    pub problems: Vec<String>,
}

/// The destination could not be checked.
#[derive(Debug)]
pub struct ConnectionProblem {
    /// `bad credentials`, `missing permissions`, `unreachable`, …
    pub kind: &'static str,
    pub message: String,
}
