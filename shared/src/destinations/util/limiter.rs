//! A destination's limits, enforced across every worker process through
//! Redis, on the Redis server's clock (pod clocks may drift):
//!
//! - **Concurrency**: a leased semaphore, a ZSET of `lease id → expiry`. A
//!   request holds a lease while in flight and renews it every third of its
//!   TTL; a worker that dies stops renewing, so its leases expire and the
//!   capacity returns within `LEASE_TTL`.
//! - **Rate**: GCRA (as in redis-cell) with no burst, paced at
//!   [`RATE_HEADROOM`] of the configured rate, so no window of `per` ever
//!   holds more than `requests` requests even with a few milliseconds of
//!   network jitter between the grant and the request reaching the API.
//! - **Back-pressure**: a 429 with `Retry-After` pauses the destination for
//!   every worker, not only the one that got it.
//!
//! Waiting happens here, inside the task: a throttled batch neither goes back
//! through the queue nor spends retry attempts.

use std::sync::LazyLock;
use std::time::Duration;

use crate::config::Limits;
use crate::limits::LimitKeys;
use apalis_redis::ConnectionManager;
use rand::Rng;
use redis::Script;

use super::adaptive::{AdaptiveConcurrency, Slot};

/// The share of a configured rate Ebb uses.
pub const RATE_HEADROOM: f64 = 0.95;
/// How long a lease outlives its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

static ACQUIRE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] semaphore ZSET, KEYS[2] pause key; ARGV: limit, lease id, ttl ms
-- -> {1, 0} acquired, {0, ms} paused for ms, {0, 0} full
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local paused_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused_until > now then return {0, paused_until - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
  return {1, 0}
end
return {0, 0}
"#,
    )
});

static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] semaphore ZSET; ARGV: lease id, ttl ms -> 1 renewed, 0 lost
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) < now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"#,
    )
});

static TAKE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- GCRA without burst. KEYS[1] theoretical arrival time (µs); ARGV: interval µs
-- -> {1, 0} allowed, {0, µs} retry in µs
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat > now then return {0, tat - now} end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil(interval / 1000) + 1000)
return {1, 0}
"#,
    )
});

static PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- KEYS[1] pause key; ARGV: ms -> pauses every worker's acquire for ms (never shortens)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local target = now + tonumber(ARGV[1])
if target > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], target, 'PX', tonumber(ARGV[1]) + 1000)
end
return 1
"#,
    )
});

pub struct Limiter {
    destination: String,
    conn: ConnectionManager,
    semaphore_key: String,
    pause_key: String,
    token_key: String,
    limits: Limits,
    /// GCRA emission interval, in µs, with headroom.
    interval_us: Option<u64>,
    lease_ttl: Duration,
    /// This process's share, below the global cap (None: fixed at the cap).
    adaptive: Option<AdaptiveConcurrency>,
}

/// A granted slot: a renewed lease, released by [`Permit::release`] (or,
/// failing that, by dropping it).
pub struct Permit {
    conn: ConnectionManager,
    key: String,
    lease: String,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Limiter {
    /// `prefix` is `[state].queue_prefix`; the destination's keys share one
    /// hash tag, so they live in one Redis Cluster slot.
    pub fn new(conn: ConnectionManager, prefix: &str, destination: &str, limits: &Limits) -> Self {
        let keys = LimitKeys::new(prefix, destination);
        let interval_us = limits.rate_limit.map(|r| {
            let per_request = r.per.as_secs_f64() / f64::from(r.requests) / RATE_HEADROOM;
            (per_request * 1e6).ceil() as u64
        });
        Limiter {
            destination: destination.to_owned(),
            conn,
            semaphore_key: keys.inflight,
            pause_key: keys.paused,
            token_key: keys.gcra,
            limits: limits.clone(),
            interval_us,
            lease_ttl: LEASE_TTL,
            adaptive: limits
                .adaptive_concurrency
                .then(|| AdaptiveConcurrency::new(limits.max_concurrency as usize)),
        }
    }

    /// Shorter leases, for tests of crashed holders.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Waits for this process's adaptive share (see `adaptive`), when on.
    pub async fn local_slot(&self) -> Option<Slot<'_>> {
        match &self.adaptive {
            Some(adaptive) => Some(adaptive.acquire().await),
            None => None,
        }
    }

