//! One run's page (`/runs/{id}`): its state and trigger, its phases on a
//! timeline, its counts and cost, live progress while it runs, its events,
//! and its records with their outcomes, searchable by key.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use ebb_shared::state::records::{self, Outcome, RecordFilter, RunRecord};
use ebb_shared::state::runs::{self, Run, RunState};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Section};
use super::session::{Session, encode};
use super::{UiError, UiState};

/// Records per page.
const RECORDS_PER_PAGE: i64 = 50;
/// How often a running run's page refreshes itself.
const LIVE_MS: u32 = 1500;

#[derive(Debug, Deserialize)]
pub struct RunQuery {
    /// A record's primary key.
    key: Option<String>,
    outcome: Option<String>,
    /// The page of records after this key.
    after: Option<String>,
    done: Option<String>,
}

pub async fn detail(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Path(id): Path<i64>,
    Query(query): Query<RunQuery>,
) -> Result<Markup, UiError> {
    let pool = &ui.api.ctx.pool;
    let mut run = runs::get(pool, id).await?;
    runs::with_events(pool, std::slice::from_mut(&mut run)).await?;
    let outcome = match query.outcome.as_deref().filter(|o| !o.is_empty()) {
        None => None,
        Some(o) => Some(Outcome::parse(o).ok_or_else(|| {
            UiError::bad_request(format!(
                "no outcome `{o}`: delivered, rejected, failed or superseded"
            ))
        })?),
    };
    let key = query
        .key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    // Postgres text cannot hold NUL, so no key has one.
    let found = if run.records_purged
        || key.is_some_and(|k| k.contains('\0'))
        || query.after.as_deref().is_some_and(|a| a.contains('\0'))
    {
        Vec::new()
    } else {
        records::of_run(
            pool,
            id,
            &RecordFilter {
                key,
                outcome,
                after_key: query.after.as_deref(),
                limit: RECORDS_PER_PAGE + 1,
            },
        )
        .await?
    };
    let more = found.len() as i64 > RECORDS_PER_PAGE;
    let found = &found[..found.len().min(RECORDS_PER_PAGE as usize)];
    let live = (!run.is_finished() && run.state != RunState::Held).then_some(LIVE_MS);
    let notice = match query.done.as_deref() {
        Some("cancelled") => Some("Run cancelled: its unsent batches will not be sent; what was delivered stays delivered.".to_owned()),
        Some("approved") => Some("Run approved: its batches are on the queue.".to_owned()),
        _ => None,
    };
    let content = html! {
        p.crumbs { a href="/" { "Syncs" } " / " a href={ "/syncs/" (encode(&run.sync_name)) } { (run.sync_name) } " / " }
        h1 { "Run #" (run.id) " " (layout::run_state(run.state)) }
        (layout::notice(notice))
        @if let Some(error) = &run.error { p.error role="alert" { (error) } }
        (summary(&run))
        @if session.is_operator() { (actions(&session, &run)) }
        (progress(&run))
        (timeline(&run))
        div.columns {
            section { h2 { "Records" } (counts(&run)) }
            section { h2 { "Cost" } (cost(&run)) }
        }
        @if !run.events.is_empty() {
            h2 { "Events" }
            ul.events {
                @for event in &run.events {
                    li { (layout::time(event.at)) " " span.state.muted { (event.kind) } " " (event.message) }
                }
            }
        }
        h2 #records { "Records of this run" }
        (records_search(&run, key, query.outcome.as_deref()))
        (records_table(&run, found, key.is_some() || outcome.is_some()))
        @if more {
            @if let Some(last) = found.last() {
                p { a href=(next_page(&run, &query, &last.record_key)) { "More records →" } }
            }
        }
    };
    Ok(layout::page(
        &format!("Run #{}", run.id),
        &session,
        Section::Syncs,
        live,
        content,
    ))
}

fn next_page(run: &Run, query: &RunQuery, after: &str) -> String {
    let mut url = format!("/runs/{}?after={}", run.id, encode(after));
    if let Some(key) = &query.key {
        url.push_str(&format!("&key={}", encode(key)));
    }
    if let Some(outcome) = &query.outcome {
        url.push_str(&format!("&outcome={}", encode(outcome)));
    }
    url.push_str("#records");
    url
}

