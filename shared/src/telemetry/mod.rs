//! What Ebb says about itself: logs (`logs.rs`: text on a terminal, JSON
//! lines otherwise) and metrics (`metrics.rs`: counters and histograms,
//! rendered as Prometheus text on `/metrics`).

mod logs;
pub mod metrics;

/// Sets up logs and metrics for a binary; `default_filter` applies when
/// `RUST_LOG` is unset.
pub fn init(default_filter: &str) {
    logs::init(default_filter);
    metrics::init();
}
