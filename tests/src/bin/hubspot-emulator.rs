//! Runs the HubSpot CRM v3 emulator (`ebb_tests::hubspot`) as a process, for
//! the quickstart: `hubspot-emulator [ADDR]` (default 127.0.0.1:8089).
//! It is an emulator, not HubSpot: it accepts the token in
//! `ebb_tests::hubspot::TOKEN` and keeps everything in memory.

use ebb_tests::hubspot::{HubSpot, TOKEN};

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8089".to_owned());
    let hubspot = HubSpot::start_on(&addr).await;
    println!(
        "HubSpot emulator on {} (token {TOKEN}); Ctrl-C to stop",
        hubspot.url()
    );
    let mut report = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = report.tick() => {}
        }
        let (contacts, requests, violations) =
            hubspot.with(|s| (s.live("contacts").len(), s.requests.len(), s.violations));
        eprintln!(
            "emulator: {contacts} contacts, {requests} requests, {violations} over the rate limit"
        );
    }
}
