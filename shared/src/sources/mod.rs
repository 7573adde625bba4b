//! Sources: the warehouses models are read from, one folder per type
//! (`config.rs`: its typed config; `mod.rs`: describing and streaming a
//! model), behind one [`Source`] trait. The planner diffs what a source
//! streams in Ebb's own state database, so a source only has to describe a
//! model and stream its rows.
//!
//! - [`registry`]: the types, by their `type` in config.
//! - [`SourceConfig`]: what a typed config can do (connect).
//! - [`Source`]: describing and streaming a model.
//! - [`canonical`]: the payload text every source produces, so a record
//!   hashes the same whatever warehouse it came from.

pub mod bigquery;
pub mod canonical;
pub mod config;
pub mod error;
pub mod jwt;
pub mod registry;
pub mod source;

pub mod mysql;
pub mod postgres;
pub mod redshift;
pub mod snowflake;

pub use config::SourceConfig;
pub use error::SourceError;
pub use source::{Column, Source, SourceRow, effective_mapping};
