//! What an operator can do to Ebb, written once for the CLI and the API
//! (`api/`), so both behave the same: the syncs' overview, pausing and
//! resuming schedules, starting runs (idempotently), and replaying or
//! closing DLQ entries. Cancelling a run is one statement
//! (`ebb_shared::state::runs::cancel`).

pub mod dependencies;
pub mod dlq;
pub mod syncs;
pub mod trigger;
