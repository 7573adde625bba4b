//! Machinery every destination shares, written once: outcome classes,
//! retries with backoff and jitter, splitting rejected batches to find the
//! records at fault, and limits shared by every worker.

pub mod adaptive;
pub mod api;
pub mod audience;
pub mod delivery;
pub mod email;
pub mod field_digest;
pub mod limiter;
pub mod oauth;
pub mod outcome;
pub mod retry;
pub mod value_class;
pub mod vendor;
pub mod verify;
