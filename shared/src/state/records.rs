//! `ebb_run_records`: each record version a run sends, with its batch and,
//! once settled, its outcome. Written by the planner (a sync's diff, a DLQ
//! replay), read and settled by the workers; its payload is dropped when
//! the run ends, and the rest after the retention period, so a run's
//! per-record outcomes can be read meanwhile.

use sqlx::{PgConnection, PgPool};

use crate::error::StateError;

/// What to do with a record in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }

    /// The op stored in `ebb_run_records.op`.
    pub fn from_stored(op: &str) -> Op {
        if op == "delete" {
            Op::Delete
        } else {
            Op::Upsert
        }
    }
}

/// How a record of a run ended (`ebb_run_records.outcome`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The destination acknowledged it; the ledger holds it.
    Delivered,
    /// The destination refused it; it is in the DLQ.
    Rejected,
    /// It could not be delivered (retries spent, the destination
    /// misconfigured, a quarantined batch); it is in the DLQ.
    Failed,
    /// A newer version was delivered already; it was not sent.
    Superseded,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Delivered,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Superseded,
    ];

    /// The outcome named `text` (`delivered`, `rejected`, …).
    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Superseded => "superseded",
        }
    }
}

/// A record of a batch that has no outcome yet, as a worker loads it, with
/// what the ledger knows of its key.
#[derive(Debug, sqlx::FromRow)]
pub struct UnsettledRecord {
    pub record_key: String,
    pub op: String,
    /// The mapped fields as JSON text (None for deletes).
    pub payload: Option<String>,
    pub content_hash: Option<Vec<u8>>,
    pub snapshot_run_id: i64,
    /// The ledger holds a newer version than this one (a replay of an old
    /// DLQ entry): sending it would overwrite newer data.
    pub stale: bool,
    /// The destination's id for the key, from the ledger.
    pub destination_id: Option<String>,
    /// The digest of the fields of the version the ledger holds (see
    /// `destinations::util::field_digest`).
    pub field_digest: Option<Vec<u8>>,
    /// The record's run is a full resync: every field is written again.
    pub full_resync: bool,
    /// The ledger holds a version of the key.
    pub in_ledger: bool,
}

/// A batch's records that have no outcome yet, in key order.
pub async fn unsettled_of_batch(
    pool: &PgPool,
    run_id: i64,
    batch_no: i32,
    sync: &str,
) -> Result<Vec<UnsettledRecord>, StateError> {
    // One ledger lookup per record, by its key: the LIMIT keeps Postgres
    // from flattening the lateral subquery into a join, which sometimes got
    // a generic plan that hashed the whole ledger. (Three scalar subqueries,
    // one per ledger column, did the same lookup three times: 2.5× the time
    // of this load against a 1,000,000-record ledger.)
    //
    // The lookups are skipped when no ledger key falls between the batch's
    // first and last key, which is every batch of a first sync (the merge
    // numbers batches in key order): one range probe of the ledger's key
    // instead of 1,000 lookups, 60% of this load's time in such a batch.
    // The bounds are scalar subqueries so that Postgres computes them once
    // and probes the index with them (as a join, it scanned the ledger).
    sqlx::query_as(
        "SELECT rr.record_key, rr.op, rr.payload, rr.content_hash, rr.snapshot_run_id, \
                COALESCE(l.snapshot_run_id > rr.snapshot_run_id, false) AS stale, \
                l.destination_id, l.field_digest, \
                COALESCE((SELECT r.full_resync FROM ebb_runs r WHERE r.id = $1), false) AS full_resync, \
                l.snapshot_run_id IS NOT NULL AS in_ledger \
         FROM ebb_run_records rr \
         LEFT JOIN LATERAL (SELECT l.snapshot_run_id, l.destination_id, l.field_digest FROM ebb_ledger l \
                            WHERE (SELECT EXISTS (SELECT FROM ebb_ledger g WHERE g.sync_name = $3 \
                                       AND g.record_key >= (SELECT min(b.record_key) FROM ebb_run_records b \
                                                            WHERE b.run_id = $1 AND b.batch_no = $2) \
                                       AND g.record_key <= (SELECT max(b.record_key) FROM ebb_run_records b \
                                                            WHERE b.run_id = $1 AND b.batch_no = $2))) \
                              AND l.sync_name = $3 AND l.record_key = rr.record_key LIMIT 1) l ON true \
         WHERE rr.run_id = $1 AND rr.batch_no = $2 AND rr.outcome IS NULL \
         ORDER BY rr.record_key",
    )
    .bind(run_id)
    .bind(batch_no)
    .bind(sync)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("loading a batch's records"))
}

