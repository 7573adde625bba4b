//! What this worker delivers each sync through: the sync's destination,
//! built once per destination from its config (see
//! `ebb_shared::destinations::registry`), and the limits every sync writing
//! to that destination shares.

use std::collections::HashMap;
use std::sync::Arc;

use apalis_redis::ConnectionManager;
use ebb_shared::config::Config;
use ebb_shared::destinations::util::delivery::Target;
use ebb_shared::destinations::util::limiter::Limiter;
use ebb_shared::destinations::util::retry::RetryPolicy;
use ebb_shared::destinations::{self, Destination, util};
use sqlx::PgPool;

use crate::error::WorkerError;

/// What a worker needs to deliver one sync's batches.
pub struct SyncTarget {
    pub destination_name: String,
    pub destination: Arc<dyn Destination>,
    /// Shared by every sync writing to the destination.
    pub limiter: Arc<Limiter>,
    pub retry: RetryPolicy,
    /// Fields the sync writes only when a record is created.
    pub on_create_only: Vec<String>,
}

impl SyncTarget {
    pub fn target(&self) -> Target<'_> {
        Target {
            destination: self.destination.as_ref(),
            limiter: &self.limiter,
        }
    }
}

/// Each sync's target, built once per worker process.
pub struct Targets {
    by_sync: HashMap<String, SyncTarget>,
}

impl Targets {
    /// `redis` carries the destinations' limits (see [`Limiter`]); `state`
    /// keeps create intents (see `util::intents`).
    pub fn build(
        config: &Config,
        redis: &ConnectionManager,
        state: &PgPool,
    ) -> Result<Targets, WorkerError> {
        let http = util::api::client()?;
        let mut by_sync = HashMap::new();
        for (name, destination_config) in &config.destinations {
            let Some(built) = destinations::build(config, name, &http, redis, state)? else {
                continue;
            };
            for sync in built.syncs {
                by_sync.insert(
                    sync.name.clone(),
                    SyncTarget {
                        destination_name: name.clone(),
                        destination: built.destination.clone(),
                        limiter: built.limiter.clone(),
                        retry: RetryPolicy::new(destination_config.delivery().max_retries),
                        on_create_only: sync.on_create_only.clone(),
                    },
                );
            }
        }
        Ok(Targets { by_sync })
    }

    pub fn for_sync(&self, sync: &str) -> Option<&SyncTarget> {
        self.by_sync.get(sync)
    }
}
