//! The diff as a merge, for sources that read a model in key order (see
//! `Source::stream_in_key_order`): the model's rows against the sync's
//! ledger, read in the same order, in one pass over both that holds only
//! the current key. Unchanged records cost no write: the records a run
//! sends go into `ebb_run_records` with one COPY, numbered into batches as
//! they come (upserts, then deletes, as `diff::write_batches` numbers
//! them), and the planning rejections into the DLQ with a second COPY.
//! Same classes, counts and rejection reasons as the snapshot diff in
//! `diff.rs`, which other sources go through.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::PgCopyIn;
use sqlx::{PgConnection, PgPool};

use super::diff::{Diffed, PlanCounts, PlanRejection, SendRule};
use super::snapshot::{Checked, check, read_failed};
use super::{COPY_CHUNK_BYTES, HEARTBEAT_EVERY};
use crate::error::PlannerError;
use ebb_shared::StateError;
use ebb_shared::config::SyncConfig;
use ebb_shared::copy_binary;
use ebb_shared::copy_text::{push_bytea, push_escaped};
use ebb_shared::destinations::budget::BatchWrites;
use ebb_shared::sources::{SourceError, SourceRow};
use ebb_shared::state::ledger::{self, Delivered};
use ebb_shared::state::{batches, dlq, runs};

/// Removals and rejections wait for the upserts in memory up to this size,
/// then in a temporary file.
const SPILL_IN_MEMORY_BYTES: usize = 8 << 20;
/// Rows of one duplicated key held to count them; past this many, they are
/// rejected as they come.
const DUPLICATES_HELD: usize = 1000;
/// The columns of `ebb_run_records` a plan writes: run, batch, key, op,
/// content hash, snapshot run, payload.
const RECORD_FIELDS: i16 = 7;
/// How many rejections and flapping keys a plan lists.
const SAMPLE: usize = 20;

/// The run a merge writes its plan for; a dry run has none.
#[derive(Debug, Clone, Copy)]
pub struct RunPlan<'a> {
    pub run_id: i64,
    /// Where the run's heartbeat is kept during long merges.
    pub pool: &'a PgPool,
}

/// Diffs the key-ordered `model` of `sync` against its ledger (read from
/// `pool`) and, for a run, writes what it sends and refuses in `tx`.
#[allow(clippy::too_many_arguments)]
pub async fn merge(
    tx: &mut PgConnection,
    pool: &PgPool,
    model: BoxStream<'_, Result<SourceRow, SourceError>>,
    source_name: &str,
    sync: &SyncConfig,
    rule: SendRule,
    batch_size: usize,
    run: Option<RunPlan<'_>>,
) -> Result<Diffed, PlannerError> {
    let mut plan = Plan::new(
        sync,
        rule,
        batch_size,
        run.map(|r| Writing::new(r.run_id, sync)),
    );
    let Some(run) = run else {
        read(
            &mut plan,
            model,
            LedgerCursor::start(pool, sync),
            source_name,
            None,
        )
        .await?;
        plan.number_removals();
        return Ok(plan.merged(Vec::new()));
    };
    dlq::supersede_plan_rejections(tx, &sync.name, run.run_id).await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY ebb_run_records (run_id, batch_no, record_key, op, content_hash, snapshot_run_id, payload) \
             FROM STDIN (FORMAT binary)",
        )
        .await
        .map_err(StateError::query("starting COPY of the run's records"))?;
    let written = async {
        let ledger = LedgerCursor::start(pool, sync);
        read(
            &mut plan,
            model,
            ledger,
            source_name,
            Some((&mut copy, run)),
        )
        .await?;
        let first_removal = plan.number_removals();
        let batch_size = plan.batch_size;
        if let Some(writing) = &mut plan.writing {
            writing
                .finish_records(&mut copy, first_removal, batch_size, sync)
                .await?;
        }
        Ok::<_, PlannerError>(())
    }
    .await;
    if let Err(e) = written {
        let _ = copy.abort("planning failed").await;
        return Err(e);
    }
    copy.finish()
        .await
        .map_err(StateError::query("finishing the COPY of the run's records"))?;
    if let Some(writing) = &mut plan.writing
        && plan.counts.rejected > 0
    {
        writing.send_rejections(tx, sync).await?;
    }
    let record_counts: Vec<i32> = plan
        .writes
        .iter()
        .map(|w| i32::try_from(w.total()).unwrap_or(i32::MAX))
        .collect();
    let batches = batches::create_counted(tx, run.run_id, &record_counts).await?;
    Ok(plan.merged(batches))
}

type RecordsCopy<'c> = PgCopyIn<&'c mut PgConnection>;

