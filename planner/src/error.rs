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
    /// The merge diff found rows out of key order: planning on would
    /// count records as removed that are not.
    #[error(
        "sync `{sync}`: {side} did not come in key order ({detail}); nothing was planned or sent. This is a bug in Ebb: please report it with the primary key's column type"
    )]
    OutOfOrder {
        sync: String,
        side: String,
        detail: String,
    },
    #[error(
        "sync `{sync}`: cannot keep the plan's removals and rejections in a temporary file under {dir}: {source}; point TMPDIR at a writable directory"
    )]
    Spill {
        sync: String,
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("run #{0} was cancelled while it was being planned; nothing was sent")]
    CancelledWhilePlanning(i64),
    /// Something named (a run, a DLQ entry) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the current state (a run already ended, an
    /// entry already closed).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Usage(String),
}
