//! Ebb's bookkeeping in Postgres, one module per table, so that every
//! statement over a table is in its module (the migrations are in
//! `shared/migrations/`):
//!
//! - [`runs`] (`ebb_runs`): runs, their states and totals;
//! - [`batches`] (`ebb_batches`): a run's batches, their claims and
//!   deliveries;
//! - [`records`] (`ebb_run_records`): the record versions a run sends and
//!   their outcomes;
//! - [`ledger`] (`ebb_ledger`): what each destination acknowledged;
//! - [`intents`] (`ebb_intents`): creates whose outcome is not known yet;
//! - [`dlq`] (`ebb_dlq`): the dead-letter queue;
//! - [`events`] (`ebb_run_events`): what happened to a run beside its
//!   records;
//! - [`syncs`] (`ebb_sync_settings`): schedules paused by operators;
//! - [`idempotency`] (`ebb_api_idempotency`): run triggers retried with the
//!   same `Idempotency-Key`;
//! - [`alerts`] (`ebb_alert_incidents`, `ebb_alert_deliveries`): what is
//!   wrong with a sync, and the messages that say so;
//! - [`ticks`] (`ebb_schedule_ticks`): the schedule ticks planners fired;
//! - [`verifications`] (`ebb_verifications`, `ebb_verification_drift`):
//!   records read back from destinations, and how they drifted;
//! - [`ui_sessions`] (`ebb_ui_sessions`): browsers logged in to the web UI.
//!
//! The planner's diff (`planner/src/plan/diff.rs`) is the one place that
//! reads these tables through its own temporary snapshot table.

pub mod alerts;
pub mod batches;
pub mod dlq;
pub mod events;
pub mod idempotency;
pub mod intents;
pub mod ledger;
pub mod records;
pub mod runs;
pub mod syncs;
pub mod ticks;
pub mod ui_sessions;
pub mod verifications;

pub use batches::BatchState;
pub use records::{Op, Outcome};
pub use runs::RunState;