/// Reads the model to its end against the ledger; for a run, sends the
/// records to upsert to `copy` as they fill a chunk.
async fn read(
    plan: &mut Plan<'_>,
    mut model: BoxStream<'_, Result<SourceRow, SourceError>>,
    mut ledger: LedgerCursor,
    source_name: &str,
    mut copy: Option<(&mut RecordsCopy<'_>, RunPlan<'_>)>,
) -> Result<(), PlannerError> {
    let sync = plan.sync;
    let mut group = Group::default();
    let mut last_beat = Instant::now();
    while let Some(row) = model.next().await {
        let row = row.map_err(|e| read_failed(e, sync, source_name, plan.counts.rows_read))?;
        plan.counts.rows_read += 1;
        let Some(key) = row.key.as_deref() else {
            if group.started {
                return Err(out_of_order(sync, "a NULL key after keys"));
            }
            plan.reject_null_key(check(row, sync.max_record_bytes))?;
            continue;
        };
        match key.cmp(group.key.as_slice()) {
            Ordering::Equal if group.started => {
                group.rows.push(check(row, sync.max_record_bytes));
                if group.rows.len() >= DUPLICATES_HELD {
                    plan.reject_duplicates(&mut group, true)?;
                }
            }
            Ordering::Less if group.started => {
                return Err(out_of_order(
                    sync,
                    &format!(
                        "key {:?} after {:?}",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(&group.key)
                    ),
                ));
            }
            _ => {
                plan.settle(&mut group, &mut ledger).await?;
                group.start(key);
                group.rows.push(check(row, sync.max_record_bytes));
            }
        }
        if let (Some((copy, _)), Some(writing)) = (&mut copy, &mut plan.writing)
            && writing.records.len() >= COPY_CHUNK_BYTES
        {
            writing.send_records(copy).await?;
        }
        // A re-sync that sends nothing writes nothing for minutes on a big
        // model: the run's heartbeat goes by the clock.
        if let Some((_, run)) = &copy
            && plan.counts.rows_read.is_multiple_of(4096)
            && last_beat.elapsed() > HEARTBEAT_EVERY
        {
            runs::heartbeat(run.pool, run.run_id).await?;
            last_beat = Instant::now();
        }
    }
    plan.settle(&mut group, &mut ledger).await?;
    while let Some(delivered) = ledger.next().await? {
        plan.removed(delivered)?;
    }
    Ok(())
}

fn spill_failed(sync: &SyncConfig, source: io::Error) -> PlannerError {
    PlannerError::Spill {
        sync: sync.name.clone(),
        dir: std::env::temp_dir().display().to_string(),
        source,
    }
}

fn out_of_order(sync: &SyncConfig, detail: &str) -> PlannerError {
    PlannerError::OutOfOrder {
        sync: sync.name.clone(),
        side: format!("the model from source `{}`", sync.source),
        detail: detail.to_owned(),
    }
}

/// The rows of the model's current key.
#[derive(Default)]
struct Group {
    started: bool,
    key: Vec<u8>,
    rows: Vec<Checked>,
    /// Rows of this key already rejected as duplicates (see
    /// [`DUPLICATES_HELD`]).
    rejected: usize,
}

impl Group {
    fn start(&mut self, key: &[u8]) {
        self.started = true;
        self.key.clear();
        self.key.extend_from_slice(key);
        self.rows.clear();
        self.rejected = 0;
    }
}

/// The sync's ledger (read ahead by a task of its own, see
/// [`ledger::in_key_order`]), one entry ahead.
struct LedgerCursor {
    chunks: BoxStream<'static, Result<Vec<Delivered>, StateError>>,
    chunk: std::vec::IntoIter<Delivered>,
    ahead: Option<Delivered>,
    last_key: String,
    ended: bool,
    sync: String,
}

impl LedgerCursor {
    fn start(pool: &PgPool, sync: &SyncConfig) -> LedgerCursor {
        let chunks = ledger::in_key_order(pool, &sync.name, sync.guardrails.flapping_versions);
        LedgerCursor::reading(&sync.name, chunks)
    }

    fn reading(
        sync: &str,
        chunks: BoxStream<'static, Result<Vec<Delivered>, StateError>>,
    ) -> LedgerCursor {
        LedgerCursor {
            chunks,
            chunk: Vec::new().into_iter(),
            ahead: None,
            last_key: String::new(),
            ended: false,
            sync: sync.to_owned(),
        }
    }

