//! Counters and histograms, on planner and workers alike, rendered as
//! Prometheus text (names per Prometheus' conventions: `_total` for
//! counters, `_seconds` for durations), and sent over OTLP too when a
//! collector is named (see `traces.rs`). Each process counts what it did
//! itself; Prometheus sums the pods.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `ebb_records_total` | sync, destination, outcome | records settled: delivered, rejected, failed, superseded (worker) |
//! | `ebb_destination_requests_total` | destination, class | requests by answer: applied, per_record, rejected, throttled (429), transient, fatal (worker) |
//! | `ebb_retries_total` | sync, destination | records sent again after a transient failure (worker) |
//! | `ebb_limiter_wait_seconds_total` | destination | time spent waiting for the destination's limits (worker) |
//! | `ebb_batch_duration_seconds` | sync, destination | a batch from its claim to its settle (worker) |
//! | `ebb_planning_duration_seconds` | sync | streaming, diffing and committing a run's plan (planner) |
//! | `ebb_runs_total` | sync, state | runs that ended: succeeded, failed, cancelled (the process that ended them) |
//! | `ebb_run_duration_seconds` | sync, state | a run from its start to its end (likewise) |

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::traces::Otlp;

/// Bucket bounds, in seconds, for batch, planning and run durations.
const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];

struct Exporter {
    registry: prometheus::Registry,
    // Kept for the process's life: dropping it stops collection.
    provider: SdkMeterProvider,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// The instruments; created on first use from the meter `init` set up (a
/// process that never called `init`, a unit test, records nothing).
pub struct Metrics {
    records: Counter<u64>,
    requests: Counter<u64>,
    retries: Counter<u64>,
    limiter_wait: Counter<f64>,
    batch_duration: Histogram<f64>,
    planning_duration: Histogram<f64>,
    runs: Counter<u64>,
    run_duration: Histogram<f64>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let meter = match EXPORTER.get() {
        Some(exporter) => exporter.provider.meter("ebb"),
        None => SdkMeterProvider::builder().build().meter("ebb"),
    };
    let seconds = |name: &'static str, description: &'static str| {
        meter
            .f64_histogram(name)
            .with_unit("s")
            .with_description(description)
            .with_boundaries(DURATION_BOUNDS.to_vec())
            .build()
    };
    Metrics {
        records: meter
            .u64_counter("ebb_records")
            .with_description("Records settled, by outcome")
            .build(),
        requests: meter
            .u64_counter("ebb_destination_requests")
            .with_description(
                "Requests to destinations, by how they were answered (throttled: 429)",
            )
            .build(),
        retries: meter
            .u64_counter("ebb_retries")
            .with_description("Records sent again after a transient failure")
            .build(),
        limiter_wait: meter
            .f64_counter("ebb_limiter_wait")
            .with_unit("s")
            .with_description("Time spent waiting for destinations' limits")
            .build(),
        batch_duration: seconds("ebb_batch_duration", "A batch from its claim to its settle"),
        planning_duration: seconds(
            "ebb_planning_duration",
            "Streaming, diffing and committing a run's plan",
        ),
        runs: meter
            .u64_counter("ebb_runs")
            .with_description("Runs that ended, by state")
            .build(),
        run_duration: seconds("ebb_run_duration", "A run from its start to its end"),
    }
});

/// Sets up the Prometheus exporter, and OTLP export when `otlp` names a
/// collector; returns the provider (to flush at exit). Later calls return
/// the first one.
pub(super) fn init(service: &str, otlp: Option<Otlp>) -> SdkMeterProvider {
    EXPORTER
        .get_or_init(|| {
            let registry = prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .without_target_info()
                .build();
            let mut provider =
                SdkMeterProvider::builder().with_resource(super::traces::resource(service));
            match reader {
                Ok(reader) => provider = provider.with_reader(reader),
                Err(e) => eprintln!(
                    "warning: /metrics shows gauges only: the Prometheus exporter failed: {e}"
                ),
            }
            if let Some(otlp) = otlp {
                let exporter =
                    otlp.configure(opentelemetry_otlp::MetricExporter::builder().with_http());
                match exporter.build() {
                    Ok(exporter) => {
                        provider = provider.with_reader(PeriodicReader::builder(exporter).build())
                    }
                    Err(e) => eprintln!("warning: metrics are not exported over OTLP: {e}"),
                }
            }
            Exporter {
                registry,
                provider: provider.build(),
            }
        })
        .provider
        .clone()
}

/// The counters and histograms, as Prometheus text.
pub fn prometheus_text() -> String {
    let Some(exporter) = EXPORTER.get() else {
        return String::new();
    };
    let mut text = Vec::new();
    let families = exporter.registry.gather();
    if let Err(e) =
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut text)
    {
        tracing::warn!(error = %e, "cannot render metrics");
        return String::new();
    }
    String::from_utf8(text).unwrap_or_default()
}

/// What a settled batch did.
pub struct BatchReport<'a> {
    pub sync: &'a str,
    pub destination: &'a str,
    /// `(outcome, records)`.
    pub records: &'a [(&'static str, u64)],
    /// `(answer class, requests)`.
    pub requests: &'a [(&'static str, u32)],
    pub retries: u32,
    pub limiter_wait: Duration,
    pub duration: Duration,
}

pub fn batch_settled(report: &BatchReport<'_>) {
    let metrics = &*METRICS;
    let sync = KeyValue::new("sync", report.sync.to_owned());
    let destination = KeyValue::new("destination", report.destination.to_owned());
    for (outcome, records) in report.records {
        if *records > 0 {
            metrics.records.add(
                *records,
                &[
                    sync.clone(),
                    destination.clone(),
                    KeyValue::new("outcome", *outcome),
                ],
            );
        }
    }
    for (class, requests) in report.requests {
        if *requests > 0 {
            metrics.requests.add(
                u64::from(*requests),
                &[destination.clone(), KeyValue::new("class", *class)],
            );
        }
    }
    if report.retries > 0 {
        metrics.retries.add(
            u64::from(report.retries),
            &[sync.clone(), destination.clone()],
        );
    }
    metrics.limiter_wait.add(
        report.limiter_wait.as_secs_f64(),
        std::slice::from_ref(&destination),
    );
    metrics
        .batch_duration
        .record(report.duration.as_secs_f64(), &[sync, destination]);
}

pub fn planned(sync: &str, duration: Duration) {
    METRICS.planning_duration.record(
        duration.as_secs_f64(),
        &[KeyValue::new("sync", sync.to_owned())],
    );
}

/// A run ended (`state`: succeeded, failed, cancelled) after `duration`.
pub fn run_ended(sync: &str, state: &'static str, duration: Option<Duration>) {
    let labels = [
        KeyValue::new("sync", sync.to_owned()),
        KeyValue::new("state", state),
    ];
    METRICS.runs.add(1, &labels);
    if let Some(duration) = duration {
        METRICS.run_duration.record(duration.as_secs_f64(), &labels);
    }
}
