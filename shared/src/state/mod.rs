//! Ebb's bookkeeping in Postgres, as seen by both binaries: runs, their
//! events and the dead-letter queue. The write paths that settle batches live in the worker
//! (`ebb_worker::settle`), the planning writes in the planner (`ebb_planner::plan`).

pub mod dlq;
pub mod events;
pub mod runs;
