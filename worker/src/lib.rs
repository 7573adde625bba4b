//! Ebb's workers: take batch tasks off the queue, deliver them to their
//! destination, and settle the outcome in Postgres.
//!
//! - [`handler`]: one batch task, from claim to settle.
//! - [`claim`]: a worker's leased claim on a batch in Postgres.
//! - [`settle`]: where outcomes become ledger rows, DLQ entries and run totals
//!   (and where a run is marked done).
//! - [`targets`]: each sync's destination and limits, built from config
//!   (the destinations themselves live in `ebb_shared::destinations`).

pub mod claim;
pub mod error;
pub mod faults;
pub mod handler;
pub mod health;
pub mod pool;
pub mod settle;
pub mod targets;
pub mod wake;

pub use error::WorkerError;
