//! The API budget of a plan: the requests its batches take at the
//! destination, how long the destination's rate limit makes them last, and
//! what share of its daily quota they are, before anything is sent.

use serde::Serialize;

use ebb_shared::config::{Config, SyncConfig};
use ebb_shared::destinations::budget::BatchWrites;
use ebb_shared::destinations::util::limiter::RATE_HEADROOM;

/// What a plan costs at its destination, every answer a success.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Budget {
    /// Requests the run's batches take (no retries, splits or lookups).
    pub requests: u64,
    pub batches: u64,
    /// The records sent, by the kind of write they need.
    pub writes: BatchWrites,
    /// The destination's rate limit, shared by every sync writing to it:
    /// `100 requests per 10 s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// The least time the requests take at that rate limit, alone on it
    /// (paced evenly at 95% of it), to a tenth of a second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<f64>,
    /// Requests the destination's account may make in a day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_request_quota: Option<u64>,
    /// `requests` as a share of that quota, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_quota_pct: Option<f64>,
    /// The other syncs writing to the destination: they share its limits.
    pub shared_with: Vec<String>,
    /// What the estimate does not count, for this destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The budget of `batches` (each batch's writes) of `sync`; `None` when the
/// sync's destination is not configured.
pub fn estimate(config: &Config, sync: &SyncConfig, batches: &[BatchWrites]) -> Option<Budget> {
    let destination = config.destination(&sync.destination)?;
    let delivery = destination.delivery();
    let mut writes = BatchWrites::default();
    let mut requests = 0;
    for batch in batches {
        writes.add(batch);
        requests += destination.requests_for(sync, batch);
    }
    let rate_limit = delivery.limits.rate_limit.filter(|_| requests > 0);
    let eta_secs = rate_limit.map(|rate| {
        // The limiter paces requests evenly, without a burst, at
        // RATE_HEADROOM of the limit: the first goes at once.
        let interval = rate.per.as_secs_f64() / (f64::from(rate.requests) * RATE_HEADROOM);
        ((requests - 1) as f64 * interval * 10.0).round() / 10.0
    });
    let daily_request_quota = delivery.daily_request_quota.filter(|_| requests > 0);
    Some(Budget {
        requests,
        batches: batches.len() as u64,
        writes,
        rate_limit: rate_limit.map(|rate| {
            format!(
                "{} requests per {}",
                rate.requests,
                seconds(rate.per.as_secs_f64())
            )
        }),
        eta_secs,
        daily_request_quota,
        daily_quota_pct: daily_request_quota.map(|quota| requests as f64 * 100.0 / quota as f64),
        shared_with: config
            .syncs
            .values()
            .filter(|other| other.destination == sync.destination && other.name != sync.name)
            .map(|other| other.name.clone())
            .collect(),
        note: destination.requests_note(sync).map(str::to_owned),
    })
}

/// `10 s`, `0.5 s`, `2 min 30 s`.
pub fn seconds(secs: f64) -> String {
    if secs >= 60.0 {
        let whole = secs.round() as u64;
        match whole % 60 {
            0 => format!("{} min", whole / 60),
            rest => format!("{} min {rest} s", whole / 60),
        }
    } else if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_config;

    fn config_with(destination: &str) -> Config {
        test_config(&format!(
            r#"
[destinations.crm]
{destination}
[syncs.contacts]
source = "wh"
model = "SELECT 1 AS id, 'a@example.com' AS email"
primary_key = "id"
destination = "crm"
mode = "mirror"
mapping = {{ id = "id", email = "email" }}
[syncs.companies]
source = "wh"
model = "SELECT 1 AS id, 'a@example.com' AS email"
primary_key = "id"
destination = "crm"
mapping = {{ id = "id", email = "email" }}
"#
        ))
    }

    fn batch(removes: u64, updates_by_id: u64, writes: u64) -> BatchWrites {
        BatchWrites {
            removes,
            updates_by_id,
            writes,
        }
    }

    #[test]
    fn hubspot_takes_a_request_per_kind_of_write_in_each_batch_within_its_rate_and_quota() {
        let config = config_with(
            "type = \"hubspot\"\naccess_token = \"pat-na1-x\"\nobject = \"contacts\"\nmatch_on = \"email\"",
        );
        let sync = config.sync("contacts").expect("sync");
        // 250 batches: 200 pure creates, 50 mixing updates and removes.
        let mut batches = vec![batch(0, 0, 100); 200];
        batches.extend(vec![batch(10, 90, 0); 50]);
        let budget = estimate(&config, sync, &batches).expect("budget");
        assert_eq!(budget.requests, 200 + 2 * 50);
        assert_eq!(budget.writes, batch(500, 4500, 20_000));
        assert_eq!(budget.rate_limit.as_deref(), Some("100 requests per 10 s"));
        // 300 requests paced at 95% of 100 per 10 s, the first at once.
        assert_eq!(budget.eta_secs, Some(31.5));
        assert_eq!(budget.daily_request_quota, Some(250_000));
        assert_eq!(budget.daily_quota_pct, Some(0.12));
        assert_eq!(budget.shared_with, vec!["companies".to_owned()]);
    }

    #[test]
    fn nothing_to_send_costs_nothing_and_a_database_no_requests() {
        let config = config_with(
            "type = \"hubspot\"\naccess_token = \"pat-na1-x\"\nobject = \"contacts\"\nmatch_on = \"email\"",
        );
        let sync = config.sync("contacts").expect("sync");
        let budget = estimate(&config, sync, &[]).expect("budget");
        assert_eq!((budget.requests, budget.eta_secs), (0, None));
        assert_eq!(budget.daily_quota_pct, None);

        let config =
            config_with("type = \"postgres\"\nurl = \"postgres://x@127.0.0.1/x\"\ntable = \"t\"");
        let sync = config.sync("contacts").expect("sync");
        let budget = estimate(&config, sync, &[batch(1, 2, 3)]).expect("budget");
        assert_eq!(budget.requests, 0);
        assert!(budget.note.is_some_and(|n| n.contains("SQL statements")));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(seconds(10.0), "10 s");
        assert_eq!(seconds(0.5), "0.5 s");
        assert_eq!(seconds(150.0), "2 min 30 s");
        assert_eq!(seconds(120.0), "2 min");
    }
}
