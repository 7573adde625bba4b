//! An OTLP/HTTP receiver (JSON encoding, as the OpenTelemetry protocol
//! specifies it: `POST /v1/traces` with an `ExportTraceServiceRequest`,
//! `POST /v1/metrics` with an `ExportMetricsServiceRequest`), keeping the
//! spans and metric points it got.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

/// A span as the receiver keeps it.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// The resource's `service.name`.
    pub service: String,
    /// Attribute values, as text.
    pub attributes: BTreeMap<String, String>,
}

/// A sum or histogram data point as the receiver keeps it.
#[derive(Debug, Clone)]
pub struct MetricPoint {
    /// The instrument's name, as the process named it (no `_total`).
    pub name: String,
    /// The resource's `service.name`.
    pub service: String,
    /// A sum's value, or a histogram's count.
    pub value: f64,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<Span>>,
    metrics: Mutex<Vec<MetricPoint>>,
}

#[derive(Clone)]
pub struct Collector {
    pub addr: SocketAddr,
    received: Arc<Received>,
}

impl Collector {
    pub async fn start() -> Collector {
        let received = Arc::new(Received::default());
        let app = Router::new()
            .route("/v1/traces", post(export_traces))
            .route("/v1/metrics", post(export_metrics))
            .with_state(received.clone());
        let addr = crate::serve_emulator(app, "127.0.0.1:0").await;
        Collector { addr, received }
    }

    /// The base URL (the exporter adds `/v1/traces` or `/v1/metrics`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.spans.lock().expect("lock").clone()
    }

    pub fn metric_points(&self) -> Vec<MetricPoint> {
        self.received.metrics.lock().expect("lock").clone()
    }
}

/// The request body as JSON: this receiver speaks OTLP/HTTP JSON only.
fn json_request(headers: &HeaderMap, body: &[u8]) -> Result<Value, (StatusCode, String)> {
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_body {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this receiver takes OTLP/HTTP JSON (application/json)".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("not JSON: {e}")))
}

async fn export_metrics(
    State(state): State<Arc<Received>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, (StatusCode, String)> {
    let request = json_request(&headers, &body)?;
    let mut received = Vec::new();
    for resource_metrics in request["resourceMetrics"].as_array().into_iter().flatten() {
        let resource = attributes(&resource_metrics["resource"]["attributes"]);
        let service = resource.get("service.name").cloned().unwrap_or_default();
        let scopes = resource_metrics["scopeMetrics"]
            .as_array()
            .into_iter()
            .flatten();
        for metric in scopes.flat_map(|s| s["metrics"].as_array().into_iter().flatten()) {
            let name = text(&metric["name"]);
            // Sums and gauges carry `asInt` (a string, int64 in JSON) or
            // `asDouble`; histograms a `count`.
            for (kind, value_of) in [
                ("sum", point_value as fn(&Value) -> Option<f64>),
                ("gauge", point_value),
                ("histogram", histogram_count),
            ] {
                for point in metric[kind]["dataPoints"].as_array().into_iter().flatten() {
                    let Some(value) = value_of(point) else {
                        return Err((
                            StatusCode::BAD_REQUEST,
                            format!("{name}: a {kind} point without a value: {point}"),
                        ));
                    };
                    received.push(MetricPoint {
                        name: name.clone(),
                        service: service.clone(),
                        value,
                        attributes: attributes(&point["attributes"]),
                    });
                }
            }
        }
    }
    state.metrics.lock().expect("lock").extend(received);
    // An ExportMetricsServiceResponse with nothing rejected.
    Ok(Json(json!({})))
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| value.as_str()?.parse().ok())
}

fn point_value(point: &Value) -> Option<f64> {
    number(&point["asInt"]).or_else(|| number(&point["asDouble"]))
}

fn histogram_count(point: &Value) -> Option<f64> {
    number(&point["count"])
}

async fn export_traces(
    State(state): State<Arc<Received>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, (StatusCode, String)> {
    let request = json_request(&headers, &body)?;
    let mut received = Vec::new();
    for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
        let resource = attributes(&resource_spans["resource"]["attributes"]);
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans["scopeSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for span in scope_spans["spans"].as_array().into_iter().flatten() {
                received.push(Span {
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    parent_span_id: text(&span["parentSpanId"]),
                    name: text(&span["name"]),
                    service: service.clone(),
                    attributes: attributes(&span["attributes"]),
                });
            }
        }
    }
    state.spans.lock().expect("lock").extend(received);
    // An ExportTraceServiceResponse with nothing rejected.
    Ok(Json(json!({})))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// OTLP `KeyValue`s (`{"key": …, "value": {"stringValue": …}}`), values as
/// text whatever their type.
fn attributes(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = kv["key"].as_str()?.to_owned();
            let value = kv["value"].as_object()?.values().next().map(text)?;
            Some((key, value))
        })
        .collect()
}
