//! `ebb runs`, `ebb records` and `ebb syncs`: run history, a run's records,
//! and each sync's state.

use ebb_shared::state::records::RunRecord;
use ebb_shared::state::runs::Run;

use super::one_line;
use crate::control::syncs::SyncSummary;

pub fn print_table(runs: &[Run]) {
    if runs.is_empty() {
        println!("no runs yet");
        return;
    }
    println!(
        "{:>6}  {:<24} {:<7} {:<10} {:>9} {:>9} {:>9} {:>8} {:>7}  {:<20} ERROR",
        "RUN",
        "SYNC",
        "KIND",
        "STATE",
        "TO SEND",
        "DELIVERED",
        "REJECTED",
        "FAILED",
        "SECS",
        "STARTED"
    );
    for r in runs {
        let secs = r
            .finished_at
            .map(|f| {
                format!(
                    "{:.1}",
                    (f - r.created_at).num_milliseconds() as f64 / 1000.0
                )
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>6}  {:<24} {:<7} {:<10} {:>9} {:>9} {:>9} {:>8} {:>7}  {:<20} {}",
            r.id,
            one_line(&r.sync_name, 24),
            r.kind,
            r.state,
            r.to_send,
            r.delivered,
            r.rejected + r.rejected_at_plan,
            r.failed,
            secs,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.error
                .as_deref()
                .map(|e| one_line(e, 60))
                .unwrap_or_default()
        );
    }
}

/// `ebb records RUN`.
pub fn print_records(records: &[RunRecord]) {
    if records.is_empty() {
        println!("no records");
        return;
    }
    println!(
        "{:<24} {:<7} {:>6}  {:<11} REASON",
        "KEY", "OP", "BATCH", "OUTCOME"
    );
    for r in records {
        println!(
            "{:<24} {:<7} {:>6}  {:<11} {}",
            one_line(&r.record_key, 24),
            r.op,
            r.batch_no,
            r.outcome.as_deref().unwrap_or("-"),
            one_line(r.reason.as_deref().unwrap_or(""), 100)
        );
    }
}

/// `ebb syncs`.
pub fn print_syncs(syncs: &[SyncSummary]) {
    println!(
        "{:<24} {:<20} {:<8} {:<16} {:<7} {:<20} {:<22} {:>5}",
        "SYNC", "DESTINATION", "MODE", "SCHEDULE", "PAUSED", "NEXT RUN", "LAST RUN", "DLQ"
    );
    for s in syncs {
        let last = s
            .last_run
            .as_ref()
            .map(|r| format!("#{} {}", r.id, r.state))
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<24} {:<20} {:<8} {:<16} {:<7} {:<20} {:<22} {:>5}",
            one_line(&s.name, 24),
            one_line(&s.destination, 20),
            s.mode,
            one_line(s.schedule.as_deref().unwrap_or("-"), 16),
            if s.paused { "yes" } else { "no" },
            s.next_run_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            last,
            s.open_dlq
        );
    }
}