fn summary(run: &Run) -> Markup {
    html! {
        dl.facts {
            dt { "Sync" } dd { a href={ "/syncs/" (encode(&run.sync_name)) } { (run.sync_name) } " → " (run.destination) " (" (run.mode) ")" }
            dt { "Kind" } dd { (run.kind) @if run.full_resync { ", full resync" } }
            dt { "Trigger" } dd { (run.trigger) }
            dt { "Started" } dd { (layout::time(run.created_at)) " (" (layout::ago(run.created_at)) ")" }
            dt { "Took" } dd {
                (layout::between(run.created_at, run.finished_at))
                @if run.finished_at.is_none() { " so far" }
            }
        }
    }
}

fn actions(session: &Session, run: &Run) -> Markup {
    html! {
        div.actions {
            @if run.state == RunState::Held {
                form method="post" action={ "/runs/" (run.id) "/approve" } {
                    (layout::csrf(session))
                    button type="submit" { "Approve and send" }
                }
            }
            @if !run.is_finished() {
                form method="post" action={ "/runs/" (run.id) "/cancel" } {
                    (layout::csrf(session))
                    button.danger type="submit" data-confirm={ "Cancel run #" (run.id) "? Batches not yet sent will not be sent." } { "Cancel run" }
                }
            }
        }
    }
}

fn progress(run: &Run) -> Markup {
    let total = run.to_send.max(0);
    let settled = run.settled_records();
    html! {
        @if run.state == RunState::Planning {
            p.live { "Planning: reading the model and comparing it with what was delivered…" }
        } @else if total > 0 {
            div.progress role="progressbar" aria-valuemin="0" aria-valuemax=(total) aria-valuenow=(settled) {
                div.bar style={ "width:" (format!("{:.1}", settled as f64 * 100.0 / total as f64)) "%" } {}
            }
            p.muted {
                (layout::count(settled)) " of " (layout::count(total)) " records settled; "
                (run.batches_settled) " of " (run.batches_total) " batches"
                @if let Some(at) = run.progress_at { "; last batch " (layout::ago(at)) }
            }
        }
    }
}

