//! What every SaaS vendor destination (`hubspot`, `mailchimp`,
//! `salesforce`) shares: answering each record of a send on its own, the
//! three kinds of write per record and the checks made before any of them
//! ([`prepare`]), a cached schema and how a mapping can misfit it
//! ([`SchemaProblem`]), and a per-send request budget against the
//! destination's limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::api::Failure;
use super::limiter::Limiter;
use super::outcome::{Attempt, RecordAnswer, Unapplied};
use crate::config::FieldMapping;
use crate::destinations::destination::ReadBack;
use crate::destinations::record::{BatchContext, Op, OutboundRecord};
use crate::destinations::{ConnectionCheck, Destination, MappingReport};

/// Checks, at config time, that a sync's non-empty mapping fills the field
/// a vendor matches records on; `how` says how the destination uses it
/// ("matches records on the HubSpot property `email`").
pub fn match_field_mapped(
    destination: &str,
    how: &str,
    field: &str,
    mapping: &[FieldMapping],
    primary_key: &str,
) -> Result<(), String> {
    if mapping.is_empty() || mapping.iter().any(|m| m.field == field) {
        return Ok(());
    }
    Err(format!(
        "destination `{destination}` {how}, so the mapping must fill it (e.g. `{field} = \"{primary_key}\"`)"
    ))
}

/// What `ebb check --connect` says of a vendor: `checked` is the mapping's
/// problems and what was accepted, or why the vendor could not be checked
/// (`base_url`: where it went; `what`: what it looked for).
pub fn connection_check(
    checked: Result<(Vec<String>, String), Failure>,
    base_url: &str,
    what: &str,
) -> ConnectionCheck {
    match checked {
        Ok((problems, accepted)) => Ok(MappingReport { accepted, problems }),
        Err(failure) => Err(failure.connection_problem(base_url, what)),
    }
}

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

    /// See [`Destination::takes_partial_updates`].
    fn takes_partial_updates(&self) -> bool {
        false
    }

    /// See [`Destination::read_back`].
    fn read_back<'a>(
        &'a self,
        _ctx: &'a BatchContext,
        _records: &'a [OutboundRecord],
    ) -> Option<BoxFuture<'a, ReadBack>> {
        None
    }

    /// See [`Destination::same_value`].
    fn same_value(&self, _field: &str, delivered: &Value, found: &Value) -> bool {
        super::verify::same_json(delivered, found)
    }
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

    fn takes_partial_updates(&self) -> bool {
        VendorDestination::takes_partial_updates(self)
    }

    fn read_back<'a>(
        &'a self,
        ctx: &'a BatchContext,
        records: &'a [OutboundRecord],
    ) -> Option<BoxFuture<'a, ReadBack>> {
        VendorDestination::read_back(self, ctx, records)
    }

    fn same_value(&self, field: &str, delivered: &Value, found: &Value) -> bool {
        VendorDestination::same_value(self, field, delivered, found)
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

/// How a sync's mapping does not fit a vendor's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaProblem {
    /// A mapped field the destination does not have or cannot write, or a
    /// match field it cannot match on: no record of the sync can be
    /// written until the mapping or the account changes.
    Unwritable(String),
    /// A field the destination requires of new records is not mapped:
    /// shown by `ebb check --connect`, while at run time each new record
    /// is refused on its own with the vendor's message.
    MissingRequired(String),
}

impl SchemaProblem {
    /// Whether the problem stops every record of a send.
    pub fn blocks_delivery(&self) -> bool {
        matches!(self, SchemaProblem::Unwritable(_))
    }
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaProblem::Unwritable(m) | SchemaProblem::MissingRequired(m) => f.write_str(m),
        }
    }
}

