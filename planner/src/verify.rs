//! `ebb verify`: read delivered records back from the destination and
//! compare them with what Ebb delivered, field by field.
//!
//! What was delivered is the ledger's version of each record; its payload
//! is the model's row when that row still hashes to the same version, so
//! the model is snapshotted (as a dry run does) and only records unchanged
//! since delivery are checked: the others are pending, the next run sends
//! them. Each drifted record (missing, different, or extra in mirror mode)
//! is stored with the verification; `--resend` marks them so the next run
//! writes them again.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use ebb_shared::StateError;
use ebb_shared::config::{Config, DEFAULT_VERIFY_SAMPLE, SyncConfig, SyncMode};
use ebb_shared::destinations::record::{BatchContext, Op, OutboundRecord};
use ebb_shared::destinations::util::verify::differences;
use ebb_shared::destinations::{self, Destination, util};
use ebb_shared::sources::source::resolve_mapping;
use ebb_shared::state::verifications::{self, Drift, DriftKind, Totals, Verification};
use sqlx::PgPool;

use crate::error::PlannerError;
use crate::plan::{batch_size, diff, open_source, snapshot};

/// Which delivered records a verification reads back.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// This many, at random.
    Sample(u64),
    All,
}

/// The largest `sample` one may ask for; `all` reads every record.
pub const MAX_SAMPLE: u64 = 1_000_000_000;

impl Scope {
    /// `sample = N` or `all = true` of `[syncs.NAME.verify]`.
    pub fn of(sample: Option<u64>) -> Scope {
        sample.map_or(Scope::All, Scope::Sample)
    }

    /// What `ebb verify` or the API asked for: every record with `all`
    /// (a `sample` is then ignored), else `sample` records (100 unless
    /// given), from 1 to [`MAX_SAMPLE`].
    pub fn asked(sample: Option<u64>, all: bool) -> Result<Scope, String> {
        match (sample, all) {
            (_, true) => Ok(Scope::All),
            (Some(n), false) if !(1..=MAX_SAMPLE).contains(&n) => Err(format!(
                "`sample` must be between 1 and {MAX_SAMPLE}, got {n} (or ask for all records)"
            )),
            (sample, false) => Ok(Scope::Sample(sample.unwrap_or(DEFAULT_VERIFY_SAMPLE))),
        }
    }
}

/// Verifies `sync` and stores the result; a verification that could not
/// finish is stored failed, with its error, and returned as the error.
pub async fn verify(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    scope: Scope,
    trigger: &str,
) -> Result<Verification, PlannerError> {
    let id = start(pool, sync, scope, trigger).await?;
    verify_started(config, pool, sync, scope, id).await
}

/// Records a verification of `sync` as running; [`verify_started`] does it.
pub async fn start(
    pool: &PgPool,
    sync: &SyncConfig,
    scope: Scope,
    trigger: &str,
) -> Result<i64, PlannerError> {
    Ok(verifications::start(
        pool,
        &sync.name,
        &sync.destination,
        trigger,
        matches!(scope, Scope::All),
    )
    .await?)
}

/// Does the verification [`start`] recorded.
pub async fn verify_started(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    scope: Scope,
    id: i64,
) -> Result<Verification, PlannerError> {
    match check(config, pool, sync, scope, id).await {
        Ok(totals) => {
            verifications::finish(pool, id, &totals, None).await?;
            Ok(verifications::get(pool, id).await?)
        }
        Err(e) => {
            verifications::finish(pool, id, &Totals::default(), Some(&e.to_string())).await?;
            Err(e)
        }
    }
}

