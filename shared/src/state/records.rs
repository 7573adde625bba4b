//! `ebb_run_records`: each record version a run sends, with its batch and,
//! once settled, its outcome. Written by the planner (a sync's diff, a DLQ
//! replay), read and settled by the workers, purged when the run ends.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// A batch's records that have no outcome yet, in key order.
pub async fn unsettled_of_batch(
    pool: &PgPool,
    run_id: i64,
    batch_no: i32,
    sync: &str,
) -> Result<Vec<UnsettledRecord>, StateError> {
    // Scalar subqueries, so each record stays one index lookup in the
    // ledger: a join here sometimes got a generic plan that hashed the
    // whole ledger.
    sqlx::query_as(
        "SELECT rr.record_key, rr.op, rr.payload::text AS payload, rr.content_hash, rr.snapshot_run_id, \
                COALESCE((SELECT l.snapshot_run_id > rr.snapshot_run_id FROM ebb_ledger l \
                          WHERE l.sync_name = $3 AND l.record_key = rr.record_key), false) AS stale, \
                (SELECT l.destination_id FROM ebb_ledger l \
                 WHERE l.sync_name = $3 AND l.record_key = rr.record_key) AS destination_id \
         FROM ebb_run_records rr \
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

/// Records the outcome of each key of a batch (those still without one).
pub async fn set_outcomes(
    tx: &mut PgConnection,
    run_id: i64,
    batch_no: i32,
    outcomes: &[(&str, Outcome)],
) -> Result<(), StateError> {
    // One statement per outcome (usually one), each an index lookup by
    // `record_key = ANY(…)`. A join on UNNEST looked the same but, once
    // Postgres switched the prepared statement to a generic plan, scanned
    // the whole run: 10× slower settles mid-run.
    let mut by_outcome: Vec<(Outcome, Vec<&str>)> = Vec::new();
    for (key, outcome) in outcomes {
        match by_outcome.iter_mut().find(|(o, _)| o == outcome) {
            Some((_, keys)) => keys.push(key),
            None => by_outcome.push((*outcome, vec![*key])),
        }
    }
    for (outcome, keys) in &by_outcome {
        sqlx::query(
            "UPDATE ebb_run_records SET outcome = $3 \
             WHERE run_id = $1 AND batch_no = $2 AND record_key = ANY($4) AND outcome IS NULL",
        )
        .bind(run_id)
        .bind(batch_no)
        .bind(outcome.as_str())
        .bind(keys)
        .execute(&mut *tx)
        .await
        .map_err(StateError::query("recording record outcomes"))?;
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
         SELECT $3, ((row_number() OVER (ORDER BY d.id)) - 1) / $4, d.record_key, d.op, d.content_hash, d.snapshot_run_id, d.payload \
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

/// Frees the per-run record copies once a run has ended; the ledger and the
/// DLQ keep what outlives the run.
pub async fn purge(pool: &PgPool, run_id: i64) -> Result<u64, StateError> {
    let done = sqlx::query(
        "DELETE FROM ebb_run_records rr USING ebb_runs r \
         WHERE rr.run_id = $1 AND r.id = rr.run_id AND r.state IN ('succeeded', 'failed')",
    )
    .bind(run_id)
    .execute(pool)
    .await
    .map_err(StateError::query("purging run records"))?;
    Ok(done.rows_affected())
}
