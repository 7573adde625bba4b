//! Worker errors. Destination failures are not errors here: they are record
//! outcomes (see `ebb_shared::destinations::util::outcome`). These are the failures that
//! leave a batch unsettled, to be retried from the queue.

use ebb_shared::{QueueError, StateError};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Config(#[from] ebb_shared::config::ConfigError),
    #[error(
        "run {run_id} batch {batch_no}: sync `{sync}` is not in this worker's config; deploy the same ebb.toml to planner and workers"
    )]
    UnknownSync {
        run_id: i64,
        batch_no: i32,
        sync: String,
    },
    #[error(transparent)]
    Destination(#[from] ebb_shared::destinations::DestinationError),
    #[error(
        "run {run_id} batch {batch_no}: this worker lost its claim on the batch before settling it (another worker took it over, or the state database could not be reached to renew it); the batch is settled once, by whoever holds it"
    )]
    ClaimLost { run_id: i64, batch_no: i32 },
    #[error("run {run_id} batch {batch_no}: the batch's task crashed: {message}")]
    Crashed {
        run_id: i64,
        batch_no: i32,
        message: String,
    },
    #[error("{0}")]
    Faults(String),
    #[error(
        "the config has no sync, so this worker has no queue to drain; add a [syncs.NAME] section"
    )]
    NoSyncs,
    #[error("{0}")]
    Listen(String),
    #[error("worker pool stopped: {0}")]
    Monitor(String),
}
