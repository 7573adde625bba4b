//! Errors about Ebb's own infrastructure: the state database and the queue.

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot connect to Ebb's state database ({url}): {source}. Is Postgres running and is [state].database_url right?"
    )]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate Ebb's state database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state database error while {context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "sync `{sync}` already has an active run #{run_id} ({state}); wait for it to finish (see `ebb runs --sync {sync}`)"
    )]
    RunActive {
        sync: String,
        run_id: i64,
        state: String,
    },
    #[error("run #{0} does not exist")]
    NoSuchRun(i64),
    #[error("verification #{0} does not exist (see `ebb verifications`)")]
    NoSuchVerification(i64),
    #[error("Ebb's state database holds something unexpected while {context}: {message}")]
    Corrupt {
        context: &'static str,
        message: String,
    },
}

impl StateError {
    /// Wraps a query error with what Ebb was doing.
    pub fn query(context: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
        move |source| StateError::Query { context, source }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "cannot connect to Redis ({url}): {source}. Is Redis running and is [state].redis_url right?"
    )]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot enqueue tasks on Redis queue `{queue}`: {message}")]
    Push { queue: String, message: String },
    #[error("Redis error while {context}: {source}")]
    Redis {
        context: &'static str,
        #[source]
        source: redis::RedisError,
    },
}
