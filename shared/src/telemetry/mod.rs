//! What Ebb says about itself: logs (`logs.rs`: text on a terminal, JSON
//! lines otherwise), metrics (`metrics.rs`: counters and histograms,
//! rendered as Prometheus text on `/metrics`) and traces (`traces.rs`:
//! OTLP, when a collector is named).

mod logs;
pub mod metrics;
pub mod traces;

use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::config::TelemetryConfig;

pub use traces::{continue_trace, record_trace_id, traceparent};

/// Flushes the spans not exported yet when dropped: hold it for the life of
/// the process.
#[must_use = "dropping it flushes and stops trace export"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    metrics: SdkMeterProvider,
}

/// How long exiting waits for the last spans to reach the collector: an
/// unreachable one delays the exit this much at most, and never a sync.
const FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            let _ = provider.shutdown_with_timeout(FLUSH_AT_EXIT);
        }
        let _ = self.metrics.shutdown_with_timeout(FLUSH_AT_EXIT);
    }
}

/// Sets up logs, metrics and traces for a binary. `default_filter` applies
/// when `RUST_LOG` is unset; `service` names the process in traces unless
/// `OTEL_SERVICE_NAME` does.
pub fn init(default_filter: &str, service: &str, config: &TelemetryConfig) -> Telemetry {
    let traces = traces::provider(service, config);
    logs::init(default_filter, traces.as_ref(), service);
    let metrics = metrics::init(service, traces::Otlp::for_signal("metrics", config));
    Telemetry { traces, metrics }
}
