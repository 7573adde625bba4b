//! The records of one batch, as a destination is given them (loaded by the
//! worker from `ebb_run_records`).

use serde_json::value::RawValue;

pub use crate::state::Op;

/// One record version to deliver.
#[derive(Debug, Clone)]
pub struct OutboundRecord {
    pub key: String,
    pub op: Op,
    /// Mapped fields as JSON (None for deletes).
    pub fields: Option<Box<RawValue>>,
    /// Hex content hash of this version (None for deletes).
    pub version: Option<String>,
    /// The run whose snapshot produced this version; unchanged by task
    /// redeliveries, retries and DLQ replays of the same version.
    pub snapshot_run_id: i64,
    /// The destination's id for the record, from the ledger, when an
    /// earlier version was delivered to a destination that has ids.
    pub destination_id: Option<String>,
    /// The fields an update by `destination_id` writes, where the vendor
    /// takes partial updates: those whose values changed since the version
    /// delivered, without the sync's `on_create_only` fields. `None`: every
    /// field (never delivered, or no digest of the version delivered).
    /// A record created again (its id gone at the destination) is written
    /// whole.
    pub update_fields: Option<Vec<String>>,
}

impl OutboundRecord {
    /// Names this record version's effect: the same for every retry,
    /// redelivery and replay of it, and different for any other version
    /// (including a revert to older content, which comes from a newer
    /// snapshot). `sync:key:version:snapshot_run` (`delete` for deletes).
    pub fn idempotency_key(&self, sync: &str) -> String {
        format!(
            "{sync}:{}:{}:{}",
            self.key,
            self.version.as_deref().unwrap_or("delete"),
            self.snapshot_run_id
        )
    }
}

/// Identifies a batch in logs and request bodies.
#[derive(Debug, Clone)]
pub struct BatchContext {
    pub sync: String,
    pub destination: String,
    pub run_id: i64,
    pub batch_no: i32,
    /// No key of the batch was in the ledger when it was loaded (every
    /// batch of a first sync): a destination may write its records as
    /// plain inserts, provided it falls back to its upsert should one exist
    /// after all (the effect of a delivery that crashed before its settle).
    pub new_keys_only: bool,
}
