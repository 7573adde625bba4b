//! Traces: spans exported with OTLP over HTTP when a collector is named
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
//! `[telemetry].otlp_endpoint`); off otherwise. Spans are batched and
//! exported from a thread of their own, and dropped when the queue is full:
//! an unreachable collector never slows or fails a sync.
//!
//! A run is one trace: the planner's `ebb.run` span is its root, and its
//! W3C `traceparent` travels with every batch task (and with the run in
//! Postgres, for tasks re-enqueued from there), so each worker's
//! `ebb.batch` span joins it.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{OtlpProtocol, TelemetryConfig};

/// Where OTLP goes, for one signal (`traces` or `metrics`): `None` when no
/// collector is named for it.
pub(super) struct Otlp {
    /// From `[telemetry]`, unless the `OTEL_EXPORTER_OTLP_*` variables
    /// name the endpoint.
    endpoint: Option<String>,
    /// From `[telemetry]`, unless the variables name the protocol.
    protocol: Option<Protocol>,
}

impl Otlp {
    pub(super) fn for_signal(signal: &str, config: &TelemetryConfig) -> Option<Otlp> {
        let upper = signal.to_uppercase();
        let set = |var: &str| std::env::var_os(var).is_some();
        let endpoint_from_env = set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set(&format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT"));
        if !endpoint_from_env && config.otlp_endpoint.is_none() {
            return None;
        }
        let protocol_from_env = set("OTEL_EXPORTER_OTLP_PROTOCOL")
            || set(&format!("OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"));
        Some(Otlp {
            endpoint: (!endpoint_from_env)
                .then_some(config.otlp_endpoint.as_ref())
                .flatten()
                .map(|base| format!("{}/v1/{signal}", base.trim_end_matches('/'))),
            protocol: (!protocol_from_env).then_some(match config.otlp_protocol {
                Some(OtlpProtocol::HttpJson) => Protocol::HttpJson,
                _ => Protocol::HttpBinary,
            }),
        })
    }

    pub(super) fn configure<B: WithExportConfig>(&self, mut builder: B) -> B {
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if let Some(protocol) = self.protocol {
            builder = builder.with_protocol(protocol);
        }
        builder
    }
}

/// The resource of this process: `service` unless `OTEL_SERVICE_NAME`
/// names it; `OTEL_RESOURCE_ATTRIBUTES` apply.
pub(super) fn resource(service: &str) -> Resource {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    resource.build()
}

/// The tracer provider, when a collector is named.
pub(super) fn provider(service: &str, config: &TelemetryConfig) -> Option<SdkTracerProvider> {
    let otlp = Otlp::for_signal("traces", config)?;
    let exporter = otlp.configure(opentelemetry_otlp::SpanExporter::builder().with_http());
    let exporter = match exporter.build() {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("warning: traces are off: the OTLP exporter cannot be built: {e}");
            return None;
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service))
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    Some(provider)
}

/// The layer that turns `tracing` spans into OpenTelemetry spans.
pub(super) fn layer<S>(
    provider: &SdkTracerProvider,
    service: &str,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()))
}

/// The W3C `traceparent` of `span`, to carry to another process; `None`
/// when traces are off.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span a `traceparent` names, and records its
/// trace id in the span's `trace_id` field (which logs show).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
}

/// The trace and span ids (hex) of the span entered on this thread, when it
/// is traced.
pub(super) fn current_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// Records `span`'s trace id in its `trace_id` field, when traces are on.
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}
