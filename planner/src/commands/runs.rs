//! `ebb runs`: run history.

use ebb_shared::state::runs::Run;

use super::one_line;

pub fn print_table(runs: &[Run]) {
    if runs.is_empty() {
        println!("no runs yet");
        return;
    }
    println!(
        "{:>6}  {:<24} {:<7} {:<10} {:>9} {:>9} {:>9} {:>8} {:>7}  {:<20} {}",
        "RUN",
        "SYNC",
        "KIND",
        "STATE",
        "TO SEND",
        "DELIVERED",
        "REJECTED",
        "FAILED",
        "SECS",
        "STARTED",
        "ERROR"
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