/// The records of one send after the checks every vendor makes before
/// writing, sorted by [`WriteKind`]; each update and write carries what the
/// vendor's validation made of it.
pub struct Prepared<'r, T> {
    /// Position in the send, and the destination's id to remove.
    pub removals: Vec<(usize, &'r str)>,
    /// Delivered before: updated by the destination's id.
    pub updates: Vec<(usize, &'r OutboundRecord, T)>,
    /// Never delivered (or the id is unknown): created or upserted.
    pub writes: Vec<(usize, &'r OutboundRecord, T)>,
    /// For updates trimmed to the fields that changed (by position): what
    /// validation made of the whole record, to write it whole if it has to
    /// be created again (its id gone at the destination). See
    /// [`written_whole`].
    pub wholes: HashMap<usize, Result<T, String>>,
}

/// What a vendor says in [`prepare`].
pub struct PrepareRules<'a> {
    /// What a mapping misfits, in errors: `HubSpot`, `the Mailchimp
    /// audience a1b2c3`.
    pub target: &'a str,
    /// The rejection of a removal whose destination id is not known.
    pub unknown_id: &'a str,
}

/// The checks before a vendor send, the same for every vendor: a removal
/// needs the destination's id; an update by id keeps only its
/// `update_fields` (given to vendors that take partial updates; none left:
/// delivered without a request); an upsert needs a JSON object of fields that
/// fit the vendor's schema (`check_fields`; a misfit of the mapping stops
/// the whole send as misconfigured), and passes the vendor's own
/// validation (`validate`: `Err` is the record's rejection). Records
/// refused here are answered in `answers`.
pub fn prepare<'r, T>(
    ctx: &BatchContext,
    records: &'r [OutboundRecord],
    answers: &mut [Option<RecordAnswer>],
    rules: &PrepareRules<'_>,
    check_fields: impl Fn(&Map<String, Value>) -> Vec<SchemaProblem>,
    mut validate: impl FnMut(&'r OutboundRecord, &Map<String, Value>) -> Result<T, String>,
) -> Result<Prepared<'r, T>, Failure> {
    let mut prepared = Prepared {
        removals: Vec::new(),
        updates: Vec::new(),
        writes: Vec::new(),
        wholes: HashMap::new(),
    };
    for (index, record) in records.iter().enumerate() {
        if record.op == Op::Delete {
            match record.destination_id.as_deref() {
                Some(id) => prepared.removals.push((index, id)),
                None => answers[index] = Some(RecordAnswer::Rejected(rules.unknown_id.to_owned())),
            }
            continue;
        }
        let fields = match fields_of(record) {
            Ok(fields) => fields,
            Err(rejected) => {
                answers[index] = Some(rejected);
                continue;
            }
        };
        let (fields, whole) = match (&record.update_fields, write_kind(record)) {
            (Some(changed), WriteKind::UpdateById) => {
                let trimmed: Map<String, Value> = fields
                    .iter()
                    .filter(|(name, _)| changed.contains(name))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                (trimmed, Some(fields))
            }
            _ => (fields, None),
        };
        if whole.is_some() && fields.is_empty() {
            // Only fields the destination keeps changed (`on_create_only`):
            // nothing to write, and the delivered version is this one.
            answers[index] = Some(RecordAnswer::Applied {
                destination_id: record.destination_id.clone(),
                looked_up: false,
            });
            continue;
        }
        let blocking: Vec<String> = check_fields(&fields)
            .into_iter()
            .filter(SchemaProblem::blocks_delivery)
            .map(|p| p.to_string())
            .collect();
        if !blocking.is_empty() {
            return Err(Failure::Misconfigured(format!(
                "the mapping of sync `{}` does not fit {}: {} (run `ebb check --connect` to see every problem)",
                ctx.sync,
                rules.target,
                blocking.join("; ")
            )));
        }
        match validate(record, &fields) {
            Err(reason) => answers[index] = Some(RecordAnswer::Rejected(reason)),
            Ok(valid) => match write_kind(record) {
                WriteKind::UpdateById => {
                    if let Some(whole) = whole {
                        prepared.wholes.insert(index, validate(record, &whole));
                    }
                    prepared.updates.push((index, record, valid));
                }
                _ => prepared.writes.push((index, record, valid)),
            },
        }
    }
    Ok(prepared)
}

/// What a record whose update found its id gone is created again with:
/// the whole record when the update was trimmed to its changed fields
/// (`None`, answered as rejected in `answers`, when the whole record does
/// not pass validation), else what the update had.
pub fn written_whole<T>(
    index: usize,
    updated: T,
    wholes: &mut HashMap<usize, Result<T, String>>,
    answers: &mut [Option<RecordAnswer>],
) -> Option<T> {
    match wholes.remove(&index) {
        None => Some(updated),
        Some(Ok(whole)) => Some(whole),
        Some(Err(reason)) => {
            answers[index] = Some(RecordAnswer::Rejected(reason));
            None
        }
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

/// What a call's failure means for the records it carried: refused
/// content answers them; back-pressure and transient trouble leave them
/// unapplied, to be sent again on their own; anything else (credentials,
/// permissions, a missing resource, a mapping that does not fit) is for the
/// whole send (`Err`).
pub fn answer_failure(failure: Failure) -> Result<RecordAnswer, Failure> {
    Ok(match failure {
        Failure::Rejected(message) => RecordAnswer::Rejected(message),
        Failure::Throttled { retry_after } => {
            RecordAnswer::Unapplied(Unapplied::Throttled { retry_after })
        }
        Failure::Transient(message, retry_after) => RecordAnswer::Unapplied(Unapplied::Transient {
            message,
            retry_after,
        }),
        // The request may have been applied; sending it again finds out.
        Failure::Unreachable(message) | Failure::Unexpected(message) => {
            RecordAnswer::Unapplied(Unapplied::Transient {
                message,
                retry_after: None,
            })
        }
        fatal @ (Failure::Unauthorized(_)
        | Failure::Forbidden(_)
        | Failure::NotFound(_)
        | Failure::Misconfigured(_)) => return Err(fatal),
    })
}

/// A send that failed part way: the records answered so far keep their
/// answers, and the others are left unapplied by `failure` (a request
/// refused as a whole is split among them). A failure before any answer is
/// the whole send's, as if it had been one request.
pub fn finish_after(
    answers: Vec<Option<RecordAnswer>>,
    failure: Failure,
) -> Result<Vec<RecordAnswer>, Failure> {
    if answers.iter().all(Option::is_none) {
        return Err(failure);
    }
    let rest = match failure {
        Failure::Rejected(message) => RecordAnswer::Unapplied(Unapplied::Refused(message)),
        other => answer_failure(other)?,
    };
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| rest.clone()))
        .collect())
}

