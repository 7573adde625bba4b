//! One module per `ebb` subcommand.

pub mod check;
pub mod dlq;
pub mod limits;
pub mod metrics;
pub mod plan;
pub mod run;
pub mod runs;
pub mod serve;
pub mod verify;

use serde::Serialize;

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("cannot render JSON: {e}"),
    }
}

/// Shortens a message for one-line table cells.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
