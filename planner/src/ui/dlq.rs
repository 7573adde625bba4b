//! The dead-letter queue (`/dlq`): entries filtered by sync, status,
//! reason and key (the filters live in the URL, so a view can be shared),
//! grouped by reason, with replay, dismiss and resolve for one entry, a
//! selection, or a whole group; and one entry's page (`/dlq/{id}`) with
//! its payload and the record's earlier entries.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use ebb_shared::state::dlq::{self, Closing, DlqEntry, DlqFilter, ReasonGroup};
use maud::{Markup, html};
use serde::Deserialize;

use super::form::FormFields;
use super::layout::{self, Section};
use super::session::{Session, encode};
use super::{UiError, UiState};
use crate::control::dlq::{self as control, Selection};

const ENTRIES_PER_PAGE: i64 = 50;
const GROUPS_SHOWN: i64 = 50;
const STATUSES: [&str; 5] = ["open", "resolved", "discarded", "superseded", "all"];

/// The filters, as the URL carries them.
#[derive(Debug, Default, Deserialize)]
pub struct DlqQuery {
    sync: Option<String>,
    /// `open` (the default), `resolved`, `discarded`, `superseded`, `all`.
    status: Option<String>,
    /// Reason contains (case-insensitive).
    reason: Option<String>,
    /// A record's primary key.
    key: Option<String>,
    /// A reason group, exactly (see `dlq::reasons`).
    group: Option<String>,
    /// The page after this entry id.
    after: Option<i64>,
    done: Option<String>,
    n: Option<usize>,
}

impl DlqQuery {
    fn text(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    fn status(&self) -> Result<&str, UiError> {
        let status = Self::text(&self.status).unwrap_or("open");
        STATUSES.into_iter().find(|s| *s == status).ok_or_else(|| {
            UiError::bad_request(format!(
                "no DLQ status `{status}`: open, resolved, discarded, superseded or all"
            ))
        })
    }

    fn filter(&self) -> Result<DlqFilter<'_>, UiError> {
        let status = self.status()?;
        Ok(DlqFilter {
            sync: Self::text(&self.sync),
            status: (status != "all").then_some(status),
            include_closed: status == "all",
            reason: Self::text(&self.reason),
            record_key: Self::text(&self.key),
            reason_group: Self::text(&self.group),
            after_id: self.after,
            limit: ENTRIES_PER_PAGE + 1,
        })
    }

    /// This view's URL, with `after` for another page.
    fn url(&self, after: Option<i64>) -> String {
        let mut params = Vec::new();
        for (name, value) in [
            ("sync", &self.sync),
            ("status", &self.status),
            ("reason", &self.reason),
            ("key", &self.key),
            ("group", &self.group),
        ] {
            if let Some(v) = Self::text(value) {
                params.push(format!("{name}={}", encode(v)));
            }
        }
        if let Some(after) = after {
            params.push(format!("after={after}"));
        }
        if params.is_empty() {
            "/dlq".into()
        } else {
            format!("/dlq?{}", params.join("&"))
        }
    }
}

