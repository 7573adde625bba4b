//! The syncs overview (`/`) and one sync's page (`/syncs/{name}`): its
//! runs as a chart and a table, and the buttons that run, dry-run, pause
//! and resume it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use ebb_shared::state::runs::{self, Run, RunFilter};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Section};
use super::session::{Session, encode};
use super::{UiError, UiState, chart};
use crate::control::syncs::{self, SyncHealth, SyncSummary};
use crate::control::trigger;
use crate::plan::{self, PlanReport};

/// Runs in each overview chart.
const OVERVIEW_RUNS: i64 = 20;
/// Runs per page of a sync's history.
const HISTORY_RUNS: i64 = 30;
/// How often a page with something running refreshes itself.
const LIVE_MS: u32 = 2000;

pub async fn overview(State(ui): State<Arc<UiState>>, session: Session) -> Result<Markup, UiError> {
    let ctx = &ui.api.ctx;
    let summaries = syncs::overview(&ctx.config, &ctx.pool).await?;
    let mut rows = Vec::with_capacity(summaries.len());
    for summary in summaries {
        let recent = recent_runs(&ui, &summary.name, None, OVERVIEW_RUNS).await?;
        let sql = model_sql(&ui, &summary.name);
        rows.push((summary, recent, sql));
    }
    let live = rows
        .iter()
        .any(|(s, _, _)| s.health == SyncHealth::Running)
        .then_some(LIVE_MS);
    let content = html! {
        h1 { "Syncs" }
        @if rows.is_empty() {
            (layout::empty("No syncs yet.", html! {
                "Add a " code { "[syncs.NAME]" } " section to ebb.toml (a source, a model, a destination and a primary key), then restart ebb serve."
            }))
        } @else {
            div.scroll {
                table.syncs.stack {
                    thead { tr {
                        th { "Sync" } th { "Model → destination" } th { "Mode" } th { "Schedule" }
                        th { "Last run" } th { "Next run" } th.num { "Open DLQ" } th { "Last " (OVERVIEW_RUNS) " runs" }
                    } }
                    tbody {
                        @for (summary, recent, sql) in &rows { (overview_row(summary, recent, sql)) }
                    }
                }
            }
            p.hint { "Bars: records delivered (green), rejected (amber) and failed (red) per run, oldest on the left; each links to its run." }
        }
    };
    Ok(layout::page(
        "Syncs",
        &session,
        Section::Syncs,
        live,
        content,
    ))
}

/// The sync's model SQL, as the config (or its file, or dbt) gives it.
fn model_sql(ui: &UiState, sync: &str) -> String {
    ui.api
        .ctx
        .config
        .syncs
        .get(sync)
        .map(|s| s.model.as_subquery().to_owned())
        .unwrap_or_default()
}

fn overview_row(summary: &SyncSummary, recent: &[Run], sql: &str) -> Markup {
    html! {
        tr data-sync=(summary.name) {
            td data-label="Sync" { a href={ "/syncs/" (encode(&summary.name)) } { strong { (summary.name) } } }
            td data-label="Model" {
                span.model title=(sql) { code { (short(sql, 60)) } }
                br;
                "→ " (summary.destination) " " span.muted { "(" (summary.destination_type) ")" }
            }
            td data-label="Mode" { (summary.mode) }
            td data-label="Schedule" {
                @match &summary.schedule {
                    Some(cron) => { code { (cron) } @if let Some(tz) = &summary.timezone { " " span.muted { (tz) } } }
                    None => span.muted { "by hand" },
                }
                @if summary.paused { " " span.state.warn title=(pause_title(summary)) { "paused" } }
            }
            td data-label="Last run" { (last_run(summary)) }
            td data-label="Next run" {
                @match summary.next_run_at {
                    Some(at) => { (layout::time(at)) br; span.muted { (layout::ago(at)) } }
                    None => span.muted { "—" },
                }
            }
            td.num data-label="Open DLQ" {
                @if summary.open_dlq > 0 {
                    a.state.bad href={ "/dlq?sync=" (encode(&summary.name)) } { (layout::count(summary.open_dlq)) }
                } @else { span.muted { "0" } }
            }
            td.chart data-label="Runs" { (chart::outcomes(recent, OVERVIEW_RUNS as usize, 36, &format!("records per run of {}", summary.name))) }
        }
    }
}

