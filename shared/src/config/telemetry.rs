//! `[telemetry]`: where traces go (OTLP over HTTP). The standard
//! `OTEL_EXPORTER_OTLP_*` and `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`
//! variables apply too, and win; without either, traces are off.
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
    /// The collector's OTLP/HTTP address (`/v1/traces` is added).
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
