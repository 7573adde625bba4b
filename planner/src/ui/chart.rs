//! Run charts as inline SVG: no script, no chart library, readable on a
//! phone. Each bar is one run, oldest on the left, and links to it.

use ebb_shared::state::runs::Run;
use maud::{Markup, html};

use super::layout;

/// Records delivered, rejected and failed per run, stacked; `runs` newest
/// first, as the state database lists them. The chart has room for
/// `slots` runs, so that a sync's first runs are not drawn as wide slabs.
pub fn outcomes(runs: &[Run], slots: usize, height: u32, label: &str) -> Markup {
    let runs: Vec<&Run> = runs.iter().rev().collect();
    let tallest = runs
        .iter()
        .map(|r| r.delivered + r.rejected + r.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let slot = 12.0;
    let bar = 9.0;
    let empty = slots.saturating_sub(runs.len());
    let width = (runs.len().max(slots).max(1) as f64) * slot;
    let h = f64::from(height);
    html! {
        svg.chart viewBox={ "0 0 " (width) " " (h) } preserveAspectRatio="none" role="img" aria-label=(label)
            style={ "height:" (height) "px" } {
            @for (i, run) in runs.iter().enumerate() {
                @let x = (empty + i) as f64 * slot;
                @let parts = [(run.delivered, "delivered"), (run.rejected, "rejected"), (run.failed, "failed")];
                a href={ "/runs/" (run.id) } {
                    title { (tooltip(run)) }
                    rect.slot x=(x) y="0" width=(slot) height=(h) {}
                    @for (j, (value, class)) in parts.iter().enumerate() {
                        @let below: i64 = parts[..j].iter().map(|p| p.0).sum();
                        @let top = h - ((below + value) as f64 / tallest) * h;
                        @let tall = (*value as f64 / tallest) * h;
                        @if *value > 0 {
                            rect class=(class) x=(x + 1.5) y=(top) width=(bar) height=(tall.max(1.0)) {}
                        }
                    }
                    @if run.delivered + run.rejected + run.failed == 0 {
                        rect class=(format!("none {}", run.state.as_str())) x=(x + 1.5) y=(h - 2.0) width=(bar) height="2" {}
                    }
                }
            }
        }
    }
}

fn tooltip(run: &Run) -> String {
    format!(
        "run #{} · {} · {} delivered, {} rejected, {} failed · {}",
        run.id,
        run.state.as_str(),
        layout::count(run.delivered),
        layout::count(run.rejected),
        layout::count(run.failed),
        run.created_at.format("%Y-%m-%d %H:%M UTC"),
    )
}

/// Each run's duration, one bar per run, oldest on the left, with room
/// for `slots` runs.
pub fn durations(runs: &[Run], slots: usize, height: u32) -> Markup {
    let runs: Vec<&Run> = runs.iter().rev().collect();
    let secs = |r: &Run| {
        r.finished_at
            .map(|f| (f - r.created_at).num_milliseconds() as f64 / 1000.0)
            .unwrap_or(0.0)
    };
    let longest = runs
        .iter()
        .map(|r| secs(r))
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let slot = 12.0;
    let empty = slots.saturating_sub(runs.len());
    let width = (runs.len().max(slots).max(1) as f64) * slot;
    let h = f64::from(height);
    html! {
        svg.chart viewBox={ "0 0 " (width) " " (h) } preserveAspectRatio="none" role="img" aria-label="duration of each run"
            style={ "height:" (height) "px" } {
            @for (i, run) in runs.iter().enumerate() {
                @let i = empty + i;
                @let tall = (secs(run) / longest * h).max(1.0);
                a href={ "/runs/" (run.id) } {
                    title { "run #" (run.id) " took " (layout::span(secs(run))) }
                    rect.slot x=(i as f64 * slot) y="0" width=(slot) height=(h) {}
                    rect.duration x=(i as f64 * slot + 1.5) y=(h - tall) width="9" height=(tall) {}
                }
            }
        }
    }
}