    /// The next entry, without taking it.
    async fn peek(&mut self) -> Result<Option<&Delivered>, PlannerError> {
        while self.ahead.is_none() && !self.ended {
            if let Some(entry) = self.chunk.next() {
                if !self.last_key.is_empty() && entry.record_key <= self.last_key {
                    return Err(PlannerError::OutOfOrder {
                        sync: self.sync.clone(),
                        side: "the ledger".to_owned(),
                        detail: format!("key {:?} after {:?}", entry.record_key, self.last_key),
                    });
                }
                self.last_key.clear();
                self.last_key.push_str(&entry.record_key);
                self.ahead = Some(entry);
                break;
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) => self.chunk = chunk.into_iter(),
                Some(Err(e)) => return Err(e.into()),
                None => self.ended = true,
            }
        }
        Ok(self.ahead.as_ref())
    }

    async fn next(&mut self) -> Result<Option<Delivered>, PlannerError> {
        self.peek().await?;
        Ok(self.ahead.take())
    }
}

/// How a record the model and the ledger both have, or only the model,
/// differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Changed { flapping: bool },
    Unchanged,
}

fn change(hash: &[u8; 16], delivered: Option<&Delivered>) -> Change {
    match delivered {
        None => Change::Added,
        Some(d) if d.content_hash == Some(*hash) => Change::Unchanged,
        Some(d) => Change::Changed {
            flapping: d.previous_hashes.contains(hash),
        },
    }
}

/// The counts, samples and batch numbering of a plan as the merge goes,
/// and for a run, the rows it writes.
struct Plan<'s> {
    sync: &'s SyncConfig,
    rule: SendRule,
    batch_size: usize,
    counts: PlanCounts,
    rejections: Vec<PlanRejection>,
    flapping_keys: Vec<String>,
    writes: Vec<BatchWrites>,
    numbered: usize,
    writing: Option<Writing>,
}

impl<'s> Plan<'s> {
    fn new(
        sync: &'s SyncConfig,
        rule: SendRule,
        batch_size: usize,
        writing: Option<Writing>,
    ) -> Self {
        Plan {
            sync,
            rule,
            batch_size: batch_size.max(1),
            counts: PlanCounts::default(),
            rejections: Vec::new(),
            flapping_keys: Vec::new(),
            writes: Vec::new(),
            numbered: 0,
            writing,
        }
    }

    /// Ends the current key's group: the ledger entries before it are
    /// removed, and its rows are rejected or classified against the
    /// ledger's entry for it.
    async fn settle(
        &mut self,
        group: &mut Group,
        ledger: &mut LedgerCursor,
    ) -> Result<(), PlannerError> {
        if !group.started {
            return Ok(());
        }
        let mut delivered = None;
        while let Some(entry) = ledger.peek().await? {
            match entry.record_key.as_bytes().cmp(group.key.as_slice()) {
                Ordering::Less => {
                    if let Some(entry) = ledger.next().await? {
                        self.removed(entry)?;
                    }
                }
                Ordering::Equal => {
                    delivered = ledger.next().await?;
                    break;
                }
                Ordering::Greater => break,
            }
        }
        if group.rows.len() + group.rejected > 1 {
            return self.reject_duplicates(group, false);
        }
        let Some(row) = group.rows.pop() else {
            return Ok(());
        };
        let payload = match row.payload {
            Ok(payload) => payload,
            Err(problem) => return self.reject(row.key.as_deref(), &problem, &row.hash, None),
        };
        let key = row.key.as_deref().unwrap_or_default();
        let sends = match change(&row.hash, delivered.as_ref()) {
            Change::Added => {
                self.counts.added += 1;
                self.rule.mode.sends_added()
            }
            Change::Changed { flapping } => {
                self.counts.changed += 1;
                if flapping {
                    self.counts.flapping += 1;
                    if self.flapping_keys.len() < SAMPLE {
                        self.flapping_keys.push(key.to_owned());
                    }
                }
                self.rule.mode.sends_changed() || self.rule.full_resync
            }
            Change::Unchanged => {
                self.counts.unchanged += 1;
                if !self.rule.full_resync {
                    return Ok(());
                }
                true
            }
        };
        if !sends {
            self.counts.skipped_by_mode += 1;
            return Ok(());
        }
        let has_id = delivered.is_some_and(|d| d.destination_id.is_some());
        let batch_no = self.number(|w| {
            if has_id {
                w.updates_by_id += 1;
            } else {
                w.writes += 1;
            }
        });
        self.counts.to_send += 1;
        if let Some(writing) = &mut self.writing {
            writing.upsert_record(batch_no, key, &row.hash, &payload);
        }
        Ok(())
    }

    /// Numbers the next record sent into its batch.
    fn number(&mut self, kind: impl FnOnce(&mut BatchWrites)) -> usize {
        let batch_no = self.numbered / self.batch_size;
        if batch_no == self.writes.len() {
            self.writes.push(BatchWrites::default());
        }
        kind(&mut self.writes[batch_no]);
        self.numbered += 1;
        batch_no
    }

    /// Numbers the removals after the upserts; returns the number of the
    /// first.
    fn number_removals(&mut self) -> usize {
        let first = self.numbered;
        for _ in 0..self.counts.deletes {
            self.number(|w| w.removes += 1);
        }
        first
    }

