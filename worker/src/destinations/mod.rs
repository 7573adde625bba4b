//! Destinations: one folder per type behind the [`Destination`] trait, and
//! the [`Registry`] that builds one per sync from config.

pub mod http;
pub mod hubspot;
pub mod mailchimp;
pub mod postgres;
pub mod salesforce;
pub mod util;

use std::collections::HashMap;
use std::sync::Arc;

use ebb_shared::config::{Config, DestinationConfig};
use futures::future::BoxFuture;

use crate::batch::{BatchContext, OutboundRecord};
use crate::error::WorkerError;
use apalis_redis::ConnectionManager;
use sqlx::PgPool;
use util::delivery::Target;
use util::intents::IntentLog;
use util::limiter::Limiter;
use util::outcome::Attempt;
use util::retry::RetryPolicy;

/// A place records are delivered to. `send` makes one request for a chunk
/// of a batch and classifies the answer; retries and splitting are done by
/// [`util::delivery::deliver`].
pub trait Destination: Send + Sync {
    fn send<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Attempt>;

    /// Records of different groups never share a request (e.g. updates by
    /// id, creates and archives are different endpoints of one API).
    fn request_group(&self, _record: &OutboundRecord) -> u8 {
        0
    }
}

/// What a worker needs to deliver one sync's batches.
pub struct SyncTarget {
    pub destination_name: String,
    pub destination: Arc<dyn Destination>,
    /// Shared by every sync writing to the destination.
    pub limiter: Arc<Limiter>,
    pub retry: RetryPolicy,
}

impl SyncTarget {
    pub fn target(&self) -> Target<'_> {
        Target {
            destination: self.destination.as_ref(),
            limiter: &self.limiter,
        }
    }
}

/// Destinations by sync name, built once per worker process.
pub struct Registry {
    by_sync: HashMap<String, SyncTarget>,
}

impl Registry {
    /// `redis` carries the destinations' limits (see [`Limiter`]).
    /// `state` keeps create intents (see [`util::intents`]).
    pub fn build(
        config: &Config,
        redis: &ConnectionManager,
        state: &PgPool,
    ) -> Result<Registry, WorkerError> {
        let http_client = http::client()?;
        let mut postgres_pools = HashMap::new();
        let mut limiters: HashMap<String, Arc<Limiter>> = HashMap::new();
        let mut by_sync = HashMap::new();
        for sync in config.syncs.values() {
            let Some(dest_config) = config.destination(&sync.destination) else {
                continue;
            };
            let limiter = limiters
                .entry(sync.destination.clone())
                .or_insert_with(|| {
                    Arc::new(Limiter::new(
                        redis.clone(),
                        &config.state.queue_prefix,
                        &sync.destination,
                        dest_config.limits(),
                    ))
                })
                .clone();
            let (destination, max_retries): (Arc<dyn Destination>, u32) = match dest_config {
                DestinationConfig::Http(c) => (
                    Arc::new(http::HttpDestination::new(http_client.clone(), c)),
                    c.max_retries,
                ),
                DestinationConfig::HubSpot(c) => (
                    Arc::new(hubspot::HubSpotDestination::new(
                        http_client.clone(),
                        c,
                        IntentLog::new(state.clone()),
                        limiter.clone(),
                        Limiter::new(
                            redis.clone(),
                            &config.state.queue_prefix,
                            &format!("{}/search", sync.destination),
                            &hubspot::search_limits(),
                        ),
                    )),
                    c.max_retries,
                ),
                DestinationConfig::Mailchimp(c) => (
                    Arc::new(mailchimp::MailchimpDestination::new(
                        http_client.clone(),
                        c,
                        limiter.clone(),
                    )),
                    c.max_retries,
                ),
                DestinationConfig::Salesforce(c) => (
                    Arc::new(salesforce::SalesforceDestination::new(
                        http_client.clone(),
                        c,
                        limiter.clone(),
                    )),
                    c.max_retries,
                ),
                DestinationConfig::Postgres(c) => {
                    let pool = match postgres_pools.get(&sync.destination) {
                        Some(pool) => Clone::clone(pool),
                        None => {
                            let pool = postgres::connect_lazy(&sync.destination, c)?;
                            postgres_pools.insert(sync.destination.clone(), pool.clone());
                            pool
                        }
                    };
                    (
                        Arc::new(postgres::PostgresDestination::new(pool, c, sync)),
                        c.max_retries,
                    )
                }
            };
            by_sync.insert(
                sync.name.clone(),
                SyncTarget {
                    destination_name: sync.destination.clone(),
                    destination,
                    limiter,
                    retry: RetryPolicy::new(max_retries),
                },
            );
        }
        Ok(Registry { by_sync })
    }

    pub fn for_sync(&self, sync: &str) -> Option<&SyncTarget> {
        self.by_sync.get(sync)
    }
}
