//! `ebb limits`: each destination's limits as configured and as they stand
//! right now across all workers (from Redis), with its queue.

use ebb_shared::config::Config;
use ebb_shared::limits::{self, LimitKeys, LimiterView};
use ebb_shared::queue::QueueDepth;
use serde::Serialize;

use crate::enqueue::Queue;
use crate::error::PlannerError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationLimits {
    pub destination: String,
    /// The destination's `type`.
    #[serde(rename = "type")]
    pub destination_type: String,
    pub max_concurrency: u32,
    /// `[requests, per_seconds]`, when set.
    #[schema(value_type = Option<Vec<f64>>)]
    pub rate_limit: Option<(u32, f64)>,
    pub adaptive_concurrency: bool,
    pub now: LimiterView,
    pub queue: QueueDepth,
}

pub async fn collect(config: &Config) -> Result<Vec<DestinationLimits>, PlannerError> {
    let mut queue = Queue::connect(&config.state, &config.worker).await?;
    collect_on(config, &mut queue).await
}

/// [`collect`] on an open connection (`ebb serve` keeps one for `/metrics`).
pub async fn collect_on(
    config: &Config,
    queue: &mut Queue,
) -> Result<Vec<DestinationLimits>, PlannerError> {
    let mut out = Vec::new();
    for (name, destination) in &config.destinations {
        let configured = &destination.delivery().limits;
        let keys = LimitKeys::new(&config.state.queue_prefix, name);
        out.push(DestinationLimits {
            destination: name.clone(),
            destination_type: destination.type_name().to_owned(),
            max_concurrency: configured.max_concurrency,
            rate_limit: configured
                .rate_limit
                .map(|r| (r.requests, r.per.as_secs_f64())),
            adaptive_concurrency: configured.adaptive_concurrency,
            now: limits::view(&mut queue.conn, &keys).await?,
            queue: queue.depth(name).await?,
        });
    }
    Ok(out)
}

pub fn print_table(rows: &[DestinationLimits]) {
    println!(
        "{:<20} {:>9} {:>14} {:>8} {:>9} {:>10} {:>8} {:>9} {:>7}",
        "DESTINATION",
        "IN FLIGHT",
        "RATE LIMIT",
        "NEXT IN",
        "PAUSED",
        "QUEUED",
        "RUNNING",
        "ADAPTIVE",
        "WORKERS"
    );
    for r in rows {
        let rate = r
            .rate_limit
            .map(|(n, per)| format!("{n}/{per}s"))
            .unwrap_or_else(|| "none".into());
        println!(
            "{:<20} {:>9} {:>14} {:>6}ms {:>7}ms {:>10} {:>8} {:>9} {:>7}",
            super::one_line(&r.destination, 20),
            format!("{}/{}", r.now.in_flight, r.max_concurrency),
            rate,
            r.now.next_token_in_ms,
            r.now.paused_for_ms,
            r.queue.pending + r.queue.scheduled,
            r.queue.in_flight,
            if r.adaptive_concurrency { "on" } else { "off" },
            r.queue.live_workers
        );
    }
}