fn last_run(summary: &SyncSummary) -> Markup {
    html! {
        @match &summary.last_run {
            Some(run) => {
                a href={ "/runs/" (run.id) } { (layout::run_state(run.state)) }
                " " span.muted { (layout::ago(run.created_at)) }
                br;
                span.muted { (layout::count(run.delivered)) " delivered" @if run.rejected > 0 { ", " (layout::count(run.rejected)) " rejected" } }
            }
            None => span.muted { "never ran" },
        }
    }
}

fn pause_title(summary: &SyncSummary) -> String {
    match &summary.pause {
        Some(p) => format!(
            "paused by {} at {}{}",
            p.changed_by,
            p.changed_at.format("%Y-%m-%d %H:%M UTC"),
            p.note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        ),
        None => "paused".into(),
    }
}

fn short(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        line
    } else {
        format!("{}…", line.chars().take(max).collect::<String>())
    }
}

async fn recent_runs(
    ui: &UiState,
    sync: &str,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Run>, UiError> {
    Ok(runs::query(
        &ui.api.ctx.pool,
        &RunFilter {
            sync: Some(sync),
            before_id,
            limit,
            ..RunFilter::default()
        },
    )
    .await?)
}

#[derive(Debug, Deserialize)]
pub struct DetailQuery {
    /// The page of runs before this run id.
    before: Option<i64>,
    done: Option<String>,
}

pub async fn detail(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Path(name): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Result<Markup, UiError> {
    let ctx = &ui.api.ctx;
    let summary = syncs::one(&ctx.config, &ctx.pool, &name)
        .await?
        .ok_or_else(|| UiError::not_found(format!("no sync `{name}` in ebb.toml")))?;
    let history = recent_runs(&ui, &name, query.before, HISTORY_RUNS + 1).await?;
    let more = history.len() as i64 > HISTORY_RUNS;
    let history = &history[..history.len().min(HISTORY_RUNS as usize)];
    let live = (summary.health == SyncHealth::Running).then_some(LIVE_MS);
    let notice = match query.done.as_deref() {
        Some("paused") => Some(
            "Schedule paused: it fires no runs until resumed. Runs started here still run."
                .to_owned(),
        ),
        Some("resumed") => Some("Schedule resumed.".to_owned()),
        _ => None,
    };
    let sql = model_sql(&ui, &summary.name);
    let content = html! {
        p.crumbs { a href="/" { "Syncs" } " / " }
        h1 { (summary.name) " " @if summary.paused { span.state.warn title=(pause_title(&summary)) { "paused" } } }
        (layout::notice(notice))
        (facts(&summary, &sql))
        @if session.is_operator() { (actions(&session, &summary)) }
        h2 { "Runs" }
        @if history.is_empty() {
            (layout::empty("This sync has never run.", html! {
                @match summary.next_run_at {
                    Some(at) => { "Its schedule fires next at " (layout::time(at)) "; or run it now." }
                    None => { "It has no schedule: run it now, or from a shell with " code { "ebb run " (summary.name) } "." }
                }
            }))
        } @else {
            div.charts {
                figure { (chart::outcomes(history, HISTORY_RUNS as usize, 80, "records per run")) figcaption { "Records delivered, rejected and failed per run" } }
                figure { (chart::durations(history, HISTORY_RUNS as usize, 80)) figcaption { "Duration of each run" } }
            }
            (runs_table(history))
            @if more {
                @if let Some(last) = history.last() {
                    p { a href={ "/syncs/" (encode(&summary.name)) "?before=" (last.id) } { "Older runs →" } }
                }
            }
        }
    };
    Ok(layout::page(
        &summary.name,
        &session,
        Section::Syncs,
        live,
        content,
    ))
}

fn facts(summary: &SyncSummary, sql: &str) -> Markup {
    html! {
        dl.facts {
            dt { "Model" } dd { span.muted { "source " (summary.source) ", " (summary.model) } pre.model { (sql) } }
            dt { "Destination" } dd { (summary.destination) " (" (summary.destination_type) ")" }
            dt { "Mode" } dd { (summary.mode) ", key " code { (summary.primary_key) } }
            dt { "Schedule" } dd {
                @match &summary.schedule {
                    Some(cron) => { code { (cron) } " " (summary.timezone.as_deref().unwrap_or("UTC")) }
                    None => "none (runs by hand or by trigger)",
                }
                @if let Some(at) = summary.next_run_at { "; next " (layout::time(at)) }
                @if summary.paused { "; " (pause_title(summary)) }
            }
            dt { "Last success" } dd {
                @match summary.last_success_at { Some(at) => { (layout::time(at)) " (" (layout::ago(at)) ")" } None => "never" }
            }
            dt { "Open DLQ" } dd {
                a href={ "/dlq?sync=" (encode(&summary.name)) } { (layout::count(summary.open_dlq)) " entries" }
            }
        }
    }
}

fn actions(session: &Session, summary: &SyncSummary) -> Markup {
    let path = format!("/syncs/{}", encode(&summary.name));
    html! {
        div.actions {
            form method="post" action={ (path) "/run" } {
                (layout::csrf(session))
                button name="kind" value="run" type="submit" { "Run now" }
                button.secondary name="kind" value="dry_run" type="submit" title="Plan only: what a run would send; nothing is sent" { "Dry run" }
                button.danger name="kind" value="full_resync" type="submit"
                    data-confirm={ "Send every record of " (summary.name) " again, ignoring what was delivered before?" } { "Full resync" }
            }
            @if summary.schedule.is_some() {
                form method="post" action={ (path) @if summary.paused { "/resume" } @else { "/pause" } } {
                    (layout::csrf(session))
                    input type="text" name="note" placeholder="why (optional)" aria-label="why";
                    button.secondary type="submit" { @if summary.paused { "Resume schedule" } @else { "Pause schedule" } }
                }
            }
        }
    }
}

pub fn runs_table(history: &[Run]) -> Markup {
    html! {
        div.scroll {
            table.runs.stack {
                thead { tr {
                    th { "Run" } th { "State" } th { "Trigger" } th { "Started" } th { "Took" }
                    th.num { "Read" } th.num { "Sent" } th.num { "Delivered" } th.num { "Rejected" } th.num { "Failed" }
                } }
                tbody {
                    @for run in history {
                        tr {
                            td data-label="Run" { a href={ "/runs/" (run.id) } { "#" (run.id) } @if run.kind != "sync" { " " span.muted { (run.kind) } } }
                            td data-label="State" { (layout::run_state(run.state)) }
                            td data-label="Trigger" { (run.trigger) }
                            td data-label="Started" { (layout::time(run.created_at)) }
                            td data-label="Took" { (layout::between(run.created_at, run.finished_at)) }
                            td.num data-label="Read" { (run.rows_read.map(layout::count).unwrap_or_else(|| "—".into())) }
                            td.num data-label="Sent" { (layout::count(run.to_send)) }
                            td.num data-label="Delivered" { (layout::count(run.delivered)) }
                            td.num data-label="Rejected" { @if run.rejected + run.rejected_at_plan > 0 { span.state.warn { (layout::count(run.rejected + run.rejected_at_plan)) } } @else { "0" } }
                            td.num data-label="Failed" { @if run.failed > 0 { span.state.bad { (layout::count(run.failed)) } } @else { "0" } }
                        }
                    }
                }
            }
        }
    }
}

/// Runs the sync (`kind`: `run`, `full_resync`) and opens the run's page,
/// or shows a dry run's plan.
pub async fn trigger(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, UiError> {
    let form = session.operator_form(&body)?;
    let ctx = &ui.api.ctx;
    let sync = ctx
        .config
        .syncs
        .get(&name)
        .ok_or_else(|| UiError::not_found(format!("no sync `{name}` in ebb.toml")))?;
    let full_resync = match form.get("kind") {
        Some("run") | None => false,
        Some("full_resync") => true,
        Some("dry_run") => {
            let report = plan::dry_run(&ctx.config, &ctx.pool, sync, false).await?;
            return Ok(dry_run_page(&session, &report).into_response());
        }
        Some(other) => {
            return Err(UiError::bad_request(format!(
                "no kind of run `{other}`: run, full_resync or dry_run"
            )));
        }
    };
    let label = session.label();
    let started = trigger::start_in_background(ctx, sync, full_resync, &label, None).await?;
    Ok(Redirect::to(&format!("/runs/{}", started.run.id)).into_response())
}

fn dry_run_page(session: &Session, report: &PlanReport) -> Markup {
    let c = &report.counts;
    let content = html! {
        p.crumbs { a href="/" { "Syncs" } " / " a href={ "/syncs/" (encode(&report.sync)) } { (report.sync) } " / " }
        h1 { "Dry run of " (report.sync) }
        p.notice { "Nothing was sent and no run was recorded: this is what a run would do now." }
        @if let Some(held) = &report.held { p.error { "A run would be held for an operator: " (held) } }
        dl.facts {
            dt { "Rows read" } dd { (layout::count(c.rows_read as i64)) }
            dt { "Added" } dd { (layout::count(c.added)) }
            dt { "Changed" } dd { (layout::count(c.changed)) @if c.flapping > 0 { " (" (layout::count(c.flapping)) " flapping)" } }
            dt { "Removed" } dd { (layout::count(c.removed)) }
            dt { "Unchanged" } dd { (layout::count(c.unchanged)) }
            dt { "Not sent in this mode" } dd { (layout::count(c.skipped_by_mode)) }
            dt { "Rejected by the planner" } dd { (layout::count(c.rejected)) }
            dt { "To send" } dd { strong { (layout::count(c.to_send)) } }
            @if let Some(budget) = &report.budget {
                dt { "Requests" } dd {
                    (layout::count(budget.requests as i64)) " in " (layout::count(budget.batches as i64)) " batches"
                    @if let Some(eta) = budget.eta_secs { ", at least " (layout::span(eta)) " at " (budget.rate_limit.as_deref().unwrap_or("its rate limit")) }
                    @if let Some(pct) = budget.daily_quota_pct { ", " (format!("{pct:.1}")) "% of the daily quota" }
                }
            }
        }
        @if !report.rejections.is_empty() {
            h2 { "Rejected by the planner" }
            table { thead { tr { th { "Key" } th { "Reason" } } } tbody {
                @for r in report.rejections.iter().take(50) { tr { td { code { (r.record_key.as_deref().unwrap_or("(no key)")) } } td { (r.reason) } } }
            } }
        }
        @if session.is_operator() {
            form method="post" action={ "/syncs/" (encode(&report.sync)) "/run" } {
                (layout::csrf(session))
                button name="kind" value="run" type="submit" { "Run it now" }
            }
        }
    };
    layout::page(
        &format!("Dry run of {}", report.sync),
        session,
        Section::Syncs,
        None,
        content,
    )
}

pub async fn pause(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, UiError> {
    set_paused(&ui, &session, &name, true, &body).await
}

pub async fn resume(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, UiError> {
    set_paused(&ui, &session, &name, false, &body).await
}

async fn set_paused(
    ui: &UiState,
    session: &Session,
    name: &str,
    paused: bool,
    body: &Bytes,
) -> Result<Response, UiError> {
    let form = session.operator_form(body)?;
    let ctx = &ui.api.ctx;
    let label = session.label();
    syncs::set_paused(
        &ctx.config,
        &ctx.pool,
        name,
        paused,
        &label,
        form.get("note"),
    )
    .await?;
    let done = if paused { "paused" } else { "resumed" };
    Ok(Redirect::to(&format!("/syncs/{}?done={done}", encode(name))).into_response())
}