/// The run's phases as segments of one bar: planning (reading and
/// diffing the model), queueing (pushing its batches), delivery.
fn timeline(run: &Run) -> Markup {
    let end = run.finished_at.unwrap_or_else(Utc::now);
    let planned = run.planned_at.map(|p| p.min(end));
    let enqueued = run.enqueued_at.map(|e| e.min(end));
    let mut phases: Vec<(&str, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    phases.push(("planning", run.created_at, planned.unwrap_or(end)));
    if let Some(planned) = planned {
        phases.push(("queueing", planned, enqueued.unwrap_or(end)));
        if let Some(enqueued) = enqueued {
            phases.push(("delivery", enqueued, end));
        }
    }
    let whole = ((end - run.created_at).num_milliseconds().max(1)) as f64;
    html! {
        h2 { "Timeline" }
        div.timeline {
            @for (name, from, to) in &phases {
                @let ms = (*to - *from).num_milliseconds().max(0) as f64;
                div class={ "phase " (name) } style={ "flex-grow:" (format!("{:.4}", (ms / whole).max(0.02))) }
                    title={ (name) ": " (layout::span(ms / 1000.0)) } {
                    span { (name) " " (layout::span(ms / 1000.0)) }
                }
            }
        }
    }
}

fn counts(run: &Run) -> Markup {
    html! {
        dl.facts.compact {
            @if let Some(read) = run.rows_read { dt { "Rows read" } dd { (layout::count(read)) } }
            dt { "Added" } dd { (layout::count(run.planned_added)) }
            dt { "Changed" } dd { (layout::count(run.planned_changed)) @if run.flapping > 0 { " (" (layout::count(run.flapping)) " flapping)" } }
            dt { "Removed" } dd { (layout::count(run.planned_removed)) }
            dt { "Unchanged" } dd { (layout::count(run.unchanged)) }
            dt { "Rejected at planning" } dd { (layout::count(run.rejected_at_plan)) }
            dt { "To send" } dd { (layout::count(run.to_send)) }
            dt { "Delivered" } dd { (layout::count(run.delivered)) }
            dt { "Rejected by the destination" } dd { (layout::count(run.rejected)) }
            dt { "Failed" } dd { (layout::count(run.failed)) }
            dt { "Superseded" } dd { (layout::count(run.superseded)) }
        }
    }
}

fn cost(run: &Run) -> Markup {
    html! {
        dl.facts.compact {
            dt { "Requests planned" } dd { (run.requests_planned.map(layout::count).unwrap_or_else(|| "—".into())) }
            dt { "Answered 429" } dd { (layout::count(run.throttled)) }
            dt { "Retries" } dd { (layout::count(run.retries)) }
            dt { "Waiting for limits" } dd { (layout::span(run.limiter_wait_ms as f64 / 1000.0)) }
            dt { "Lookups before create" } dd { (layout::count(run.lookups_before_create)) }
            dt { "Redeliveries" } dd { (layout::count(run.redeliveries)) }
            dt { "Quarantined batches" } dd { (layout::count(run.quarantined_batches)) }
        }
    }
}

fn records_search(run: &Run, key: Option<&str>, outcome: Option<&str>) -> Markup {
    html! {
        form.search method="get" action={ "/runs/" (run.id) "#records" } {
            input type="search" name="key" value=[key] placeholder="primary key" aria-label="primary key";
            select name="outcome" aria-label="outcome" {
                option value="" { "any outcome" }
                @for o in Outcome::ALL.map(Outcome::as_str) {
                    option value=(o) selected[outcome == Some(o)] { (o) }
                }
            }
            button.secondary type="submit" { "Find" }
            @if key.is_some() || outcome.is_some_and(|o| !o.is_empty()) { " " a href={ "/runs/" (run.id) "#records" } { "clear" } }
        }
    }
}

fn records_table(run: &Run, found: &[RunRecord], filtered: bool) -> Markup {
    html! {
        @if run.records_purged {
            (layout::empty("This run's records were deleted after the retention period.", html! {
                "Its totals above remain; " code { "[state].run_records_retention_days" } " sets how long records are kept."
            }))
        } @else if found.is_empty() {
            @if filtered {
                (layout::empty("No record of this run matches.", html! { "The key must match exactly; clear the search to list every record." }))
            } @else if run.state == RunState::Planning {
                (layout::empty("No records yet.", html! { "They appear when planning ends." }))
            } @else {
                (layout::empty("This run sent no records.", html! { "Nothing had changed in the model since the last delivery." }))
            }
        } @else {
            div.scroll {
                table.records {
                    thead { tr { th { "Key" } th { "Operation" } th.num { "Batch" } th { "Outcome" } th { "Reason" } } }
                    tbody {
                        @for record in found {
                            tr {
                                td { code { (record.record_key) } }
                                td { (record.op) }
                                td.num { (record.batch_no) }
                                td { (outcome_badge(record.outcome.as_deref())) }
                                td {
                                    @if let Some(reason) = &record.reason {
                                        a href={ "/dlq?sync=" (encode(&run.sync_name)) "&status=all&key=" (encode(&record.record_key)) } { (reason) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn outcome_badge(outcome: Option<&str>) -> Markup {
    let class = match outcome {
        Some("delivered") => "ok",
        Some("rejected") => "warn",
        Some("failed") => "bad",
        _ => "muted",
    };
    html! { span.state.(class) { (outcome.unwrap_or("pending")) } }
}

pub async fn cancel(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, UiError> {
    session.operator_form(&body)?;
    crate::control::runs::cancel(&ui.api.ctx.pool, id, &session.label()).await?;
    Ok(Redirect::to(&format!("/runs/{id}?done=cancelled")).into_response())
}

pub async fn approve(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, UiError> {
    session.operator_form(&body)?;
    crate::control::trigger::approve(&ui.api.ctx, id, &session.label()).await?;
    Ok(Redirect::to(&format!("/runs/{id}?done=approved")).into_response())
}
