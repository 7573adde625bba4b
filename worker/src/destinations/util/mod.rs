//! Machinery every destination shares, written once: outcome classes,
//! retries with backoff and jitter, and splitting rejected batches to find
//! the records at fault.

pub mod delivery;
pub mod outcome;
pub mod retry;
