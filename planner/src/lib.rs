//! The planner: snapshots models, diffs them against what was delivered,
//! writes the plan to Postgres and enqueues batch tasks; plus the operator
//! commands of the `ebb` CLI.

pub mod alerts;
pub mod api;
pub mod commands;
pub mod context;
pub mod control;
pub mod enqueue;
pub mod error;
pub mod leader;
pub mod plan;
pub mod progress;
pub mod ui;
pub mod verify;
pub mod watchdog;

pub use error::PlannerError;
