//! The [`Destination`] trait: what the delivery machinery calls.

use futures::future::BoxFuture;

use super::record::{BatchContext, OutboundRecord};
use super::util::outcome::Attempt;

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
}