    /// A delivered record the model no longer has.
    fn removed(&mut self, delivered: Delivered) -> Result<(), PlannerError> {
        self.counts.removed += 1;
        if !self.rule.mode.sends_removed() {
            return Ok(());
        }
        self.counts.deletes += 1;
        self.counts.to_send += 1;
        if let Some(writing) = &mut self.writing {
            writing
                .removals
                .push(|buf| {
                    push_escaped(buf, &delivered.record_key);
                    buf.push(b'\n');
                })
                .map_err(|e| spill_failed(self.sync, e))?;
        }
        Ok(())
    }

    fn reject_null_key(&mut self, row: Checked) -> Result<(), PlannerError> {
        let reason = format!(
            "primary key column `{}` is NULL; fix the model so every row has a key",
            self.sync.primary_key
        );
        let payload = row.payload.ok();
        self.reject(None, &reason, &row.hash, payload.as_deref())
    }

    /// Rejects the rows held of a duplicated key; `more` when more rows of
    /// it may follow (the count is then a lower bound).
    fn reject_duplicates(&mut self, group: &mut Group, more: bool) -> Result<(), PlannerError> {
        let copies = group.rows.len() + group.rejected;
        let key = String::from_utf8_lossy(&group.key).into_owned();
        let reason = format!(
            "duplicate primary key: {}{copies} rows of the model have `{}` = {key}; none of them is sent until the key is unique",
            if more || group.rejected > 0 {
                "at least "
            } else {
                ""
            },
            self.sync.primary_key
        );
        for row in std::mem::take(&mut group.rows) {
            let payload = row.payload.ok();
            self.reject(row.key.as_deref(), &reason, &row.hash, payload.as_deref())?;
        }
        group.rejected = copies;
        Ok(())
    }

    fn reject(
        &mut self,
        key: Option<&str>,
        reason: &str,
        hash: &[u8; 16],
        payload: Option<&str>,
    ) -> Result<(), PlannerError> {
        self.counts.rejected += 1;
        if self.rejections.len() < SAMPLE {
            self.rejections.push(PlanRejection {
                record_key: key.map(str::to_owned),
                reason: reason.to_owned(),
            });
        }
        if let Some(writing) = &mut self.writing {
            writing
                .rejection(key, reason, hash, payload)
                .map_err(|e| spill_failed(self.sync, e))?;
        }
        Ok(())
    }

    fn merged(self, batches: Vec<i32>) -> Diffed {
        Diffed {
            counts: self.counts,
            rejections: self.rejections,
            flapping_keys: self.flapping_keys,
            writes: self.writes,
            batches,
        }
    }
}

/// The rows a run's plan writes, as `COPY` text.
struct Writing {
    run_id: i64,
    /// `ebb_run_records` rows not sent yet.
    records: Vec<u8>,
    /// The keys of removed records, numbered once the upserts are.
    removals: Spill,
    /// `ebb_dlq` rows, written after the run's records.
    rejected: Spill,
    /// The columns every DLQ row of this plan starts with.
    rejection_prefix: Vec<u8>,
}