pub async fn list(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Query(query): Query<DlqQuery>,
) -> Result<Markup, UiError> {
    let pool = &ui.api.ctx.pool;
    let filter = query.filter()?;
    // Postgres text cannot hold NUL: no entry matches such a filter.
    let impossible = [
        filter.sync,
        filter.reason,
        filter.record_key,
        filter.reason_group,
    ]
    .iter()
    .flatten()
    .any(|t| t.contains('\0'));
    let (entries, groups) = if impossible {
        (Vec::new(), Vec::new())
    } else {
        let groups = dlq::reasons(
            pool,
            &DlqFilter {
                limit: GROUPS_SHOWN,
                after_id: None,
                ..filter.clone()
            },
        )
        .await?;
        (dlq::list(pool, &filter).await?, groups)
    };
    let more = entries.len() as i64 > ENTRIES_PER_PAGE;
    let entries = &entries[..entries.len().min(ENTRIES_PER_PAGE as usize)];
    let status = query.status()?;
    let notice = match (query.done.as_deref(), query.n) {
        (Some("dismissed"), Some(n)) => {
            Some(format!("{} dismissed: not to be sent.", entries_count(n)))
        }
        (Some("resolved"), Some(n)) => Some(format!("{} marked resolved.", entries_count(n))),
        _ => None,
    };
    let syncs: Vec<&String> = ui.api.ctx.config.syncs.keys().collect();
    let content = html! {
        h1 { "Dead-letter queue" }
        (layout::notice(notice))
        form.search method="get" action="/dlq" {
            select name="sync" aria-label="sync" {
                option value="" { "every sync" }
                @for s in &syncs { option value=(s) selected[filter.sync == Some(s.as_str())] { (s) } }
            }
            select name="status" aria-label="status" {
                @for s in STATUSES { option value=(s) selected[status == s] { (s) } }
            }
            input type="search" name="reason" value=[DlqQuery::text(&query.reason)] placeholder="reason contains" aria-label="reason contains";
            input type="search" name="key" value=[DlqQuery::text(&query.key)] placeholder="record key" aria-label="record key";
            button.secondary type="submit" { "Filter" }
            @if query.url(None) != "/dlq" { " " a href="/dlq" { "clear" } }
        }
        @if entries.is_empty() {
            @if query.url(None) == "/dlq" {
                (layout::empty("No open entries.", html! { "Every record was delivered, or dealt with. Records a destination refuses appear here with its reason." }))
            } @else {
                (layout::empty("No entry matches these filters.", html! { a href="/dlq" { "Show every open entry" } }))
            }
        } @else {
            h2 { "By reason" }
            (groups_table(&session, &query, &groups, status))
            h2 { "Entries" }
            p.hint {
                "Replay sends each record as it was refused: for a destination fixed since. "
                "Fixed the data in the model instead? Run the sync: records not yet delivered are sent in their current version, and their entries close."
            }
            @if session.is_operator() && status == "open" && query.url(None) != "/dlq" {
                (matching_form(&session, &query, &groups))
            }
            (entries_form(&session, &query, entries, status))
            @if more {
                @if let Some(last) = entries.last() { p { a href=(query.url(Some(last.id))) { "More entries →" } } }
            }
        }
    };
    Ok(layout::page(
        "Dead-letter queue",
        &session,
        Section::Dlq,
        None,
        content,
    ))
}

fn entries_count(n: usize) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{} entries", layout::count(n as i64))
    }
}

