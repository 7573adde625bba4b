//! What an operator can do to Ebb, written once for the CLI, the API
//! (`api/`) and the web UI (`ui/`), so all three behave the same: the
//! syncs' overview, pausing and resuming schedules, starting runs
//! (idempotently), cancelling them, and replaying or closing DLQ entries.

pub mod dependencies;
pub mod dlq;
pub mod runs;
pub mod syncs;
pub mod trigger;