impl Writing {
    fn new(run_id: i64, sync: &SyncConfig) -> Writing {
        let mut rejection_prefix = Vec::new();
        push_escaped(&mut rejection_prefix, &sync.name);
        rejection_prefix.push(b'\t');
        push_escaped(&mut rejection_prefix, &sync.destination);
        rejection_prefix.extend_from_slice(b"\tplan\trejected\t");
        let mut records = Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024);
        copy_binary::push_header(&mut records);
        Writing {
            run_id,
            records,
            removals: Spill::default(),
            rejected: Spill::default(),
            rejection_prefix,
        }
    }

    fn upsert_record(&mut self, batch_no: usize, key: &str, hash: &[u8; 16], payload: &str) {
        self.record_start(batch_no, key.as_bytes(), b"upsert");
        let out = &mut self.records;
        copy_binary::push_bytes(out, hash);
        copy_binary::push_int8(out, self.run_id);
        copy_binary::push_bytes(out, payload.as_bytes());
    }

    /// A record's row up to its op, of [`RECORD_FIELDS`] in all.
    fn record_start(&mut self, batch_no: usize, key: &[u8], op: &[u8]) {
        let out = &mut self.records;
        copy_binary::push_row(out, RECORD_FIELDS);
        copy_binary::push_int8(out, self.run_id);
        // A plan of more than 2^31 batches fails at its batches' insert
        // (`batch_no` is an `int`), which rolls back what is written here.
        copy_binary::push_int4(out, i32::try_from(batch_no).unwrap_or(i32::MAX));
        copy_binary::push_bytes(out, key);
        copy_binary::push_bytes(out, op);
    }

    async fn send_records(&mut self, copy: &mut RecordsCopy<'_>) -> Result<(), PlannerError> {
        copy.send(self.records.as_slice())
            .await
            .map_err(StateError::query("writing the run's records"))?;
        self.records.clear();
        Ok(())
    }

    /// Writes the removals as records numbered from `first`, after the
    /// upserts (and the upserts not sent yet), and ends the COPY data.
    async fn finish_records(
        &mut self,
        copy: &mut RecordsCopy<'_>,
        first: usize,
        batch_size: usize,
        sync: &SyncConfig,
    ) -> Result<(), PlannerError> {
        let mut removals = std::mem::take(&mut self.removals);
        let mut chunks = removals.chunks().map_err(|e| spill_failed(sync, e))?;
        let mut lines = ebb_shared::copy_text::Rows::default();
        let mut numbered = first;
        let mut scratch = Vec::new();
        while let Some(chunk) = chunks.next_chunk().map_err(|e| spill_failed(sync, e))? {
            lines.push(&chunk, |key| {
                self.removal_record(numbered / batch_size, key, &mut scratch);
                numbered += 1;
            });
            self.send_records(copy).await?;
        }
        copy_binary::push_trailer(&mut self.records);
        self.send_records(copy).await
    }

    async fn send_rejections(
        &mut self,
        tx: &mut PgConnection,
        sync: &SyncConfig,
    ) -> Result<(), PlannerError> {
        let mut copy = tx
            .copy_in_raw(
                "COPY ebb_dlq (sync_name, destination, stage, kind, record_key, op, content_hash, \
                               snapshot_run_id, first_run_id, last_run_id, payload, reason) FROM STDIN",
            )
            .await
            .map_err(StateError::query("starting COPY of the planning rejections"))?;
        let mut chunks = self.rejected.chunks().map_err(|e| spill_failed(sync, e))?;
        loop {
            let chunk = match chunks.next_chunk() {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    let _ = copy.abort("reading the rejections back failed").await;
                    return Err(spill_failed(sync, e));
                }
            };
            copy.send(chunk.as_slice())
                .await
                .map_err(StateError::query(
                    "recording planning rejections in the DLQ",
                ))?;
        }
        copy.finish().await.map_err(StateError::query(
            "recording planning rejections in the DLQ",
        ))?;
        Ok(())
    }

    /// `key` as [`Plan::removed`] wrote it: already escaped.
    fn removal_record(&mut self, batch_no: usize, escaped_key: &[u8], scratch: &mut Vec<u8>) {
        let key = ebb_shared::copy_text::unescape(escaped_key, scratch);
        self.record_start(batch_no, key, b"delete");
        let out = &mut self.records;
        copy_binary::push_null(out);
        copy_binary::push_int8(out, self.run_id);
        copy_binary::push_null(out);
    }

    fn rejection(
        &mut self,
        key: Option<&str>,
        reason: &str,
        hash: &[u8; 16],
        payload: Option<&str>,
    ) -> io::Result<()> {
        let (prefix, run_id) = (&self.rejection_prefix, self.run_id);
        self.rejected.push(|out| {
            out.extend_from_slice(prefix);
            match key {
                Some(key) => push_escaped(out, key),
                None => out.extend_from_slice(b"\\N"),
            }
            out.extend_from_slice(b"\tupsert\t");
            push_bytea(out, hash);
            let _ = write!(out, "\t{run_id}\t{run_id}\t{run_id}\t");
            match payload {
                Some(payload) => push_escaped(out, payload),
                None => out.extend_from_slice(b"\\N"),
            }
            out.push(b'\t');
            push_escaped(out, reason);
            out.push(b'\n');
        })
    }
}

/// Bytes kept for later: in memory up to [`SPILL_IN_MEMORY_BYTES`], then
/// in an unnamed temporary file, so a plan that removes or rejects millions
/// of records holds no more memory than one that does not.
#[derive(Default)]
struct Spill {
    memory: Vec<u8>,
    file: Option<File>,
}

impl Spill {
    fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        write(&mut self.memory);
        if self.memory.len() >= SPILL_IN_MEMORY_BYTES {
            let file = match &mut self.file {
                Some(file) => file,
                None => self.file.insert(unnamed_file()?),
            };
            file.write_all(&self.memory)?;
            self.memory.clear();
        }
        Ok(())
    }

    /// Everything pushed, in order.
    fn chunks(&mut self) -> io::Result<SpillChunks<'_>> {
        if let Some(file) = &mut self.file {
            file.rewind()?;
        }
        Ok(SpillChunks {
            file: self.file.as_mut(),
            memory: Some(&self.memory),
        })
    }
}

struct SpillChunks<'a> {
    file: Option<&'a mut File>,
    memory: Option<&'a Vec<u8>>,
}

