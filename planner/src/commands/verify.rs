//! `ebb verify` and `ebb verifications`: what reading records back from a
//! destination found.

use ebb_shared::state::verifications::{Drift, DriftKind, Verification};

use super::one_line;

pub fn print(v: &Verification, drift: &[Drift]) {
    println!(
        "verification #{} of sync `{}` → `{}` ({}{}): {} delivered records read back",
        v.id,
        v.sync_name,
        v.destination,
        if v.scope == "all" {
            "every delivered record"
        } else {
            "a random sample"
        },
        v.run_id
            .map(|run| format!(", as of run #{run}"))
            .unwrap_or_default(),
        v.checked
    );
    println!("  matching   {:>8}", v.matching);
    println!(
        "  missing    {:>8}  delivered, gone from the destination",
        v.missing
    );
    println!(
        "  different  {:>8}  delivered, other values there",
        v.different
    );
    match v.extra {
        Some(extra) => println!(
            "  extra      {extra:>8}  at the destination, neither delivered nor in the model (mirror mode)"
        ),
        None => println!(
            "  extra             -  not looked for (mirror mode, on a destination that lists its records)"
        ),
    }
    println!(
        "  pending    {:>8}  changed in the model since delivered: the next run sends them",
        v.pending
    );
    if drift.is_empty() {
        return;
    }
    println!("drifted records (first {}):", drift.len());
    for d in drift {
        let what = match d.kind {
            DriftKind::Missing => "missing".to_owned(),
            DriftKind::Extra => "extra".to_owned(),
            DriftKind::Different => {
                let fields: Vec<String> = d
                    .fields
                    .iter()
                    .map(|f| format!("{}: delivered {}, found {}", f.field, f.delivered, f.found))
                    .collect();
                format!("different ({})", one_line(&fields.join("; "), 120))
            }
        };
        println!("  {:<20} {what}", d.record_key);
    }
    println!(
        "send them again with `ebb verify {} --resend` (verifies again, then runs the sync)",
        v.sync_name
    );
}

pub fn print_table(list: &[Verification]) {
    if list.is_empty() {
        println!("no verifications yet; run `ebb verify SYNC`");
        return;
    }
    println!(
        "{:>6}  {:<24} {:<7} {:<9} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7}  {:<20} ERROR",
        "ID",
        "SYNC",
        "SCOPE",
        "STATE",
        "CHECKED",
        "MATCHING",
        "MISSING",
        "DIFFERENT",
        "EXTRA",
        "RESENT",
        "STARTED"
    );
    for v in list {
        println!(
            "{:>6}  {:<24} {:<7} {:<9} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7}  {:<20} {}",
            v.id,
            v.sync_name,
            v.scope,
            v.state,
            v.checked,
            v.matching,
            v.missing,
            v.different,
            v.extra.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            v.resent,
            v.started_at.format("%Y-%m-%d %H:%M:%S"),
            v.error
                .as_deref()
                .map(|e| one_line(e, 60))
                .unwrap_or_default()
        );
    }
}
