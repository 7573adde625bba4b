//! `ebb plan SYNC`: the dry run.

use crate::plan::PlanReport;

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
    if let Some(held) = &report.held {
        println!("  {held}");
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