/// The outcome of a batch's records still without one (`$1` run, `$2`
/// batch, `$3` outcome, `$4` whether the payload goes).
macro_rules! set_outcome {
    () => {
        "UPDATE ebb_run_records SET outcome = $3, payload = CASE WHEN $4 THEN NULL ELSE payload END \
         WHERE run_id = $1 AND batch_no = $2 AND outcome IS NULL"
    };
}

/// Records the outcome of each key of a batch, and drops the payloads of
/// those delivered or superseded. `outcomes` holds every record of the
/// batch still without one, as the claim holder loaded them.
pub async fn set_outcomes(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
    outcomes: &[(&str, Outcome)],
) -> Result<(), StateError> {
    let mut by_outcome: Vec<(Outcome, Vec<&str>)> = Vec::new();
    for (key, outcome) in outcomes {
        match by_outcome.iter_mut().find(|(o, _)| o == outcome) {
            Some((_, keys)) => keys.push(key),
            None => by_outcome.push((*outcome, vec![*key])),
        }
    }
    // One outcome for the whole batch (the usual case) is one walk along
    // the batch's range of the primary key, half the time of looking each
    // key up; otherwise one statement per outcome, each an index lookup by
    // `record_key = ANY(…)`. (A join on UNNEST looked the same but, once
    // Postgres switched the prepared statement to a generic plan, scanned
    // the whole run: 10× slower settles mid-run.)
    let whole_batch = by_outcome.len() == 1;
    for (outcome, keys) in &by_outcome {
        // A record delivered or superseded needs its payload no more: it
        // goes in the same write as the outcome. Releasing them all when
        // the run ends rewrote every record of the run a second time (11 s
        // of a 1,000,000-record first sync). A refused or failed record
        // keeps it until the DLQ has copied it (see `release_payloads`).
        let drops_payload = matches!(outcome, Outcome::Delivered | Outcome::Superseded);
        let sql = if whole_batch {
            set_outcome!()
        } else {
            concat!(set_outcome!(), " AND record_key = ANY($5)")
        };
        let mut query = sqlx::query(sql)
            .bind(run_id)
            .bind(batch_no)
            .bind(outcome.as_str())
            .bind(drops_payload);
        if !whole_batch {
            query = query.bind(keys);
        }
        let updated = query
            .execute(&mut *tx)
            .await
            .map_err(StateError::query("recording record outcomes"))?;
        if whole_batch && updated.rows_affected() != keys.len() as u64 {
            return Err(StateError::Corrupt {
                context: "recording record outcomes",
                message: format!(
                    "batch {batch_no} of run {run_id} has {} records without an outcome, but {} were settled",
                    updated.rows_affected(),
                    keys.len()
                ),
            });
        }
    }
    Ok(())
}

/// Copies the open destination-stage DLQ entries of `sync` (only `ids`,
/// when given) into run `run_id`'s records, `batch_size` a batch. Returns
/// how many.
pub async fn replay_from_dlq(
    tx: &mut PgConnection,
    run_id: i64,
    sync: &str,
    ids: Option<&[i64]>,
    batch_size: usize,
) -> Result<i64, StateError> {
    let written = sqlx::query(
        "INSERT INTO ebb_run_records (run_id, batch_no, record_key, op, content_hash, snapshot_run_id, payload) \
         SELECT $3, ((row_number() OVER (ORDER BY d.id)) - 1) / $4, d.record_key, d.op, d.content_hash, d.snapshot_run_id, d.payload::text \
         FROM ebb_dlq d \
         WHERE d.status = 'open' AND d.stage = 'destination' AND d.sync_name = $1 \
           AND ($2::bigint[] IS NULL OR d.id = ANY($2)) AND d.record_key IS NOT NULL",
    )
    .bind(sync)
    .bind(ids)
    .bind(run_id)
    .bind(batch_size as i64)
    .execute(&mut *tx)
    .await
    .map_err(StateError::query("writing the replay's records"))?;
    Ok(written.rows_affected() as i64)
}

/// Drops the payloads a run's records still hold once it has ended (those
/// refused, failed or never settled: [`set_outcomes`] drops the others),
/// keeping each record's key, op and outcome for the run's history (the
/// ledger and the DLQ keep what outlives the run). `false` when the run has
/// not ended.
pub async fn release_payloads(pool: &PgPool, run_id: i64) -> Result<bool, StateError> {
    // (ended, some record may still hold its payload). A run whose batches
    // all settled with nothing refused or failed holds none: the search
    // would read every record of the run (a second after a 1,000,000-record
    // first sync, for nothing).
    let standing: Option<(bool, bool)> = sqlx::query_as(
        "SELECT state IN ('succeeded', 'failed', 'cancelled'), \
                rejected + failed > 0 OR batches_settled < batches_total \
         FROM ebb_runs WHERE id = $1",
    )
    .bind(run_id)
    .fetch_optional(pool)
    .await
    .map_err(StateError::query("reading whether a run ended"))?;
    let Some((true, holds_payloads)) = standing else {
        return Ok(false);
    };
    if holds_payloads {
        sqlx::query(
            "UPDATE ebb_run_records SET payload = NULL WHERE run_id = $1 AND payload IS NOT NULL",
        )
        .bind(run_id)
        .execute(pool)
        .await
        .map_err(StateError::query("releasing a run's payloads"))?;
    }
    Ok(true)
}