async fn check(
    config: &Config,
    pool: &PgPool,
    sync: &SyncConfig,
    scope: Scope,
    id: i64,
) -> Result<Totals, PlannerError> {
    let destination = build_destination(config, pool, sync).await?;
    let ctx = BatchContext {
        sync: sync.name.clone(),
        destination: sync.destination.clone(),
        run_id: 0,
        batch_no: 0,
        new_keys_only: false,
    };
    if destination.read_back(&ctx, &[]).is_none() {
        let kind = config
            .destination(&sync.destination)
            .map(|d| d.type_name())
            .unwrap_or("unknown");
        return Err(PlannerError::Usage(format!(
            "sync `{}`: the {kind} destination `{}` cannot be read back, so it cannot be verified (postgres, hubspot, salesforce and mailchimp can)",
            sync.name, sync.destination
        )));
    }
    let source = open_source(config, sync).await?;
    let mapping = resolve_mapping(source.as_ref(), sync).await?;
    let mut tx = pool
        .begin()
        .await
        .map_err(StateError::query("starting a verification"))?;
    snapshot::snapshot(&mut tx, source.as_ref(), sync, &mapping, None).await?;
    let mut totals = Totals {
        pending: diff::delivered_pending(&mut tx, &sync.name).await?,
        ..Totals::default()
    };
    let sample = match scope {
        Scope::Sample(n) => Some(n.min(i64::MAX as u64) as i64),
        Scope::All => None,
    };
    let chunk_size = batch_size(config, sync)?;
    {
        let mut delivered =
            diff::delivered_unchanged(&mut tx, &sync.name, sample).chunks(chunk_size);
        while let Some(chunk) = delivered.next().await {
            let records = chunk
                .into_iter()
                .map(|row| row.map(outbound))
                .collect::<Result<Result<Vec<_>, _>, _>>()
                .map_err(StateError::query("reading delivered records to verify"))?
                .map_err(PlannerError::Usage)?;
            let drift = compare(destination.as_ref(), &ctx, &records, &mut totals).await?;
            verifications::add_drift(pool, id, &drift).await?;
        }
    }
    if sync.mode == SyncMode::Mirror && owns_destination(config, sync) {
        let listed = match destination.list_keys(&ctx) {
            Some(listing) => Some(listing.await.map_err(|message| {
                PlannerError::Usage(format!("sync `{}`: {message}", sync.name))
            })?),
            None => None,
        };
        if let Some(held) = listed {
            let extra = diff::extra_keys(&mut tx, &sync.name, &held).await?;
            totals.extra = Some(extra.len() as i64);
            let drift: Vec<Drift> = extra
                .into_iter()
                .map(|record_key| Drift {
                    record_key,
                    kind: DriftKind::Extra,
                    fields: Vec::new(),
                })
                .collect();
            verifications::add_drift(pool, id, &drift).await?;
        }
    }
    tx.rollback()
        .await
        .map_err(StateError::query("ending a verification"))?;
    Ok(totals)
}

/// A delivered record as the destination is given it.
fn outbound(
    (key, payload, destination_id): diff::DeliveredRecord,
) -> Result<OutboundRecord, String> {
    let fields = RawValue::from_string(payload)
        .map_err(|e| format!("record `{key}`: its stored payload is not JSON: {e}"))?;
    Ok(OutboundRecord {
        key,
        op: Op::Upsert,
        fields: Some(fields),
        version: None,
        snapshot_run_id: 0,
        destination_id,
        update_fields: None,
    })
}

/// Reads `records` back and counts them; returns the ones that drifted.
async fn compare(
    destination: &dyn Destination,
    ctx: &BatchContext,
    records: &[OutboundRecord],
    totals: &mut Totals,
) -> Result<Vec<Drift>, PlannerError> {
    let found = match destination.read_back(ctx, records) {
        Some(reading) => reading.await,
        None => Ok(Vec::new()),
    }
    .map_err(|message| PlannerError::Usage(format!("sync `{}`: {message}", ctx.sync)))?;
    let mut drift = Vec::new();
    for (record, found) in records.iter().zip(found) {
        totals.checked += 1;
        let Some(found) = found else {
            totals.missing += 1;
            drift.push(Drift {
                record_key: record.key.clone(),
                kind: DriftKind::Missing,
                fields: Vec::new(),
            });
            continue;
        };
        let delivered: Map<String, Value> = record
            .fields
            .as_ref()
            .and_then(|f| serde_json::from_str(f.get()).ok())
            .unwrap_or_default();
        let fields = differences(&delivered, &found, |field, a, b| {
            destination.same_value(field, a, b)
        });
        if fields.is_empty() {
            totals.matching += 1;
        } else {
            totals.different += 1;
            drift.push(Drift {
                record_key: record.key.clone(),
                kind: DriftKind::Different,
                fields,
            });
        }
    }
    Ok(drift)
}

/// Extra records are looked for only where the sync is the destination's
/// only writer: another sync's records are not extra.
fn owns_destination(config: &Config, sync: &SyncConfig) -> bool {
    config
        .syncs
        .values()
        .all(|other| other.name == sync.name || other.destination != sync.destination)
}

/// The sync's destination, built as a worker builds it, with the limits it
/// shares with the workers (reads count against the same rate limit).
async fn build_destination(
    config: &Config,
    state: &PgPool,
    sync: &SyncConfig,
) -> Result<Arc<dyn Destination>, PlannerError> {
    let redis = ebb_shared::queue::connect(&config.state).await?;
    let http = util::api::client().map_err(|e| PlannerError::Usage(e.to_string()))?;
    let built = destinations::build(config, &sync.destination, &http, &redis, state)
        .map_err(|e| PlannerError::Usage(e.to_string()))?
        .ok_or_else(|| {
            PlannerError::Usage(format!(
                "sync `{}` names unknown destination `{}`",
                sync.name, sync.destination
            ))
        })?;
    Ok(built.destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_between_one_and_the_maximum_and_all_wins() {
        assert!(matches!(Scope::asked(None, false), Ok(Scope::Sample(100))));
        assert!(matches!(Scope::asked(Some(7), false), Ok(Scope::Sample(7))));
        assert!(matches!(Scope::asked(Some(7), true), Ok(Scope::All)));
        let zero = Scope::asked(Some(0), false).unwrap_err();
        assert!(zero.contains("between 1 and"), "{zero}");
        assert!(Scope::asked(Some(MAX_SAMPLE + 1), false).is_err());
    }
}
