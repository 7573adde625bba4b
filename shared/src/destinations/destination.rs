//! The [`Destination`] trait: what the delivery machinery calls, and what
//! `ebb verify` reads records back through.

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::record::{BatchContext, OutboundRecord};
use super::util::outcome::Attempt;

/// Each record's fields as the destination holds them (only the mapped
/// ones it can read), `None` for a record it no longer has; in the order
/// asked. `Err` says why the destination could not be read.
pub type ReadBack = Result<Vec<Option<Map<String, Value>>>, String>;

/// A place records are delivered to. `send` makes one request for a chunk
/// of a batch and classifies the answer; retries and splitting are done by
/// [`super::util::delivery::deliver`].
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

    /// Updates by id write only the fields they are given, so an update
    /// can send only the fields that changed (see
    /// [`OutboundRecord::update_fields`]).
    fn takes_partial_updates(&self) -> bool {
        false
    }

    /// Reads delivered records back (`ebb verify`), by their destination id
    /// or key; `None` when this destination cannot be read back.
    fn read_back<'a>(
        &'a self,
        _ctx: &'a BatchContext,
        _records: &'a [OutboundRecord],
    ) -> Option<BoxFuture<'a, ReadBack>> {
        None
    }

    /// The keys of every record the destination holds for a sync (the
    /// extra ones a mirror sync should not have); `None` when it cannot
    /// list them.
    fn list_keys<'a>(
        &'a self,
        _ctx: &'a BatchContext,
    ) -> Option<BoxFuture<'a, Result<Vec<String>, String>>> {
        None
    }

    /// Whether the value the destination holds for `field` is the value
    /// delivered, as this destination stores values.
    fn same_value(&self, _field: &str, delivered: &Value, found: &Value) -> bool {
        super::util::verify::same_json(delivered, found)
    }
}