fn groups_table(
    session: &Session,
    query: &DlqQuery,
    groups: &[ReasonGroup],
    status: &str,
) -> Markup {
    html! {
        div.scroll {
            table.groups.stack {
                thead { tr { th { "Reason" } th { "Sync" } th.num { "Entries" } th {} } }
                tbody {
                    @for group in groups {
                        tr {
                            td data-label="Reason" { (group.reason_group) @if group.stage == "plan" { " " span.state.muted title="refused by the planner: fix the model and run the sync again" { "planning" } } }
                            td data-label="Sync" { a href={ "/syncs/" (encode(&group.sync_name)) } { (group.sync_name) } }
                            td.num data-label="Entries" { strong { (layout::count(group.entries)) } }
                            td.nowrap {
                                a href={ "/dlq?sync=" (encode(&group.sync_name)) "&status=" (status) "&group=" (encode(&group.reason_group)) } { "show" }
                                @if session.is_operator() && status == "open" {
                                    form.inline method="post" action="/dlq/act" {
                                        (layout::csrf(session))
                                        input type="hidden" name="sync" value=(group.sync_name);
                                        input type="hidden" name="group" value=(group.reason_group);
                                        input type="hidden" name="stage" value=(group.stage);
                                        input type="hidden" name="back" value=(query.url(None));
                                        @if group.stage == "destination" {
                                            button type="submit" name="action" value="replay" { "Replay " (layout::count(group.entries)) }
                                        }
                                        button.secondary type="submit" name="action" value="dismiss"
                                            data-confirm={ "Dismiss " (group.entries) " entries? They will not be sent." } { "Dismiss" }
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

/// Acts on every open entry the filters match, on every page.
fn matching_form(session: &Session, query: &DlqQuery, groups: &[ReasonGroup]) -> Markup {
    let total: i64 = groups.iter().map(|g| g.entries).sum();
    // Beyond the groups shown, the total is not known here.
    let counted = (groups.len() as i64) < GROUPS_SHOWN;
    let all = if counted {
        format!("all {}", layout::count(total))
    } else {
        "all".to_owned()
    };
    html! {
        form.actions method="post" action="/dlq/act" {
            (layout::csrf(session))
            input type="hidden" name="matching" value="1";
            @for (name, value) in [("f_sync", &query.sync), ("f_reason", &query.reason), ("f_key", &query.key), ("f_group", &query.group)] {
                @if let Some(v) = DlqQuery::text(value) { input type="hidden" name=(name) value=(v); }
            }
            input type="hidden" name="back" value=(query.url(None));
            button type="submit" name="action" value="replay" title="entries refused by the planner are left out: fix the model and run the sync" { "Replay " (all) " matching" }
            button.secondary type="submit" name="action" value="dismiss" data-confirm={ "Dismiss " (all) " open entries these filters match? They will not be sent." } { "Dismiss " (all) " matching" }
        }
    }
}

/// Every open entry `form`'s `f_*` filters match (destination-stage ones
/// only, with `destination_only`), over all pages.
async fn matching_ids(
    ui: &UiState,
    form: &FormFields,
    destination_only: bool,
) -> Result<Vec<i64>, UiError> {
    let filter = DlqFilter {
        sync: form.get("f_sync"),
        reason: form.get("f_reason"),
        record_key: form.get("f_key"),
        reason_group: form.get("f_group"),
        ..DlqFilter::default()
    };
    Ok(control::open_matching(&ui.api.ctx.pool, &filter, destination_only).await?)
}

fn entries_form(session: &Session, query: &DlqQuery, entries: &[DlqEntry], status: &str) -> Markup {
    let selectable = session.is_operator() && status == "open";
    html! {
        form #dlq-selection method="post" action="/dlq/act" {
            @if selectable {
                (layout::csrf(session))
                input type="hidden" name="back" value=(query.url(None));
                div.actions {
                    button type="submit" name="action" value="replay" { "Replay selected" }
                    input type="text" name="note" placeholder="note (why)" aria-label="note";
                    button.secondary type="submit" name="action" value="dismiss" { "Dismiss selected" }
                    button.secondary type="submit" name="action" value="resolve" title="fixed another way, e.g. by hand in the destination" { "Mark resolved" }
                }
            }
            div.scroll {
                table.entries.stack {
                    thead { tr {
                        @if selectable { th { input type="checkbox" data-select-all="id" aria-label="select all"; } }
                        th { "Entry" } th { "Sync" } th { "Key" } th { "Op" } th { "Reason" } th.num { "Attempts" } th { "Last failed" } th { "Status" }
                    } }
                    tbody {
                        @for entry in entries {
                            tr {
                                @if selectable { td data-label="Select" { input type="checkbox" name="id" value=(entry.id) aria-label={ "select entry " (entry.id) }; } }
                                td data-label="Entry" { a href={ "/dlq/" (entry.id) } { "#" (entry.id) } }
                                td data-label="Sync" { (entry.sync_name) }
                                td data-label="Key" { code { (entry.record_key.as_deref().unwrap_or("(no key)")) } }
                                td data-label="Op" { (entry.op) }
                                td data-label="Reason" { (entry.reason) }
                                td.num data-label="Attempts" { (entry.attempts) }
                                td data-label="Last failed" { (layout::time(entry.last_failed_at)) }
                                td data-label="Status" { (status_badge(&entry.status)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn status_badge(status: &str) -> Markup {
    let class = match status {
        "open" => "bad",
        "resolved" => "ok",
        _ => "muted",
    };
    html! { span.state.(class) { (status) } }
}

pub async fn entry(
    State(ui): State<Arc<UiState>>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Markup, UiError> {
    let pool = &ui.api.ctx.pool;
    let entry = dlq::get(pool, id)
        .await?
        .ok_or_else(|| UiError::not_found(format!("DLQ entry #{id} does not exist")))?;
    let history = match &entry.record_key {
        Some(key) => dlq::list(
            pool,
            &DlqFilter {
                sync: Some(&entry.sync_name),
                include_closed: true,
                record_key: Some(key),
                limit: 50,
                ..DlqFilter::default()
            },
        )
        .await?
        .into_iter()
        .filter(|e| e.id != entry.id)
        .collect(),
        None => Vec::new(),
    };
    let payload = entry
        .payload
        .as_ref()
        .map(|p| serde_json::to_string_pretty(p).unwrap_or_else(|_| p.to_string()));
    let back = format!("/dlq/{}", entry.id);
    let content = html! {
        p.crumbs { a href="/dlq" { "Dead-letter queue" } " / " }
        h1 { "Entry #" (entry.id) " " (status_badge(&entry.status)) }
        p.error { (entry.reason) }
        dl.facts {
            dt { "Record" } dd { code { (entry.record_key.as_deref().unwrap_or("(no key)")) } " (" (entry.op) ")" }
            dt { "Sync" } dd { a href={ "/syncs/" (encode(&entry.sync_name)) } { (entry.sync_name) } " → " (entry.destination) }
            dt { "Refused by" } dd { @if entry.stage == "plan" { "the planner (fix the model, then run the sync again)" } @else { "the destination" } }
            dt { "Attempts" } dd { (entry.attempts) }
            dt { "First failed" } dd { (layout::time(entry.first_failed_at)) " in " a href={ "/runs/" (entry.first_run_id) } { "run #" (entry.first_run_id) } }
            dt { "Last failed" } dd { (layout::time(entry.last_failed_at)) " in " a href={ "/runs/" (entry.last_run_id) } { "run #" (entry.last_run_id) } }
            @if let Some(at) = entry.resolved_at { dt { "Closed" } dd { (layout::time(at)) } }
            @if let Some(resolution) = &entry.resolution { dt { "Resolution" } dd { (resolution) } }
        }
        @if session.is_operator() && entry.status == "open" {
            form.actions method="post" action="/dlq/act" {
                (layout::csrf(&session))
                input type="hidden" name="id" value=(entry.id);
                input type="hidden" name="back" value=(back);
                @if entry.stage == "destination" { button type="submit" name="action" value="replay" { "Replay" } }
                input type="text" name="note" placeholder="note (why)" aria-label="note";
                button.secondary type="submit" name="action" value="dismiss" { "Dismiss" }
                button.secondary type="submit" name="action" value="resolve" { "Mark resolved" }
            }
        }
        h2 { "Payload" }
        @match &payload {
            Some(text) => pre.payload { (text) },
            None => p.muted { "None kept (a removal, or a record refused before it had one)." },
        }
        h2 { "Earlier entries of this record" }
        @if history.is_empty() {
            p.muted { "None: this is the record's only entry." }
        } @else {
            ul.events {
                @for e in &history {
                    li { a href={ "/dlq/" (e.id) } { "#" (e.id) } " " (status_badge(&e.status)) " " (layout::time(e.last_failed_at)) " — " (e.reason) }
                }
            }
        }
    };
    Ok(layout::page(
        &format!("DLQ entry #{}", entry.id),
        &session,
        Section::Dlq,
        None,
        content,
    ))
}

/// Replays, dismisses or resolves the entries a form names: checked `id`s,
/// a reason group (`sync`, `stage` and `group`), or every open entry the
/// list's filters match (`matching` with `f_sync`, `f_reason`, `f_key`,
/// `f_group`).
pub async fn act(
    State(ui): State<Arc<UiState>>,
    session: Session,
    body: Bytes,
) -> Result<Response, UiError> {
    let form = session.operator_form(&body)?;
    let ctx = &ui.api.ctx;
    let mut ids = form
        .all("id")
        .map(|id| {
            id.trim()
                .parse::<i64>()
                .map_err(|_| UiError::bad_request(format!("`{id}` is not an entry id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let (Some(sync), Some(group)) = (form.get("sync"), form.get("group")) {
        let stage = form.get("stage").unwrap_or("destination");
        ids.extend(dlq::open_in_group(&ctx.pool, sync, stage, group).await?);
    }
    if form.get("matching").is_some() {
        let replaying = form.get("action") == Some("replay");
        ids.extend(matching_ids(&ui, &form, replaying).await?);
    }
    if ids.is_empty() {
        return Err(UiError::bad_request(
            "no entry was selected: tick the entries to act on, or use a group's or the filters' buttons (only entries refused by the destination can be replayed)",
        ));
    }
    let back = form
        .get("back")
        .filter(|b| b.starts_with("/dlq"))
        .unwrap_or("/dlq");
    let selection = Selection {
        ids,
        ..Selection::default()
    };
    let (done, n) = match form.get("action") {
        Some("replay") => {
            let runs = control::replay(ctx, &selection, &session.label()).await?;
            if let [run] = runs.as_slice() {
                return Ok(Redirect::to(&format!("/runs/{}", run.id)).into_response());
            }
            return Ok(Redirect::to("/").into_response());
        }
        Some("dismiss") => (
            "dismissed",
            control::close(
                &ctx.pool,
                &selection,
                Closing::Dismiss,
                &session.label(),
                form.get("note"),
            )
            .await?
            .len(),
        ),
        Some("resolve") => (
            "resolved",
            control::close(
                &ctx.pool,
                &selection,
                Closing::Resolve,
                &session.label(),
                form.get("note"),
            )
            .await?
            .len(),
        ),
        other => {
            return Err(UiError::bad_request(format!(
                "no DLQ action `{}`: replay, dismiss or resolve",
                other.unwrap_or("")
            )));
        }
    };
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{back}{sep}done={done}&n={n}")).into_response())
}
