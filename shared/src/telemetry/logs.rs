//! Logging: human-readable lines on a terminal, JSON lines otherwise (for
//! Kubernetes log collectors). `RUST_LOG` filters. With traces on, the
//! spans of a run and of a batch carry its `trace_id`, which their log
//! lines show.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub(super) fn init(default_filter: &str, traces: Option<&SdkTracerProvider>, service: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let terminal = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if terminal || std::env::var_os("EBB_LOG_TEXT").is_some() {
        // Colours only on a terminal: a log file keeps `key=value` greppable.
        fmt.compact().with_ansi(terminal).boxed()
    } else {
        fmt.json().boxed()
    };
    // Ebb's own spans go to traces whatever `RUST_LOG` says of its logs.
    let spans = Targets::new()
        .with_target("ebb_planner", Level::INFO)
        .with_target("ebb_worker", Level::INFO)
        .with_target("ebb_shared", Level::INFO);
    let otel = traces.map(|provider| super::traces::layer(provider, service).with_filter(spans));
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
}