    /// Waits for a concurrency slot, then for a rate token, and returns the
    /// slot; the caller sends at once. Redis errors are waited out too: a
    /// request is never sent without its permit.
    pub async fn acquire(&self) -> Permit {
        let lease = uuid::Uuid::now_v7().simple().to_string();
        let ttl_ms = self.lease_ttl.as_millis() as u64;
        let mut conn = self.conn.clone();
        loop {
            let answer: Result<(u8, u64), _> = ACQUIRE_LEASE
                .key(&self.semaphore_key)
                .key(&self.pause_key)
                .arg(self.limits.max_concurrency)
                .arg(&lease)
                .arg(ttl_ms)
                .invoke_async(&mut conn)
                .await;
            match answer {
                Ok((1, _)) => break,
                Ok((_, paused_ms)) if paused_ms > 0 => {
                    tokio::time::sleep(Duration::from_millis(paused_ms)).await;
                }
                Ok(_) => tokio::time::sleep(jitter(5, 25)).await,
                Err(e) => {
                    tracing::warn!(destination = %self.destination, error = %e, "limiter unreachable; waiting");
                    tokio::time::sleep(jitter(500, 1500)).await;
                }
            }
        }
        let permit = Permit {
            conn: self.conn.clone(),
            key: self.semaphore_key.clone(),
            renewer: tokio::spawn(renew(
                self.conn.clone(),
                self.semaphore_key.clone(),
                lease.clone(),
                self.destination.clone(),
                self.lease_ttl,
            )),
            lease,
            released: false,
        };
        self.take_rate_token().await;
        permit
    }

    /// Waits for a rate token only. For a request sent under a permit already
    /// held (a lookup or a schema read a send needs before its write): it
    /// counts against the rate, but waiting for a second concurrency slot
    /// while holding one could deadlock.
    pub async fn take_rate_token(&self) {
        let Some(interval_us) = self.interval_us else {
            return;
        };
        let mut conn = self.conn.clone();
        loop {
            let answer: Result<(u8, u64), _> = TAKE_TOKEN
                .key(&self.token_key)
                .arg(interval_us)
                .invoke_async(&mut conn)
                .await;
            match answer {
                Ok((1, _)) => break,
                Ok((_, wait_us)) => {
                    tokio::time::sleep(Duration::from_micros(wait_us.max(100))).await;
                }
                Err(e) => {
                    tracing::warn!(destination = %self.destination, error = %e, "limiter unreachable; waiting");
                    tokio::time::sleep(jitter(500, 1500)).await;
                }
            }
        }
    }

    /// Back-pressure from the destination (a 429): every worker holds off
    /// for `wait`.
    pub async fn pause(&self, wait: Duration) {
        let mut conn = self.conn.clone();
        let result: Result<u8, _> = PAUSE
            .key(&self.pause_key)
            .arg(wait.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = result {
            tracing::warn!(destination = %self.destination, error = %e, "cannot share a destination pause; pausing this worker only");
        }
    }
}

impl Permit {
    pub async fn release(mut self) {
        self.renewer.abort();
        self.released = true;
        let _: Result<u8, _> = redis::cmd("ZREM")
            .arg(&self.key)
            .arg(&self.lease)
            .query_async(&mut self.conn)
            .await;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.released {
            let mut conn = self.conn.clone();
            let key = std::mem::take(&mut self.key);
            let lease = std::mem::take(&mut self.lease);
            tokio::spawn(async move {
                let _: Result<u8, _> = redis::cmd("ZREM")
                    .arg(key)
                    .arg(lease)
                    .query_async(&mut conn)
                    .await;
            });
        }
    }
}

async fn renew(
    mut conn: ConnectionManager,
    key: String,
    lease: String,
    destination: String,
    ttl: Duration,
) {
    let ttl_ms = ttl.as_millis() as u64;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let renewed: Result<u8, _> = RENEW_LEASE
            .key(&key)
            .arg(&lease)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(%destination, "a concurrency lease expired while its request was in flight (worker stalled?)");
                return;
            }
            Err(e) => tracing::warn!(%destination, error = %e, "cannot renew a concurrency lease"),
        }
    }
}

