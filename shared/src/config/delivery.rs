//! The delivery settings every destination has: records per request, the
//! request timeout, retries, and the limits every worker shares. Each
//! destination gives its own defaults and caps ([`DeliveryDefaults`]); the
//! fields are read and checked here, once.

use std::time::Duration;

use serde::Deserialize;

/// The fields of a destination's table that [`DeliverySettings`] reads.
pub const DELIVERY_FIELDS: &[&str] = &[
    "batch_size",
    "timeout_secs",
    "max_retries",
    "max_concurrency",
    "rate_limit",
    "adaptive_concurrency",
    "daily_request_quota",
];

/// Largest batch any destination accepts from config; bigger batches make a
/// single poison record expensive to isolate.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// How a destination takes its records, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// Records per batch task (and, for most destinations, per request).
    pub batch_size: usize,
    /// How long one request may take. Destinations without requests of
    /// their own (`postgres`) do not take this setting.
    pub timeout: Duration,
    /// Transient failures a record may have before it fails.
    pub max_retries: u32,
    pub limits: Limits,
    /// Requests the destination account may make in a day (HubSpot's
    /// daily limit, Salesforce's 24-hour API requests). Not enforced:
    /// `ebb plan` says what share of it a run takes.
    pub daily_request_quota: Option<u64>,
}

/// A destination's limits, enforced across every worker through Redis:
/// every sync that writes to the destination shares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Requests in flight at once.
    pub max_concurrency: u32,
    pub rate_limit: Option<RateLimit>,
    /// Each worker process adapts its share below `max_concurrency` (AIMD
    /// on latency and back-pressure).
    pub adaptive_concurrency: bool,
}

/// At most `requests` per `per`, in any window of that length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

/// A vendor's own cap on records per request, below [`MAX_BATCH_SIZE`].
#[derive(Debug, Clone, Copy)]
pub struct BatchCap {
    pub max: usize,
    /// The start of the error: `HubSpot's batch endpoints take`.
    pub api_takes: &'static str,
    /// What a record is called there: `inputs`, `members`, `records`.
    pub unit: &'static str,
    /// Appended to the error, e.g. how to allow larger batches.
    pub hint: &'static str,
}

/// One destination type's defaults for its delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryDefaults {
    pub batch_size: usize,
    pub cap: Option<BatchCap>,
    /// `None`: the destination takes no `timeout_secs`.
    pub timeout_secs: Option<u64>,
    pub max_retries: u32,
    pub max_concurrency: u32,
    pub rate_limit: Option<RateLimit>,
    pub adaptive_concurrency: bool,
    pub daily_request_quota: Option<u64>,
}

impl DeliveryDefaults {
    /// The defaults most destinations share: a 30 s timeout, 5 retries,
    /// adaptive concurrency on, no rate limit.
    pub fn new(batch_size: usize, max_concurrency: u32) -> Self {
        Self {
            batch_size,
            cap: None,
            timeout_secs: Some(30),
            max_retries: 5,
            max_concurrency,
            rate_limit: None,
            adaptive_concurrency: true,
            daily_request_quota: None,
        }
    }

    pub fn daily_request_quota(mut self, quota: u64) -> Self {
        self.daily_request_quota = Some(quota);
        self
    }

    pub fn cap(mut self, cap: BatchCap) -> Self {
        self.cap = Some(cap);
        self
    }

    pub fn rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }

    pub fn adaptive_concurrency(mut self, on: bool) -> Self {
        self.adaptive_concurrency = on;
        self
    }

    /// For destinations whose requests are not HTTP calls of their own.
    pub fn without_timeout(mut self) -> Self {
        self.timeout_secs = None;
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelivery {
    batch_size: Option<usize>,
    timeout_secs: Option<u64>,
    max_retries: Option<u32>,
    max_concurrency: Option<u32>,
    rate_limit: Option<RawRateLimit>,
    adaptive_concurrency: Option<bool>,
    daily_request_quota: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests: u32,
    per_seconds: f64,
}

/// Checks the configured settings against `defaults`' caps; an error names
/// its field.
pub(crate) fn resolve(
    raw: RawDelivery,
    defaults: &DeliveryDefaults,
) -> Result<DeliverySettings, (&'static str, String)> {
    let batch_size = raw.batch_size.unwrap_or(defaults.batch_size);
    if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
        return Err((
            "batch_size",
            format!("must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}"),
        ));
    }
    if let Some(cap) = defaults.cap
        && batch_size > cap.max
    {
        return Err((
            "batch_size",
            format!(
                "{} at most {} {} per request, got {batch_size}{}",
                cap.api_takes, cap.max, cap.unit, cap.hint
            ),
        ));
    }
    let timeout_secs = match (raw.timeout_secs, defaults.timeout_secs) {
        (Some(_), None) => {
            return Err((
                "timeout_secs",
                "is not a setting of this destination type (its statements run on a database connection, not as HTTP requests)".to_owned(),
            ));
        }
        (Some(0), Some(_)) => return Err(("timeout_secs", "must be at least 1".to_owned())),
        (Some(secs), Some(_)) => secs,
        (None, default) => default.unwrap_or(0),
    };
    let max_concurrency = raw.max_concurrency.unwrap_or(defaults.max_concurrency);
    if max_concurrency == 0 {
        return Err(("max_concurrency", "must be at least 1".to_owned()));
    }
    let rate_limit = match raw.rate_limit {
        None => defaults.rate_limit,
        Some(r) if r.requests == 0 || !(r.per_seconds > 0.0 && r.per_seconds.is_finite()) => {
            return Err((
                "rate_limit",
                format!(
                    "needs requests >= 1 and per_seconds > 0, got {{ requests = {}, per_seconds = {} }}",
                    r.requests, r.per_seconds
                ),
            ));
        }
        Some(r) => Some(RateLimit {
            requests: r.requests,
            per: Duration::from_secs_f64(r.per_seconds),
        }),
    };
    if raw.daily_request_quota == Some(0) {
        return Err((
            "daily_request_quota",
            "must be at least 1 (leave it out when the destination has no daily quota)".to_owned(),
        ));
    }
    Ok(DeliverySettings {
        daily_request_quota: raw.daily_request_quota.or(defaults.daily_request_quota),
        batch_size,
        timeout: Duration::from_secs(timeout_secs),
        max_retries: raw.max_retries.unwrap_or(defaults.max_retries),
        limits: Limits {
            max_concurrency,
            rate_limit,
            adaptive_concurrency: raw
                .adaptive_concurrency
                .unwrap_or(defaults.adaptive_concurrency),
        },
    })
}
