//! The [`Source`] trait, the rows it streams, and the mapping of a sync
//! over a model's columns (the same for every source).

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::canonical;
use super::error::SourceError;
use crate::config::{FieldMapping, SyncConfig};

/// A model column: its name and the warehouse's name for its type (`INT8`,
/// `TEXT`, `NUMBER`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}

/// One model row, mapped: the primary key as text (None when NULL) and the
/// payload as canonical JSON text (a flat object, keys in sorted order),
/// both as the warehouse's bytes. They are checked (UTF-8, size) record by
/// record when planning: a warehouse can hold bytes that are no text at
/// all, and one such value must cost its record, not the run.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A warehouse connection that can describe and stream models.
pub trait Source: Send + Sync {
    /// The source's name in config.
    fn name(&self) -> &str;

    /// The model's columns, or an error located in the model SQL.
    fn describe<'a>(
        &'a self,
        sync: &'a SyncConfig,
    ) -> BoxFuture<'a, Result<Vec<Column>, SourceError>>;

    /// Streams the model's rows with `mapping` applied, in bounded memory
    /// however large the model. Errors are [`SourceError::Read`]s (or a
    /// model error when the query fails before its first row).
    fn stream<'a>(
        &'a self,
        sync: &'a SyncConfig,
        mapping: &'a [FieldMapping],
    ) -> BoxStream<'a, Result<SourceRow, SourceError>>;

    /// Streams like [`Source::stream`], with the rows in ascending byte
    /// order of their key and NULL keys first, so that the planner can diff
    /// the model against the ledger as two sorted streams instead of
    /// through a snapshot table. `None` when the source cannot sort so.
    fn stream_in_key_order<'a>(
        &'a self,
        _sync: &'a SyncConfig,
        _mapping: &'a [FieldMapping],
    ) -> Option<BoxStream<'a, Result<SourceRow, SourceError>>> {
        None
    }
}

/// Describes the model and returns the sync's effective mapping over it.
pub async fn resolve_mapping(
    source: &dyn Source,
    sync: &SyncConfig,
) -> Result<Vec<FieldMapping>, SourceError> {
    let columns = source.describe(sync).await?;
    effective_mapping(sync, &columns)
}

/// The effective mapping of `sync` over the model's `columns`: every column
/// under its own name when none is set; otherwise the mapping, checked
/// against the columns.
pub fn effective_mapping(
    sync: &SyncConfig,
    columns: &[Column],
) -> Result<Vec<FieldMapping>, SourceError> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let mapping_error = |message: String| SourceError::Mapping {
        sync: sync.name.clone(),
        message,
    };
    if !names.contains(&sync.primary_key.as_str()) {
        return Err(mapping_error(format!(
            "primary_key `{}` is not a column of the model (model columns: {})",
            sync.primary_key,
            names.join(", ")
        )));
    }
    if sync.mapping.is_empty() {
        return Ok(names
            .into_iter()
            .map(|c| FieldMapping {
                field: c.to_owned(),
                column: c.to_owned(),
            })
            .collect());
    }
    for m in &sync.mapping {
        if !names.contains(&m.column.as_str()) {
            return Err(mapping_error(format!(
                "mapping `{} = \"{}\"`: the model has no column `{}` (model columns: {})",
                m.field,
                m.column,
                m.column,
                names.join(", ")
            )));
        }
    }
    Ok(sync.mapping.clone())
}

/// A record read by position, for the sources that render payloads
/// themselves: position 0 is the key, position `i + 1` the `i`th mapped
/// field. `read` says what a value could not be read as; the error names
/// the column.
pub(crate) fn record_from(
    mapping: &[FieldMapping],
    mut read: impl FnMut(usize) -> Result<canonical::Value, String>,
) -> Result<SourceRow, SourceError> {
    let key = read(0).map_err(|e| SourceError::Read(format!("the primary key: {e}")))?;
    let mut fields = Vec::with_capacity(mapping.len());
    for (i, m) in mapping.iter().enumerate() {
        let value =
            read(i + 1).map_err(|e| SourceError::Read(format!("column `{}`: {e}", m.column)))?;
        fields.push((m.field.as_str(), value));
    }
    Ok(SourceRow {
        key: canonical::key_text(&key),
        payload: canonical::object(&fields),
    })
}

/// The positions among a result's `columns` of the key column, then of
/// each mapped column.
pub(crate) fn positions(
    sync: &SyncConfig,
    mapping: &[FieldMapping],
    columns: &[&str],
) -> Result<Vec<usize>, SourceError> {
    std::iter::once(sync.primary_key.as_str())
        .chain(mapping.iter().map(|m| m.column.as_str()))
        .map(|name| {
            columns
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| SourceError::Mapping {
                    sync: sync.name.clone(),
                    message: format!("the model's result has no column `{name}`"),
                })
        })
        .collect()
}