fn jitter(min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(rand::rng().random_range(min_ms..=max_ms))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Instant;

    use crate::config::{RateLimit, StateConfig};
    use crate::secret::Secret;

    use super::*;

    /// A limiter on the local Redis (scripts/ensure-services.sh), with keys
    /// of its own.
    pub(crate) async fn local_limiter(limits: Limits) -> Limiter {
        let state = StateConfig {
            database_url: Secret::new("postgres://unused"),
            redis_url: Secret::new("redis://127.0.0.1:6379"),
            queue_prefix: format!("ebbunit-{}", uuid::Uuid::now_v7().simple()),
            run_records_retention_days: 14,
        };
        let conn = crate::queue::connect(&state)
            .await
            .expect("Redis on 127.0.0.1:6379 (scripts/ensure-services.sh starts it)");
        Limiter::new(conn, &state.queue_prefix, "d", &limits)
    }

    #[tokio::test]
    async fn concurrency_is_capped_and_released_slots_are_reused() {
        let limiter = local_limiter(Limits {
            max_concurrency: 2,
            rate_limit: None,
            adaptive_concurrency: false,
        })
        .await;
        let a = limiter.acquire().await;
        let _b = limiter.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(300), limiter.acquire()).await;
        assert!(third.is_err(), "a third slot was granted over a cap of 2");
        a.release().await;
        tokio::time::timeout(Duration::from_secs(2), limiter.acquire())
            .await
            .expect("a released slot is granted again");
    }

    #[tokio::test]
    async fn a_crashed_holders_slot_returns_after_the_lease_ttl() {
        let limiter = local_limiter(Limits {
            max_concurrency: 1,
            rate_limit: None,
            adaptive_concurrency: false,
        })
        .await
        .with_lease_ttl(Duration::from_millis(600));
        let held = limiter.acquire().await;
        // A crash: the renewer stops and nothing releases the lease.
        held.renewer.abort();
        std::mem::forget(held);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(3), limiter.acquire())
            .await
            .expect("the slot came back");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn live_leases_are_renewed_past_their_ttl() {
        let limiter = local_limiter(Limits {
            max_concurrency: 1,
            rate_limit: None,
            adaptive_concurrency: false,
        })
        .await
        .with_lease_ttl(Duration::from_millis(300));
        let _held = limiter.acquire().await;
        let second = tokio::time::timeout(Duration::from_millis(1200), limiter.acquire()).await;
        assert!(second.is_err(), "a renewed lease was taken over");
    }

    #[tokio::test]
    async fn the_rate_is_paced_below_the_limit() {
        let limiter = local_limiter(Limits {
            max_concurrency: 100,
            rate_limit: Some(RateLimit {
                requests: 20,
                per: Duration::from_secs(1),
            }),
            adaptive_concurrency: false,
        })
        .await;
        let started = Instant::now();
        for _ in 0..11 {
            limiter.acquire().await.release().await;
        }
        // 11 grants at 20/s × 0.95 need at least 10 intervals of 52.6 ms.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(520), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_pause_holds_every_acquire() {
        let limiter = local_limiter(Limits {
            max_concurrency: 10,
            rate_limit: None,
            adaptive_concurrency: false,
        })
        .await;
        limiter.pause(Duration::from_millis(400)).await;
        let started = Instant::now();
        limiter.acquire().await.release().await;
        assert!(started.elapsed() >= Duration::from_millis(350));
    }
}
