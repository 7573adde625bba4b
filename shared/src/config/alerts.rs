//! `[alerts.NAME]`: where to say that a sync is in trouble, and when.
//!
//! ```toml
//! [alerts.oncall]
//! slack_webhook_url = "${SLACK_WEBHOOK_URL}"   # or webhook_url = "https://…"
//! run_failed = true                  # a run failed (default)
//! run_held = true                    # a guardrail held a run (default)
//! rejections_over = 100              # a run rejected more than 100 records…
//! rejections_over_percent = 5.0      # …or more than 5% of what it sent
//! not_succeeded_for = "6h"           # no successful run for 6 hours
//! syncs = ["customers_to_hubspot"]   # default: every sync
//! ```
//!
//! One message when an incident opens, none while it stays open, and one
//! when it is resolved.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::table::SourceText;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub name: String,
    pub target: AlertTarget,
    pub run_failed: bool,
    /// A run held by a guardrail (on unless `run_held = false`).
    pub run_held: bool,
    pub rejections_over: Option<u64>,
    pub rejections_over_percent: Option<f64>,
    pub not_succeeded_for: Option<Duration>,
    /// The syncs watched; `None`: every sync.
    pub syncs: Option<Vec<String>>,
}

/// Where an alert's messages go. The URLs are secrets (Slack's carry
/// their key).
#[derive(Debug, Clone)]
pub enum AlertTarget {
    /// A JSON document per message (see `docs/alerts.md`).
    Webhook(Secret),
    /// A Slack incoming webhook: `{"text": …}`.
    Slack(Secret),
}

impl AlertConfig {
    pub fn watches(&self, sync: &str) -> bool {
        self.syncs
            .as_ref()
            .is_none_or(|syncs| syncs.iter().any(|s| s == sync))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlert {
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    slack_webhook_url: Option<String>,
    #[serde(default = "yes")]
    run_failed: bool,
    #[serde(default = "yes")]
    run_held: bool,
    #[serde(default)]
    rejections_over: Option<u64>,
    #[serde(default)]
    rejections_over_percent: Option<f64>,
    #[serde(default)]
    not_succeeded_for: Option<String>,
    #[serde(default)]
    syncs: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

pub(crate) fn resolve_alerts(
    src: &SourceText<'_>,
    raw: BTreeMap<String, Spanned<RawAlert>>,
    sync_names: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<AlertConfig>, ConfigError> {
    let mut alerts = Vec::with_capacity(raw.len());
    for (name, spanned) in raw {
        let at = spanned.span().start;
        let raw = spanned.into_inner();
        let key = format!("alerts.{name}");
        let url = |field: &str, value: &str| -> Result<Secret, ConfigError> {
            let secret = src.secret_at(value, &format!("{key}.{field}"), at, lookup)?;
            if !(secret.expose().starts_with("https://") || secret.expose().starts_with("http://"))
            {
                return Err(src.invalid(
                    Some(at),
                    format!("{key}.{field}"),
                    "must start with http:// or https://",
                ));
            }
            Ok(secret)
        };
        let target = match (&raw.webhook_url, &raw.slack_webhook_url) {
            (Some(webhook), None) => AlertTarget::Webhook(url("webhook_url", webhook)?),
            (None, Some(slack)) => AlertTarget::Slack(url("slack_webhook_url", slack)?),
            _ => {
                return Err(src.invalid(
                    Some(at),
                    key,
                    "set one of `webhook_url` (JSON to any endpoint) or `slack_webhook_url` (a Slack incoming webhook)",
                ));
            }
        };
        if raw
            .rejections_over_percent
            .is_some_and(|p| !(p.is_finite() && (0.0..100.0).contains(&p)))
        {
            return Err(src.invalid(
                Some(at),
                format!("{key}.rejections_over_percent"),
                "must be a percentage from 0 up to 100",
            ));
        }
        let not_succeeded_for = raw
            .not_succeeded_for
            .as_deref()
            .map(|text| {
                parse_duration(text).ok_or_else(|| {
                    src.invalid(
                        Some(at),
                        format!("{key}.not_succeeded_for"),
                        format!("`{text}` is not a duration; use e.g. `90s`, `30m`, `6h` or `2d`"),
                    )
                })
            })
            .transpose()?;
        if let Some(syncs) = &raw.syncs
            && let Some(unknown) = syncs.iter().find(|s| !sync_names.contains(&s.as_str()))
        {
            return Err(src.invalid(
                Some(at),
                format!("{key}.syncs"),
                format!(
                    "unknown sync `{unknown}`; defined syncs are: {}",
                    sync_names.join(", ")
                ),
            ));
        }
        if !raw.run_failed
            && !raw.run_held
            && raw.rejections_over.is_none()
            && raw.rejections_over_percent.is_none()
            && not_succeeded_for.is_none()
        {
            return Err(src.invalid(
                Some(at),
                key,
                "alerts on nothing: keep `run_failed` or `run_held`, or set `rejections_over`, `rejections_over_percent` or `not_succeeded_for`",
            ));
        }
        alerts.push(AlertConfig {
            name,
            target,
            run_failed: raw.run_failed,
            run_held: raw.run_held,
            rejections_over: raw.rejections_over,
            rejections_over_percent: raw.rejections_over_percent,
            not_succeeded_for,
            syncs: raw.syncs,
        });
    }
    Ok(alerts)
}

/// `90s`, `30m`, `6h`, `2d`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "s" => number,
        "m" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        "d" => number.checked_mul(86_400)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration(" 6h "), Some(Duration::from_secs(21_600)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        for bad in ["", "h", "6", "6 hours", "-1h", "0m", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
