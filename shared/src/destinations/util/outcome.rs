//! How a destination answered one request, and what that means per record.

use std::time::Duration;

use crate::state::Outcome;

/// The answer to one request carrying a chunk of records.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The destination applied every record of the request.
    Delivered,
    /// The destination answered for each record of the request on its own
    /// (a batch API's multi-status answer): one answer per record, in the
    /// order of the records sent.
    Answered(Vec<RecordAnswer>),
    /// The destination refused the content (validation, constraint). When a
    /// request carried several records, the chunk is split to find which.
    Rejected(String),
    /// The destination asks Ebb to slow down (HTTP 429). Back-pressure, not
    /// a failure: every worker pauses for `retry_after`, and no retry
    /// attempt is spent.
    Throttled { retry_after: Option<Duration> },
    /// Worth retrying later: 5xx, timeouts, lost connections. A
    /// `retry_after` from the destination is honoured.
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying or splitting cannot help (bad credentials, missing table,
    /// wrong URL): every record of the batch fails with this message.
    Fatal(String),
}

/// What a destination said of one record of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordAnswer {
    /// Applied. `destination_id` is the destination's own id for the record
    /// (kept in the ledger for later updates and deletes); `looked_up` says
    /// the record was searched for by its match key before creating it,
    /// because an earlier create's outcome was unknown.
    Applied {
        destination_id: Option<String>,
        looked_up: bool,
    },
    /// Refused for its content, with the destination's own message.
    Rejected(String),
    /// Not applied by this send, for a reason that trying again may cure.
    /// The record is sent again on its own, without the records of the
    /// send that were applied.
    Unapplied(Unapplied),
}

/// Why a record of a send was not applied, when trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unapplied {
    /// Its request failed transiently (5xx, timeout, lost connection): it
    /// counts against the record's own retries.
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Its request was answered 429: waited out, not a retry.
    Throttled { retry_after: Option<Duration> },
    /// Its request was refused as a whole, with other records: it is split
    /// from them to find the records at fault.
    Refused(String),
    /// Not sent by this send (held back after its neighbours' requests
    /// failed): not a retry.
    NotSent,
}

/// The final outcome of one record in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Applied; with the destination's id for the record when it has one.
    Delivered { destination_id: Option<String> },
    /// The destination refused this record; it goes to the DLQ.
    Rejected(String),
    /// Retries were exhausted or the destination is misconfigured; it goes to
    /// the DLQ and the run is marked failed.
    Failed(String),
    /// A newer version of the record was delivered already; not sent.
    Superseded,
}

impl RecordOutcome {
    /// What the state database records of it.
    pub fn outcome(&self) -> Outcome {
        match self {
            RecordOutcome::Delivered { .. } => Outcome::Delivered,
            RecordOutcome::Rejected(_) => Outcome::Rejected,
            RecordOutcome::Failed(_) => Outcome::Failed,
            RecordOutcome::Superseded => Outcome::Superseded,
        }
    }

    pub fn delivered() -> RecordOutcome {
        RecordOutcome::Delivered {
            destination_id: None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            RecordOutcome::Rejected(r) | RecordOutcome::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// Limits a destination's message to what is useful in a DLQ entry.
pub fn truncate_message(message: &str, max_chars: usize) -> String {
    let trimmed = message.trim();
    if trimmed.chars().count() <= max_chars {
        trimmed.to_owned()
    } else {
        let cut: String = trimmed.chars().take(max_chars).collect();
        format!("{cut}… (truncated)")
    }
}
