//! Where a destination's shared limits live in Redis (the workers' limiter
//! writes them, see `destinations/util/limiter.rs`), and a
//! read-only view of them for operators (`ebb limits`).

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::error::QueueError;

/// The keys of one destination's limits; one hash tag, so one Redis
/// Cluster slot.
#[derive(Debug, Clone)]
pub struct LimitKeys {
    /// ZSET of concurrency leases: lease id → expiry (ms, Redis clock).
    pub inflight: String,
    /// Pause deadline (ms) set when the destination answered 429.
    pub paused: String,
    /// GCRA theoretical arrival time (µs).
    pub gcra: String,
}

impl LimitKeys {
    pub fn new(prefix: &str, destination: &str) -> LimitKeys {
        let tag = format!("{{{prefix}:limits:{destination}}}");
        LimitKeys {
            inflight: format!("{tag}:inflight"),
            paused: format!("{tag}:paused"),
            gcra: format!("{tag}:gcra"),
        }
    }
}

/// A destination's limiter right now, across all workers.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LimiterView {
    /// Requests holding a live concurrency lease.
    pub in_flight: u64,
    /// How long every worker still holds off after a 429.
    pub paused_for_ms: u64,
    /// How long until the rate limiter grants the next request (0: now).
    pub next_token_in_ms: u64,
}

static VIEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
local now_us = t[1] * 1000000 + t[2]
local in_flight = redis.call('ZCOUNT', KEYS[1], now_ms, '+inf')
local paused = tonumber(redis.call('GET', KEYS[2]) or '0') - now_ms
local tat = tonumber(redis.call('GET', KEYS[3]) or '0') - now_us
if paused < 0 then paused = 0 end
if tat < 0 then tat = 0 end
return {in_flight, paused, math.floor(tat / 1000)}
"#,
    )
});

pub async fn view(
    conn: &mut ConnectionManager,
    keys: &LimitKeys,
) -> Result<LimiterView, QueueError> {
    let (in_flight, paused_for_ms, next_token_in_ms): (u64, u64, u64) = VIEW
        .key(&keys.inflight)
        .key(&keys.paused)
        .key(&keys.gcra)
        .invoke_async(conn)
        .await
        .map_err(|source| QueueError::Redis {
            context: "reading a destination's limiter",
            source,
        })?;
    Ok(LimiterView {
        in_flight,
        paused_for_ms,
        next_token_in_ms,
    })
}