/// Deletes the records of runs that ended more than `days` days ago; their
/// totals stay on the run. Returns how many runs lost their records.
pub async fn delete_older_than(pool: &PgPool, days: u32) -> Result<u64, StateError> {
    let runs: Vec<i64> = sqlx::query_scalar(
        "UPDATE ebb_runs SET records_purged = true \
         WHERE NOT records_purged AND state IN ('succeeded', 'failed', 'cancelled') \
           AND finished_at < now() - make_interval(days => $1) RETURNING id",
    )
    .bind(days as i32)
    .fetch_all(pool)
    .await
    .map_err(StateError::query("choosing runs past their retention"))?;
    if runs.is_empty() {
        return Ok(0);
    }
    sqlx::query("DELETE FROM ebb_run_records WHERE run_id = ANY($1)")
        .bind(&runs)
        .execute(pool)
        .await
        .map_err(StateError::query("deleting records past their retention"))?;
    Ok(runs.len() as u64)
}

/// One record of a run, as the run's history shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunRecord {
    pub record_key: String,
    /// `upsert` or `delete`.
    pub op: String,
    pub batch_no: i32,
    /// `delivered`, `rejected`, `failed` or `superseded`; none while the
    /// record is not settled (or its run was cancelled before sending it).
    pub outcome: Option<String>,
    /// Why it was rejected or failed, from its DLQ entry.
    pub reason: Option<String>,
}

/// Which records of a run to list, in key order.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter<'a> {
    /// This key only.
    pub key: Option<&'a str>,
    pub outcome: Option<Outcome>,
    /// Only keys after this one (the page after a cursor).
    pub after_key: Option<&'a str>,
    pub limit: i64,
}

/// A run's records, with the reasons of those that were dead-lettered.
///
/// The primary key (run_id, batch_no, record_key) holds each batch's
/// records in key order, so a page in key order is the first `limit`
/// matching records of each batch, merged: one short index walk per batch
/// (a key search is one lookup per batch). An index by (run_id,
/// record_key) answered this directly, but the planner paid for it on
/// every record it wrote (migration 0019).
pub async fn of_run(
    pool: &PgPool,
    run_id: i64,
    filter: &RecordFilter<'_>,
) -> Result<Vec<RunRecord>, StateError> {
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "SELECT p.record_key, p.op, p.batch_no, p.outcome, \
                (SELECT d.reason FROM ebb_dlq d JOIN ebb_runs r ON r.id = p.run_id \
                 WHERE d.sync_name = r.sync_name AND d.record_key = p.record_key \
                   AND d.last_run_id = p.run_id AND d.stage = 'destination' \
                 ORDER BY d.id DESC LIMIT 1) AS reason \
         FROM (SELECT rr.* FROM ebb_batches b \
               CROSS JOIN LATERAL (SELECT r.run_id, r.record_key, r.op, r.batch_no, r.outcome \
                   FROM ebb_run_records r WHERE r.run_id = b.run_id AND r.batch_no = b.batch_no",
    );
    if let Some(key) = filter.key {
        query.push(" AND r.record_key = ").push_bind(key);
    }
    if let Some(after) = filter.after_key {
        query.push(" AND r.record_key > ").push_bind(after);
    }
    if let Some(outcome) = filter.outcome {
        query.push(" AND r.outcome = ").push_bind(outcome.as_str());
    }
    query
        .push(" ORDER BY r.record_key LIMIT ")
        .push_bind(filter.limit)
        .push(") rr WHERE b.run_id = ")
        .push_bind(run_id)
        .push(" ORDER BY rr.record_key LIMIT ")
        .push_bind(filter.limit)
        .push(") p ORDER BY p.record_key");
    query
        .build_query_as()
        .fetch_all(pool)
        .await
        .map_err(StateError::query("listing a run's records"))
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn outcomes_are_parsed_by_the_names_they_are_stored_under() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("Delivered"), None);
        assert_eq!(Outcome::parse("pending"), None);
    }
}
