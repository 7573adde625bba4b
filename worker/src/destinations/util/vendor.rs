//! What every SaaS vendor destination (`hubspot`, `mailchimp`,
//! `salesforce`) shares: answering each record of a send on its own, the
//! three kinds of write per record, a cached schema, and a per-send request
//! budget against the destination's limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::api::Failure;
use super::limiter::Limiter;
use super::outcome::{Attempt, RecordAnswer};
use crate::batch::{BatchContext, Op, OutboundRecord};
use crate::destinations::Destination;

/// A vendor's schema (properties, merge fields, describe) is read again
/// after this long, so new fields or options are picked up without
/// restarting workers.
pub const SCHEMA_TTL: Duration = Duration::from_secs(300);

/// A destination that answers for each record of a send, or fails the
/// whole send with a [`Failure`].
pub trait VendorDestination: Send + Sync {
    fn send_records<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Result<Vec<RecordAnswer>, Failure>>;
}

impl<T: VendorDestination> Destination for T {
    fn send<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match self.send_records(ctx, records).await {
                Ok(answers) => Attempt::Answered(answers),
                Err(failure) => failure.into(),
            }
        })
    }

    fn request_group(&self, record: &OutboundRecord) -> u8 {
        write_kind(record) as u8
    }
}

/// The three kinds of write: never in one request together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Removed from the model (mirror mode): archive or delete by id.
    Remove = 0,
    /// Delivered before: update by the destination's id (from the ledger).
    UpdateById = 1,
    /// Never delivered (or its id is unknown): create or upsert.
    Write = 2,
}

pub fn write_kind(record: &OutboundRecord) -> WriteKind {
    match (record.op, &record.destination_id) {
        (Op::Delete, _) => WriteKind::Remove,
        (Op::Upsert, Some(_)) => WriteKind::UpdateById,
        (Op::Upsert, None) => WriteKind::Write,
    }
}

/// A record's mapped fields as a JSON object, or its rejection.
pub fn fields_of(record: &OutboundRecord) -> Result<Map<String, Value>, RecordAnswer> {
    match record
        .fields
        .as_deref()
        .map(|f| serde_json::from_str(f.get()))
    {
        Some(Ok(fields)) => Ok(fields),
        _ => Err(RecordAnswer::Rejected(
            "the record's mapped fields are not a JSON object".into(),
        )),
    }
}

/// A send's answers in record order. A record no branch of the send
/// answered is a bug, kept visible as a rejection rather than dropped.
pub fn finish(answers: Vec<Option<RecordAnswer>>) -> Vec<RecordAnswer> {
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                RecordAnswer::Rejected("internal error: no answer for this record".into())
            })
        })
        .collect()
}

/// Requests made by one send. The first goes out under the permit the
/// delivery loop acquired; each further one (a schema read, a lookup, a
/// follow-up call) takes its own rate token, so the destination's rate
/// holds, without a second concurrency slot (waiting for one while holding
/// one could deadlock).
pub struct RequestBudget<'a> {
    limiter: &'a Limiter,
    sent: AtomicU32,
}

impl<'a> RequestBudget<'a> {
    pub fn new(limiter: &'a Limiter) -> Self {
        Self {
            limiter,
            sent: AtomicU32::new(0),
        }
    }

    /// Call before each request.
    pub async fn spend(&self) {
        if self.sent.fetch_add(1, Ordering::Relaxed) > 0 {
            self.limiter.take_rate_token().await;
        }
    }
}

/// A schema read once per worker and again after [`SCHEMA_TTL`].
pub struct SchemaCache<S> {
    cached: Mutex<Option<(Instant, Arc<S>)>>,
}

impl<S> Default for SchemaCache<S> {
    fn default() -> Self {
        Self {
            cached: Mutex::new(None),
        }
    }
}

impl<S> SchemaCache<S> {
    pub async fn get<F>(&self, budget: &RequestBudget<'_>, fetch: F) -> Result<Arc<S>, Failure>
    where
        F: Future<Output = Result<S, Failure>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some((at, schema)) = cached.as_ref()
            && at.elapsed() < SCHEMA_TTL
        {
            return Ok(schema.clone());
        }
        budget.spend().await;
        let schema = Arc::new(fetch.await?);
        *cached = Some((Instant::now(), schema.clone()));
        Ok(schema)
    }
}
