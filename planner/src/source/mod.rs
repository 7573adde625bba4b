//! Reading models from warehouses. Only Postgres (and wire-compatible
//! warehouses such as Redshift) today.

pub mod postgres;

pub use postgres::PostgresSource;
