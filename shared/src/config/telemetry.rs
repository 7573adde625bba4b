//! `[telemetry]`: where traces and metrics go (OTLP over HTTP). The standard
//! `OTEL_EXPORTER_OTLP_*` and `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`
//! variables apply too, and win; without either, nothing is pushed
//! (metrics stay on `/metrics`).
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://otel-collector:4318"   # OTLP/HTTP
//! otlp_protocol = "http/protobuf"                 # or "http/json"
//! ```

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP address (`/v1/traces` and `/v1/metrics`
    /// are added).
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (the default) or `http/json`.
    pub otlp_protocol: Option<OtlpProtocol>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}
