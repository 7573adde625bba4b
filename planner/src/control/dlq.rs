//! Replaying and closing DLQ entries, chosen by id or by sync.

use std::collections::BTreeMap;

use ebb_shared::state::dlq;
use ebb_shared::state::runs::{self, Run};
use sqlx::PgPool;

use crate::commands::run::enqueue;
use crate::context::Context;
use crate::error::PlannerError;
use crate::plan;

/// Which entries an operator means.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub ids: Vec<i64>,
    /// Every open entry of this sync…
    pub sync: Option<String>,
    /// …whose reason contains this (case-insensitive).
    pub reason: Option<String>,
}

/// The ids of every open entry `filter` selects, over all pages (its
/// `status`, `after_id` and `limit` are set here), destination-stage ones
/// only with `destination_only`.
pub async fn open_matching(
    pool: &PgPool,
    filter: &dlq::DlqFilter<'_>,
    destination_only: bool,
) -> Result<Vec<i64>, PlannerError> {
    let mut ids = Vec::new();
    let mut after_id = None;
    loop {
        let page = dlq::list(
            pool,
            &dlq::DlqFilter {
                status: Some("open"),
                include_closed: false,
                after_id,
                limit: 1000,
                ..filter.clone()
            },
        )
        .await?;
        let Some(last) = page.last().map(|e| e.id) else {
            return Ok(ids);
        };
        ids.extend(
            page.iter()
                .filter(|e| !destination_only || e.stage == "destination")
                .map(|e| e.id),
        );
        after_id = Some(last);
    }
}

/// The open entries of `sync` whose reason contains `reason`
/// (destination-stage ones only, with `destination_only`).
async fn matching(
    pool: &PgPool,
    sync: &str,
    reason: &str,
    destination_only: bool,
) -> Result<Vec<i64>, PlannerError> {
    let filter = dlq::DlqFilter {
        sync: Some(sync),
        reason: Some(reason),
        ..dlq::DlqFilter::default()
    };
    let ids = open_matching(pool, &filter, destination_only).await?;
    if ids.is_empty() {
        return Err(PlannerError::NotFound(format!(
            "no open DLQ entry of sync `{sync}` has a reason containing `{reason}`"
        )));
    }
    Ok(ids)
}

/// The selected entries grouped by sync, for one replay run each (`None`:
/// every open entry of the sync). Planning-stage entries cannot be
/// replayed: their fix is in the model, and the next run re-checks them.
pub async fn replay_targets(
    pool: &PgPool,
    selection: &Selection,
) -> Result<Vec<(String, Option<Vec<i64>>)>, PlannerError> {
    if let Some(sync) = &selection.sync {
        return Ok(match &selection.reason {
            None => vec![(sync.clone(), None)],
            Some(reason) => vec![(
                sync.clone(),
                Some(matching(pool, sync, reason, true).await?),
            )],
        });
    }
    let mut by_sync: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for &id in &selection.ids {
        let entry = dlq::get(pool, id).await?.ok_or_else(|| {
            PlannerError::NotFound(format!(
                "DLQ entry #{id} does not exist; see `ebb dlq list`"
            ))
        })?;
        if entry.status != "open" {
            return Err(PlannerError::Conflict(format!(
                "DLQ entry #{id} is {}, not open; nothing to replay",
                entry.status
            )));
        }
        if entry.stage == "plan" {
            return Err(PlannerError::Conflict(format!(
                "DLQ entry #{id} was rejected by the planner ({}); fix the model and run the sync again",
                entry.reason
            )));
        }
        by_sync.entry(entry.sync_name).or_default().push(id);
    }
    if by_sync.is_empty() {
        return Err(PlannerError::Usage(
            "choose entries to replay: their ids, or a sync".into(),
        ));
    }
    Ok(by_sync.into_iter().map(|(s, ids)| (s, Some(ids))).collect())
}

/// Replays the selected entries: one replay run per sync, planned and
/// enqueued, recorded as asked `by`; returns the runs started.
pub async fn replay(
    ctx: &Context,
    selection: &Selection,
    by: &str,
) -> Result<Vec<Run>, PlannerError> {
    let targets = replay_targets(&ctx.pool, selection).await?;
    let mut started = Vec::new();
    for (sync_name, ids) in targets {
        let sync = ctx.config.syncs.get(&sync_name).ok_or_else(|| {
            PlannerError::Conflict(format!("sync `{sync_name}` is no longer in the config"))
        })?;
        let planned =
            plan::replay::plan_replay(&ctx.config, &ctx.pool, sync, ids.as_deref(), by).await?;
        enqueue(ctx, &planned).await?;
        started.push(runs::get(&ctx.pool, planned.run_id).await?);
    }
    Ok(started)
}

/// Closes the selected open entries without sending them; returns the ids
/// closed.
pub async fn close(
    pool: &PgPool,
    selection: &Selection,
    closing: dlq::Closing,
    by: &str,
    note: Option<&str>,
) -> Result<Vec<i64>, PlannerError> {
    if selection.ids.is_empty() && selection.sync.is_none() {
        return Err(PlannerError::Usage(
            "choose entries to close: their ids, or a sync".into(),
        ));
    }
    if let (Some(sync), Some(reason)) = (&selection.sync, &selection.reason) {
        let ids = matching(pool, sync, reason, false).await?;
        return Ok(dlq::close(pool, &ids, None, closing, by, note).await?);
    }
    Ok(dlq::close(
        pool,
        &selection.ids,
        selection.sync.as_deref(),
        closing,
        by,
        note,
    )
    .await?)
}