impl SpillChunks<'_> {
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if let Some(file) = &mut self.file {
            let mut chunk = Vec::with_capacity(COPY_CHUNK_BYTES);
            file.take(COPY_CHUNK_BYTES as u64).read_to_end(&mut chunk)?;
            if !chunk.is_empty() {
                return Ok(Some(chunk));
            }
            self.file = None;
        }
        Ok(self.memory.take().filter(|m| !m.is_empty()).cloned())
    }
}

/// A temporary file no other process can find: unlinked as soon as it is
/// open, so nothing is left behind however the planner ends.
fn unnamed_file() -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "ebb-plan-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, AtomicOrdering::Relaxed)
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::snapshot::content_hash;

    fn delivered(key: &str, hash: u8, previous: &[u8]) -> Delivered {
        Delivered {
            record_key: key.to_owned(),
            content_hash: Some([hash; 16]),
            destination_id: None,
            previous_hashes: previous.iter().map(|&h| [h; 16]).collect(),
        }
    }

    #[test]
    fn a_record_is_added_unchanged_changed_or_flapping() {
        assert_eq!(change(&[1; 16], None), Change::Added);
        assert_eq!(
            change(&[1; 16], Some(&delivered("k", 1, &[]))),
            Change::Unchanged
        );
        assert_eq!(
            change(&[2; 16], Some(&delivered("k", 1, &[3]))),
            Change::Changed { flapping: false }
        );
        assert_eq!(
            change(&[3; 16], Some(&delivered("k", 1, &[2, 3]))),
            Change::Changed { flapping: true }
        );
        let marked_for_resend = Delivered {
            content_hash: None,
            ..delivered("k", 1, &[])
        };
        assert_eq!(
            change(&[1; 16], Some(&marked_for_resend)),
            Change::Changed { flapping: false }
        );
    }

    fn sync(mode: &str) -> SyncConfig {
        crate::plan::test_sync(&format!("mode = \"{mode}\""))
    }

    fn row(key: Option<&str>, payload: &str) -> SourceRow {
        SourceRow {
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn entry(key: &str, payload: &str, id: Option<&str>, previous: &[&str]) -> Delivered {
        Delivered {
            record_key: key.to_owned(),
            content_hash: Some(content_hash(payload)),
            destination_id: id.map(str::to_owned),
            previous_hashes: previous.iter().map(|p| content_hash(p)).collect(),
        }
    }

    fn model(rows: Vec<SourceRow>) -> BoxStream<'static, Result<SourceRow, SourceError>> {
        futures::stream::iter(rows.into_iter().map(Ok)).boxed()
    }

    fn ledger(chunks: Vec<Vec<Delivered>>) -> LedgerCursor {
        LedgerCursor::reading(
            "s",
            futures::stream::iter(chunks.into_iter().map(Ok)).boxed(),
        )
    }

    #[tokio::test]
    async fn one_pass_classifies_numbers_and_writes_like_the_snapshot_diff() {
        let sync = sync("mirror");
        let rule = SendRule {
            mode: sync.mode,
            full_resync: false,
        };
        let mut plan = Plan::new(&sync, rule, 2, Some(Writing::new(7, &sync)));
        let rows = vec![
            row(None, "{\"n\": 0}"),
            row(Some("a"), "{\"n\": 1}"),
            row(Some("b"), "{\"n\": 2}"),
            row(Some("d"), "{\"n\": 4}"),
            row(Some("d"), "{\"n\": 5}"),
            row(Some("e"), "{\"n\": 6}"),
            row(Some("f"), "{\"n\": 7}"),
        ];
        // "b" changes back to a version delivered before; "c" is gone from
        // the model; "d", delivered once, is now duplicated; "e" has the
        // destination's id.
        let delivered = vec![
            vec![
                entry("a", "{\"n\": 1}", None, &[]),
                entry("b", "{\"n\": 1}", None, &["{\"n\": 2}"]),
            ],
            vec![],
            vec![
                entry("c", "{\"n\": 3}", None, &[]),
                entry("d", "{\"n\": 4}", None, &[]),
                entry("e", "{}", Some("id-e"), &[]),
            ],
        ];
        read(&mut plan, model(rows), ledger(delivered), "wh", None)
            .await
            .expect("merge");
        let first_removal = plan.number_removals();
        assert_eq!(first_removal, 3, "removals are numbered after the upserts");
        let c = &plan.counts;
        assert_eq!(
            (
                c.rows_read,
                c.added,
                c.changed,
                c.unchanged,
                c.removed,
                c.rejected
            ),
            (7, 1, 2, 1, 1, 3)
        );
        assert_eq!(
            (c.to_send, c.deletes, c.flapping, c.skipped_by_mode),
            (4, 1, 1, 0)
        );
        assert_eq!(plan.flapping_keys, ["b"]);
        assert_eq!(
            plan.writes,
            [
                BatchWrites {
                    removes: 0,
                    updates_by_id: 1,
                    writes: 1
                },
                BatchWrites {
                    removes: 1,
                    updates_by_id: 0,
                    writes: 1
                },
            ]
        );
        let reasons: Vec<(Option<&str>, &str)> = plan
            .rejections
            .iter()
            .map(|r| (r.record_key.as_deref(), r.reason.as_str()))
            .collect();
        let duplicate = "duplicate primary key: 2 rows of the model have `id` = d; none of them is sent until the key is unique";
        assert_eq!(
            reasons,
            [
                (
                    None,
                    "primary key column `id` is NULL; fix the model so every row has a key"
                ),
                (Some("d"), duplicate),
                (Some("d"), duplicate),
            ]
        );

        let writing = plan.writing.as_mut().expect("a run writes");
        let rows = written_records(&writing.records);
        let keys: Vec<(&[u8], &[u8], &[u8])> = rows
            .iter()
            .map(|r| {
                (
                    r[1].as_deref().unwrap_or_default(),
                    r[2].as_deref().unwrap_or_default(),
                    r[3].as_deref().unwrap_or_default(),
                )
            })
            .collect();
        let batch = |n: i32| n.to_be_bytes();
        assert_eq!(
            keys,
            [
                (&batch(0)[..], &b"b"[..], &b"upsert"[..]),
                (&batch(0)[..], &b"e"[..], &b"upsert"[..]),
                (&batch(1)[..], &b"f"[..], &b"upsert"[..])
            ]
        );
        let run = Some(7i64.to_be_bytes().to_vec());
        assert_eq!(rows[0][0], run);
        assert_eq!(rows[0][4], Some(content_hash("{\"n\": 2}").to_vec()));
        assert_eq!(rows[0][5], run);
        assert_eq!(rows[0][6].as_deref(), Some(&b"{\"n\": 2}"[..]));
        writing.records.clear();
        copy_binary::push_header(&mut writing.records);
        writing.removal_record(1, b"c\\td", &mut Vec::new());
        assert_eq!(
            written_records(&writing.records),
            [vec![
                run.clone(),
                Some(1i32.to_be_bytes().to_vec()),
                Some(b"c\td".to_vec()),
                Some(b"delete".to_vec()),
                None,
                run,
                None
            ]]
        );
        let mut removed = Vec::new();
        let mut chunks = writing.removals.chunks().expect("removals");
        while let Some(chunk) = chunks.next_chunk().expect("chunk") {
            removed.extend_from_slice(&chunk);
        }
        assert_eq!(removed, b"c\n");
        let mut rejected = Vec::new();
        let mut chunks = writing.rejected.chunks().expect("rejections");
        while let Some(chunk) = chunks.next_chunk().expect("chunk") {
            rejected.extend_from_slice(&chunk);
        }
        let rejected = String::from_utf8(rejected).expect("text");
        let first: Vec<&str> = rejected
            .lines()
            .next()
            .expect("a row")
            .split('\t')
            .collect();
        assert_eq!(
            &first[..6],
            ["s", "sink", "plan", "rejected", "\\N", "upsert"]
        );
        assert_eq!(first[10], "{\"n\": 0}");
        assert_eq!(rejected.lines().count(), 3);
    }

    /// The rows of a binary COPY of run records, each field's bytes.
    fn written_records(data: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        let mut rows = Vec::new();
        copy_binary::Rows::default()
            .push(data, |fields| {
                rows.push(fields.iter().map(|f| f.map(<[u8]>::to_vec)).collect());
            })
            .expect("binary COPY data");
        rows
    }

    #[tokio::test]
    async fn modes_and_full_resyncs_send_their_classes_only() {
        let delivered = || {
            vec![vec![
                entry("a", "{\"n\": 1}", Some("1"), &[]),
                entry("b", "{\"n\": 1}", None, &[]),
                entry("c", "{}", None, &[]),
            ]]
        };
        let rows = || {
            vec![
                row(Some("a"), "{\"n\": 1}"),
                row(Some("b"), "{\"n\": 2}"),
                row(Some("d"), "{\"n\": 3}"),
            ]
        };
        // (mode, full resync) -> (to_send, skipped_by_mode, deletes)
        for (mode, full_resync, expected) in [
            ("upsert", false, (2, 0, 0)),
            ("update", false, (1, 1, 0)),
            ("insert", false, (1, 1, 0)),
            ("mirror", false, (3, 0, 1)),
            ("upsert", true, (3, 0, 0)),
            ("update", true, (2, 1, 0)),
        ] {
            let sync = sync(mode);
            let rule = SendRule {
                mode: sync.mode,
                full_resync,
            };
            let mut plan = Plan::new(&sync, rule, 100, None);
            read(&mut plan, model(rows()), ledger(delivered()), "wh", None)
                .await
                .expect("merge");
            let c = &plan.counts;
            assert_eq!(
                (c.to_send, c.skipped_by_mode, c.deletes),
                expected,
                "{mode}, full resync {full_resync}"
            );
            assert_eq!((c.added, c.changed, c.unchanged, c.removed), (1, 1, 1, 1));
        }
    }

    #[tokio::test]
    async fn keys_out_of_order_or_a_lost_ledger_reader_stop_the_plan() {
        let sync = sync("mirror");
        let rule = SendRule {
            mode: sync.mode,
            full_resync: false,
        };
        let mut plan = Plan::new(&sync, rule, 100, None);
        let rows = vec![row(Some("b"), "{}"), row(Some("a"), "{}")];
        let error = read(&mut plan, model(rows), ledger(vec![]), "wh", None)
            .await
            .expect_err("out of order");
        assert!(
            error.to_string().contains("key \"a\" after \"b\""),
            "{error}"
        );

        let mut plan = Plan::new(&sync, rule, 100, None);
        let rows = vec![row(Some("a"), "{}"), row(None, "{}")];
        let error = read(&mut plan, model(rows), ledger(vec![]), "wh", None)
            .await
            .expect_err("NULL last");
        assert!(
            error.to_string().contains("a NULL key after keys"),
            "{error}"
        );

        let mut plan = Plan::new(&sync, rule, 100, None);
        let unordered = vec![vec![
            entry("b", "{}", None, &[]),
            entry("a", "{}", None, &[]),
        ]];
        let error = read(
            &mut plan,
            model(vec![row(Some("c"), "{}")]),
            ledger(unordered),
            "wh",
            None,
        )
        .await
        .expect_err("ledger out of order");
        assert!(
            error
                .to_string()
                .contains("the ledger did not come in key order"),
            "{error}"
        );

        // A reader that dies is not a ledger that ended: nothing would be
        // found removed, and everything added.
        let mut plan = Plan::new(&sync, rule, 100, None);
        let dead = LedgerCursor::reading(
            "s",
            ebb_shared::read_ahead::read_ahead(
                1,
                |_| async { panic!("the reader fails") },
                || StateError::Corrupt {
                    context: "reading the ledger in key order",
                    message: "the ledger's reader stopped before the ledger's end".to_owned(),
                },
            ),
        );
        let error = read(
            &mut plan,
            model(vec![row(Some("c"), "{}")]),
            dead,
            "wh",
            None,
        )
        .await
        .expect_err("a dead reader");
        assert!(
            error
                .to_string()
                .contains("stopped before the ledger's end"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_key_duplicated_past_what_is_held_is_rejected_row_by_row() {
        let sync = sync("upsert");
        let rule = SendRule {
            mode: sync.mode,
            full_resync: false,
        };
        let mut plan = Plan::new(&sync, rule, 100, None);
        let copies = DUPLICATES_HELD * 2 + 5;
        let mut rows: Vec<SourceRow> = (0..copies)
            .map(|i| row(Some("k"), &format!("{{\"n\": {i}}}")))
            .collect();
        rows.push(row(Some("z"), "{}"));
        read(&mut plan, model(rows), ledger(vec![]), "wh", None)
            .await
            .expect("merge");
        assert_eq!(plan.counts.rejected, copies as i64);
        assert_eq!(plan.counts.added, 1, "the next key is planned as usual");
        assert!(
            plan.rejections[0].reason.starts_with(&format!(
                "duplicate primary key: at least {DUPLICATES_HELD} rows"
            )),
            "{:?}",
            plan.rejections[0]
        );
    }

    #[test]
    fn a_spill_gives_back_what_it_was_given_past_its_memory() {
        let mut spill = Spill::default();
        let line = vec![b'x'; 1000];
        let total = SPILL_IN_MEMORY_BYTES * 2 + 12_345;
        let mut pushed = 0;
        let mut n = 0u32;
        while pushed < total {
            spill
                .push(|buf| {
                    buf.extend_from_slice(&n.to_be_bytes());
                    buf.extend_from_slice(&line);
                })
                .expect("push");
            pushed += 1004;
            n += 1;
        }
        assert!(
            spill.file.is_some(),
            "past its memory, a spill goes to a file"
        );
        let mut back = Vec::new();
        let mut chunks = spill.chunks().expect("chunks");
        while let Some(chunk) = chunks.next_chunk().expect("chunk") {
            assert!(chunk.len() <= COPY_CHUNK_BYTES);
            back.extend_from_slice(&chunk);
        }
        assert_eq!(back.len(), pushed);
        for (i, record) in back.chunks(1004).enumerate() {
            assert_eq!(record[..4], (i as u32).to_be_bytes(), "record {i} in order");
        }
    }
}
