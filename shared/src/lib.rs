//! Code shared by the planner (`ebb`) and the workers (`ebb-worker`): config,
//! the connectors (sources and destinations, one folder each), Ebb's state
//! schema in Postgres, the Redis task queue and telemetry.

pub mod config;
pub mod copy_binary;
pub mod copy_text;
pub mod db;
pub mod destinations;
pub mod error;
pub mod field_buffer;
pub mod health;
pub mod hex;
pub mod limits;
pub mod queue;
pub mod read_ahead;
pub mod secret;
pub mod sources;
pub mod sql;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use error::{QueueError, StateError};
