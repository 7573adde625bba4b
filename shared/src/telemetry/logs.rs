//! Logging: human-readable lines on a terminal, JSON lines otherwise (for
//! Kubernetes log collectors). `RUST_LOG` filters.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let terminal = std::io::stderr().is_terminal();
    let result = if terminal || std::env::var_os("EBB_LOG_TEXT").is_some() {
        // Colours only on a terminal: a log file keeps `key=value` greppable.
        builder.compact().with_ansi(terminal).try_init()
    } else {
        builder.json().try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}
