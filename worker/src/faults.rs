//! Crash points for Ebb's fault-injection suite (`tests/tests/faults.rs`).
//! Unset in production: `EBB_FAULTS` arms them, and the worker logs loudly
//! when it is set.
//!
//! `EBB_FAULTS` is a comma-separated list of `point:trigger`, where `point`
//! is `before_send`, `after_send` (the destination answered, nothing is
//! committed yet), `before_commit` (settled in the transaction, not yet
//! committed) or `any`, and `trigger` is a probability (`0.05`) or
//! `key=K` (every batch holding record key `K`). A firing point aborts the
//! process on the spot, as SIGKILL or an OOM kill would: no cleanup, no ack.

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    BeforeSend,
    AfterSend,
    BeforeCommit,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::BeforeSend => "before_send",
            Point::AfterSend => "after_send",
            Point::BeforeCommit => "before_commit",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Trigger {
    Probability(f64),
    Key(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    /// None: any point.
    point: Option<Point>,
    trigger: Trigger,
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Vec<Rule>,
}

impl Faults {
    /// Reads `EBB_FAULTS`; an unparsable value is a startup error.
    pub fn from_env() -> Result<Faults, String> {
        match std::env::var("EBB_FAULTS") {
            Ok(spec) if !spec.trim().is_empty() => {
                let faults = Faults::parse(&spec)?;
                tracing::warn!(faults = %spec, "fault injection is armed (EBB_FAULTS): this worker will crash on purpose");
                Ok(faults)
            }
            _ => Ok(Faults::default()),
        }
    }

    fn parse(spec: &str) -> Result<Faults, String> {
        let mut rules = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (point, trigger) = item
                .split_once(':')
                .ok_or_else(|| format!("EBB_FAULTS item `{item}`: expected `point:trigger`"))?;
            let point = match point {
                "before_send" => Some(Point::BeforeSend),
                "after_send" => Some(Point::AfterSend),
                "before_commit" => Some(Point::BeforeCommit),
                "any" => None,
                other => {
                    return Err(format!(
                        "EBB_FAULTS item `{item}`: unknown point `{other}` (before_send, after_send, before_commit, any)"
                    ));
                }
            };
            let trigger = match trigger.strip_prefix("key=") {
                Some(key) => Trigger::Key(key.to_owned()),
                None => match trigger.parse::<f64>() {
                    Ok(p) if (0.0..=1.0).contains(&p) => Trigger::Probability(p),
                    _ => {
                        return Err(format!(
                            "EBB_FAULTS item `{item}`: trigger must be a probability in [0, 1] or `key=K`"
                        ));
                    }
                },
            };
            rules.push(Rule { point, trigger });
        }
        Ok(Faults { rules })
    }

    /// Aborts the process if a rule for `point` fires for a batch of `keys`.
    pub fn check<'a>(&self, point: Point, keys: impl Fn() -> Vec<&'a str>) {
        if self.rules.is_empty() {
            return;
        }
        for rule in &self.rules {
            if rule.point.is_some_and(|p| p != point) {
                continue;
            }
            let fires = match &rule.trigger {
                Trigger::Probability(p) => rand::rng().random_bool(*p),
                Trigger::Key(key) => keys().contains(&key.as_str()),
            };
            if fires {
                tracing::error!(point = point.name(), "fault injection: aborting the worker");
                std::process::abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_triggers() {
        let f = Faults::parse("after_send:0.25, any:key=17").unwrap();
        assert_eq!(
            f.rules,
            vec![
                Rule {
                    point: Some(Point::AfterSend),
                    trigger: Trigger::Probability(0.25)
                },
                Rule {
                    point: None,
                    trigger: Trigger::Key("17".into())
                },
            ]
        );
        assert!(Faults::parse("during_lunch:0.1").is_err());
        assert!(Faults::parse("after_send:2").is_err());
        assert!(Faults::parse("after_send").is_err());
    }

    #[test]
    fn unarmed_and_non_matching_rules_do_not_fire() {
        Faults::default().check(Point::AfterSend, || vec!["17"]);
        let f = Faults::parse("before_send:key=17,after_send:0").unwrap();
        f.check(Point::AfterSend, || vec!["17"]);
        f.check(Point::BeforeSend, || vec!["18"]);
    }
}
