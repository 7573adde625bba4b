//! `ebb plan SYNC`: the dry run.

use crate::plan::{Budget, PlanReport, budget};

pub fn print_report(report: &PlanReport) {
    let c = &report.counts;
    println!(
        "plan for sync `{}` → `{}` ({} mode{}):",
        report.sync,
        report.destination,
        report.mode,
        if report.full_resync {
            ", full resync"
        } else {
            ""
        }
    );
    println!("  rows read          {:>10}", c.rows_read);
    println!("  added              {:>10}", c.added);
    println!("  changed            {:>10}", c.changed);
    println!("  unchanged          {:>10}", c.unchanged);
    println!(
        "  removed            {:>10}{}",
        c.removed,
        if c.deletes > 0 {
            "  (will be deleted)"
        } else if c.removed > 0 {
            "  (kept: only mirror mode deletes)"
        } else {
            ""
        }
    );
    println!("  skipped by mode    {:>10}", c.skipped_by_mode);
    println!("  rejected           {:>10}", c.rejected);
    println!("  to send            {:>10}", c.to_send);
    if c.flapping > 0 {
        println!(
            "  flapping           {:>10}  changed back to a version a recent run delivered (e.g. {})",
            c.flapping,
            report
                .flapping_keys
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(held) = &report.held {
        println!("  {held}");
    }
    if let Some(b) = &report.budget {
        print_budget(&report.destination, b);
    }
    if !report.rejections.is_empty() {
        println!("rejected records (first {}):", report.rejections.len());
        for r in &report.rejections {
            println!(
                "  {:<20} {}",
                r.record_key.as_deref().unwrap_or("(NULL key)"),
                r.reason
            );
        }
    }
}

/// The API budget: requests, time at the rate limit, share of the quota.
fn print_budget(destination: &str, b: &Budget) {
    println!(
        "API budget at `{destination}` (every answer a success):\n  requests           {:>10}  in {} batches ({} creates or upserts, {} updates by id, {} removals)",
        b.requests, b.batches, b.writes.writes, b.writes.updates_by_id, b.writes.removes
    );
    if let (Some(rate), Some(eta)) = (&b.rate_limit, b.eta_secs) {
        println!(
            "  at its rate limit  {:>10}  ({rate}, shared by every sync writing to `{destination}`)",
            budget::seconds(eta)
        );
    }
    if let (Some(quota), Some(pct)) = (b.daily_request_quota, b.daily_quota_pct) {
        println!("  daily quota share  {pct:>9.2}%  of {quota} requests a day");
    }
    if !b.shared_with.is_empty() {
        println!("  shares limits with syncs: {}", b.shared_with.join(", "));
    }
    if let Some(note) = &b.note {
        println!("  {note}");
    }
}
