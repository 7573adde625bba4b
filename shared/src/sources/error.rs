//! Errors reading a model from a source: each names the source or the sync,
//! and model SQL errors point at the model's file and line.

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{source_name}`: cannot connect ({url}): {message}")]
    Connect {
        source_name: String,
        /// Without its password.
        url: String,
        message: String,
    },
    #[error("sync `{sync}`: model SQL error at {location}: {message}{hint}")]
    ModelSql {
        sync: String,
        location: String,
        message: String,
        hint: String,
    },
    #[error("sync `{sync}`: {message}")]
    Mapping { sync: String, message: String },
    /// Reading rows failed part way (the planner says after how many).
    #[error("{0}")]
    Read(String),
}
