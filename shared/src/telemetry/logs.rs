//! Logging: human-readable lines on a terminal, JSON lines otherwise (for
//! Kubernetes log collectors). `RUST_LOG` filters. With traces on, every
//! line logged inside a traced span starts with the `trace_id` and
//! `span_id` of that span, so a log line leads to its place in the trace.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{Compact, Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

pub(super) fn init(default_filter: &str, traces: Option<&SdkTracerProvider>, service: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let terminal = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if terminal || std::env::var_os("EBB_LOG_TEXT").is_some() {
        // Colours only on a terminal: a log file keeps `key=value` greppable.
        let compact = tracing_subscriber::fmt::format().compact();
        fmt.event_format(WithTraceIds::Text(compact))
            .with_ansi(terminal)
            .boxed()
    } else {
        let json = tracing_subscriber::fmt::format().json();
        fmt.event_format(WithTraceIds::Json(json))
            .fmt_fields(JsonFields::new())
            .boxed()
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

/// An event format that puts the current span's trace and span ids first
/// (read through the global dispatcher, which `init` installs; tested in
/// `shared/tests/log_trace_ids.rs`):
/// `trace_id=… span_id=… ` before a text line, `"trace_id":…,"span_id":…`
/// as the first keys of a JSON line. Lines outside a traced span (or with
/// traces off) are unchanged.
enum WithTraceIds {
    Text(Format<Compact>),
    Json(Format<Json>),
}

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = super::traces::current_ids();
        match self {
            WithTraceIds::Text(format) => {
                if let Some((trace_id, span_id)) = &ids {
                    write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
                }
                format.format_event(ctx, writer, event)
            }
            WithTraceIds::Json(format) => {
                let Some((trace_id, span_id)) = ids else {
                    return format.format_event(ctx, writer, event);
                };
                let mut line = String::new();
                format.format_event(ctx, Writer::new(&mut line), event)?;
                match line.strip_prefix('{') {
                    Some(rest) => write!(
                        writer,
                        "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
                    ),
                    None => writer.write_str(&line),
                }
            }
        }
    }
}
