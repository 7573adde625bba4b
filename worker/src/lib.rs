//! Ebb's workers: take batch tasks off the queue, deliver them to their
//! destination, and settle the outcome in Postgres.
//!
//! - [`handler`]: one batch task, from claim to settle.
//! - [`claim`]: a worker's leased claim on a batch in Postgres.
//! - [`settle`]: where outcomes become ledger rows, DLQ entries and run totals
//!   (and where a run is marked done).
//! - [`destinations`]: one folder per destination type, on shared machinery in
//!   `destinations/util` (retries, batch splitting, error classes).

pub mod batch;
pub mod claim;
pub mod destinations;
pub mod error;
pub mod faults;
pub mod handler;
pub mod health;
pub mod pool;
pub mod settle;

pub use error::WorkerError;
