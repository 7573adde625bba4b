//! Alerts (`[alerts.NAME]`): `ebb serve` looks at each watched sync's runs,
//! opens an incident when one goes wrong (a run failed, too many
//! rejections, no success for too long) and resolves it when it recovers;
//! each opening and resolution queues one message, which a loop of its own
//! delivers with retries. Neither holds up a run.
//!
//! - `evaluate.rs`: incidents from runs.
//! - `message.rs`: what a message says, for a webhook or for Slack.
//! - `deliver.rs`: sending queued messages, with retries.

mod deliver;
mod evaluate;
mod message;

pub use deliver::deliver_due;
pub use evaluate::evaluate;
