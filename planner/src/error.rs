//! Planner errors: each says which sync, source or model it is about.

use ebb_shared::config::ConfigError;
use ebb_shared::sources::SourceError;
use ebb_shared::{QueueError, StateError};

#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "sync `{sync}`: reading the model from source `{source_name}` failed after {rows} rows: {message}"
    )]
    SourceRead {
        sync: String,
        source_name: String,
        rows: u64,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
}