/// A send's answers once its writes ended: every record's own answer when
/// they all went through ([`finish`]), else the answers so far and the rest
/// left to the failure ([`finish_after`]).
pub fn conclude(
    answers: Vec<Option<RecordAnswer>>,
    written: Result<(), Failure>,
) -> Result<Vec<RecordAnswer>, Failure> {
    match written {
        Ok(()) => Ok(finish(answers)),
        Err(failure) => finish_after(answers, failure),
    }
}

/// The text a record names its destination record by (a match key, an
/// external id): a non-blank string, or a number's digits. `why` ends the
/// refusal: "Braze needs it to know which profile to write".
pub fn identifier(fields: &Map<String, Value>, field: &str, why: &str) -> Result<String, String> {
    match fields.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            Err(format!("`{field}` is empty; {why}"))
        }
        Some(other) => Err(format!("`{field}` must be text, not {other}; {why}")),
    }
}

/// Keeps the first of the records of a send that name one destination
/// record (by `name`, case-insensitively: an address, an external id); each
/// later one is refused, naming the record kept: "record `7` of the same
/// batch has the same email (a@example.com); `merged`".
pub fn first_per_name<'r, T>(
    items: Vec<(usize, &'r str, T)>,
    field: &str,
    name: impl Fn(&T) -> &str,
    merged: &str,
    answers: &mut [Option<RecordAnswer>],
) -> Vec<(usize, &'r str, T)> {
    let mut first: HashMap<String, &str> = HashMap::new();
    let mut kept = Vec::with_capacity(items.len());
    for (index, key, item) in items {
        let named = name(&item).to_lowercase();
        match first.get(&named) {
            Some(other) => {
                answers[index] = Some(RecordAnswer::Rejected(format!(
                    "record `{other}` of the same batch has the same {field} ({}); {merged}",
                    name(&item)
                )));
            }
            None => {
                first.insert(named, key);
                kept.push((index, key, item));
            }
        }
    }
    kept
}

/// Sends one request per record (a `PUT` per member) and answers each
/// record by its own request. After a 429, or three transient failures in
/// a row (the destination is down), the rest are held back unsent rather
/// than spending their retries.
#[derive(Default)]
pub struct OneByOne {
    transient_in_a_row: u32,
    held_back: bool,
}

impl OneByOne {
    const GIVE_UP_AFTER: u32 = 3;

    /// Whether the next record should not be sent in this send.
    pub fn held_back(&self) -> bool {
        self.held_back
    }

    /// The answer for a record whose request ended with `result`; `Err`
    /// when the failure is for the whole send.
    pub fn answer(
        &mut self,
        result: Result<RecordAnswer, Failure>,
    ) -> Result<RecordAnswer, Failure> {
        let answer = match result {
            Ok(answer) => answer,
            Err(failure) => answer_failure(failure)?,
        };
        match &answer {
            RecordAnswer::Unapplied(Unapplied::Throttled { .. }) => self.held_back = true,
            RecordAnswer::Unapplied(Unapplied::Transient { .. }) => {
                self.transient_in_a_row += 1;
                self.held_back |= self.transient_in_a_row >= Self::GIVE_UP_AFTER;
            }
            _ => self.transient_in_a_row = 0,
        }
        Ok(answer)
    }

    /// The answer for a record not sent because of [`Self::held_back`].
    pub fn not_sent() -> RecordAnswer {
        RecordAnswer::Unapplied(Unapplied::NotSent)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_naming_a_destination_record_is_kept_and_the_others_refused() {
        let items = vec![
            (0, "7", "A@example.com"),
            (1, "8", "b@example.com"),
            (2, "9", "a@EXAMPLE.com"),
        ];
        let mut answers = vec![None; 3];
        let kept = first_per_name(items, "email", |e| e, "one profile", &mut answers);
        assert_eq!(
            kept.iter().map(|(i, k, _)| (*i, *k)).collect::<Vec<_>>(),
            vec![(0, "7"), (1, "8")]
        );
        assert!(answers[0].is_none() && answers[1].is_none());
        assert_eq!(
            answers[2],
            Some(RecordAnswer::Rejected(
                "record `7` of the same batch has the same email (a@EXAMPLE.com); one profile"
                    .into()
            ))
        );
    }
}
