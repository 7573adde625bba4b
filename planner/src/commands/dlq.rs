//! `ebb dlq`: inspect, replay and discard dead letters.

use ebb_shared::state::dlq::DlqEntry;

use super::one_line;

pub fn print_table(entries: &[DlqEntry]) {
    if entries.is_empty() {
        println!("the DLQ is empty");
        return;
    }
    println!(
        "{:>6}  {:<22} {:<16} {:<11} {:<8} {:>4} {:>6}  {:<19} REASON",
        "ID", "SYNC", "KEY", "STAGE", "STATUS", "TRY", "RUN", "LAST FAILED"
    );
    for e in entries {
        println!(
            "{:>6}  {:<22} {:<16} {:<11} {:<8} {:>4} {:>6}  {:<19} {}",
            e.id,
            one_line(&e.sync_name, 22),
            one_line(e.record_key.as_deref().unwrap_or("(NULL)"), 16),
            e.stage,
            e.status,
            e.attempts,
            e.last_run_id,
            e.last_failed_at.format("%Y-%m-%d %H:%M:%S"),
            one_line(&e.reason, 80)
        );
    }
}

pub fn print_entry(e: &DlqEntry) {
    println!("DLQ entry #{}", e.id);
    println!("  sync         {} → {}", e.sync_name, e.destination);
    println!(
        "  record key   {}",
        e.record_key.as_deref().unwrap_or("(NULL)")
    );
    println!("  operation    {}", e.op);
    println!("  stage        {} ({})", e.stage, e.kind);
    println!(
        "  status       {}{}",
        e.status,
        e.resolution
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!("  attempts     {}", e.attempts);
    println!(
        "  runs         first {}, last {}, snapshot {}",
        e.first_run_id, e.last_run_id, e.snapshot_run_id
    );
    println!("  first failed {}", e.first_failed_at);
    println!("  last failed  {}", e.last_failed_at);
    println!("  reason       {}", e.reason);
    match &e.payload {
        Some(p) => println!(
            "  payload      {}",
            serde_json::to_string_pretty(p)
                .unwrap_or_default()
                .replace('\n', "\n               ")
        ),
        None => println!("  payload      (none: a delete)"),
    }
}
