//! Destinations (`/destinations`): each one's limits as configured and as
//! they stand across every worker (in flight, paused after a 429), its
//! queue, and what its runs of the last day met at its limits.

use std::sync::Arc;

use axum::extract::State;
use chrono::Utc;
use ebb_shared::state::runs;
use maud::{Markup, html};

use super::layout::{self, Section};
use super::session::Session;
use super::{UiError, UiState};
use crate::api::destinations as current;

pub async fn list(State(ui): State<Arc<UiState>>, session: Session) -> Result<Markup, UiError> {
    let ctx = &ui.api.ctx;
    let pressure =
        runs::pressure_since(&ctx.pool, Utc::now() - chrono::Duration::hours(24)).await?;
    let live = current::current(&ui.api).await;
    let content = html! {
        h1 { "Destinations" }
        @match &live {
            Err(e) => {
                p.error role="alert" { "The task queue (Redis) did not answer, so in-flight requests and queue depth are unknown: " (e) }
                div.scroll { table {
                    thead { tr { th { "Destination" } th { "Type" } th.num { "429s (24 h)" } th.num { "Retries (24 h)" } } }
                    tbody {
                        @for (name, destination) in &ctx.config.destinations {
                            @let p = pressure.get(name).cloned().unwrap_or_default();
                            tr { td { (name) } td { (destination.type_name()) } td.num { (layout::count(p.throttled)) } td.num { (layout::count(p.retries)) } }
                        }
                    }
                } }
            }
            Ok(limits) if limits.is_empty() => {
                (layout::empty("No destinations yet.", html! { "Add a " code { "[destinations.NAME]" } " section to ebb.toml." }))
            }
            Ok(limits) => {
                div.scroll { table.destinations {
                    thead { tr {
                        th { "Destination" } th { "Type" } th { "Limits" } th.num { "In flight" } th { "Holding off" }
                        th.num { "Queued" } th.num { "Being sent" } th.num { "Live workers" }
                        th.num { "429s (24 h)" } th.num { "Retries (24 h)" } th { "Waited for limits (24 h)" }
                    } }
                    tbody {
                        @for d in limits {
                            @let p = pressure.get(&d.destination).cloned().unwrap_or_default();
                            tr {
                                td { strong { (d.destination) } }
                                td { (d.destination_type) }
                                td {
                                    (d.max_concurrency) " at once"
                                    @if d.adaptive_concurrency { " (adaptive)" }
                                    @if let Some((requests, per)) = d.rate_limit { br; (requests) " requests per " (layout::span(per)) }
                                }
                                td.num { (d.now.in_flight) }
                                td {
                                    @if d.now.paused_for_ms > 0 { span.state.warn { "paused " (layout::span(d.now.paused_for_ms as f64 / 1000.0)) " after a 429" } }
                                    @else if d.now.next_token_in_ms > 0 { "next request in " (layout::span(d.now.next_token_in_ms as f64 / 1000.0)) }
                                    @else { span.muted { "no" } }
                                }
                                td.num { (d.queue.pending + d.queue.scheduled) }
                                td.num { (d.queue.in_flight) }
                                td.num { (d.queue.live_workers) }
                                td.num { @if p.throttled > 0 { span.state.warn { (layout::count(p.throttled)) } } @else { "0" } }
                                td.num { (layout::count(p.retries)) }
                                td { (layout::span(p.limiter_wait_ms as f64 / 1000.0)) " over " (p.runs) " runs" }
                            }
                        }
                    }
                } }
                p.hint { "Limits are shared by every worker and every sync writing to a destination. Change them in ebb.toml (" code { "max_concurrency" } ", " code { "rate_limit" } ")." }
            }
        }
    };
    Ok(layout::page(
        "Destinations",
        &session,
        Section::Destinations,
        None,
        content,
    ))
}
