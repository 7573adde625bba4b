//! Records from the model's `COPY` text: the key as the warehouse writes it
//! as text, and the payload in the canonical form (`jsonb`'s text, see
//! [`canonical`]). The planner writes the values of the common scalar
//! types itself from their text; the warehouse converts the rest (dates,
//! timestamps, arrays, json, enums, …) with `to_jsonb(column)::text`, which
//! is what `jsonb_build_object` does to each value, so every payload is the
//! same byte for byte as `jsonb_build_object(…)::text` would make it. Building
//! the object in the warehouse cost about eight times the read of the model
//! itself.

use crate::config::{FieldMapping, SyncConfig};
use crate::sources::canonical::{self, Layout};
use crate::sources::{Column, SourceError, SourceRow};
use crate::sql::quote_ident;

use crate::copy_text;
use crate::field_buffer::FieldBuffer;

/// How a mapped column's value becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rendering {
    /// Integers: their text is the JSON number.
    Integer,
    /// Written as a JSON string (text types, `uuid`).
    Text,
    /// `t`/`f` to `true`/`false`.
    Bool,
    /// `numeric`: its text with its scale, `NaN` and the infinities as strings.
    Decimal,
    /// `float4`/`float8`: read as jsonb reads them (full decimal notation).
    Float,
    /// The warehouse wrote the value's jsonb text.
    Warehouse,
}

impl Rendering {
    /// By the type name the describe step reports. A type not named here
    /// (domains, enums, extensions' types, …) is left to the warehouse,
    /// which always renders it right.
    pub(crate) fn of(type_name: &str) -> Rendering {
        match type_name {
            "INT2" | "INT4" | "INT8" => Rendering::Integer,
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UUID" => Rendering::Text,
            "BOOL" => Rendering::Bool,
            "NUMERIC" => Rendering::Decimal,
            "FLOAT4" | "FLOAT8" => Rendering::Float,
            _ => Rendering::Warehouse,
        }
    }
}

/// The order a model's rows are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOrder {
    /// As the warehouse finds them: no sort.
    AsStored,
    /// By the bytes of the key's text as `COPY` writes it (collation `C`),
    /// NULL keys first.
    Bytes,
}

/// The `COPY` statement that reads a model, and how to read its rows.
pub(crate) struct ModelCopy {
    pub(crate) statement: String,
    /// Characters before the model SQL in `statement`, to point errors at
    /// the model's own lines.
    pub(crate) prefix_chars: usize,
    pub(crate) reader: RecordReader,
}

impl ModelCopy {
    pub(crate) fn new(
        sync: &SyncConfig,
        mapping: &[FieldMapping],
        columns: &[Column],
        order: KeyOrder,
    ) -> Result<ModelCopy, SourceError> {
        let mut renderings = Vec::with_capacity(mapping.len());
        let mut select = vec![format!("ebb_model.{}", quote_ident(&sync.primary_key))];
        for m in mapping {
            let column = columns.iter().find(|c| c.name == m.column).ok_or_else(|| {
                SourceError::Mapping {
                    sync: sync.name.clone(),
                    message: format!("the model has no column `{}`", m.column),
                }
            })?;
            let rendering = Rendering::of(&column.type_name);
            let value = format!("ebb_model.{}", quote_ident(&m.column));
            select.push(match rendering {
                Rendering::Warehouse => format!("to_jsonb({value})::text"),
                _ => value,
            });
            renderings.push(rendering);
        }
        let prefix = format!("COPY (SELECT {} FROM (\n", select.join(", "));
        let order_by = match order {
            KeyOrder::AsStored => String::new(),
            KeyOrder::Bytes => {
                let key = format!("ebb_model.{}", quote_ident(&sync.primary_key));
                // A `character(n)` cast to text loses the trailing blanks
                // COPY writes; format() keeps the output text as it is.
                let padded = columns
                    .iter()
                    .any(|c| c.name == sync.primary_key && c.type_name == "BPCHAR");
                let text = if padded {
                    format!("format('%s', {key})")
                } else {
                    format!("{key}::text")
                };
                format!(" ORDER BY {text} COLLATE \"C\" NULLS FIRST")
            }
        };
        let statement = format!(
            "{prefix}{}\n) AS ebb_model{order_by}) TO STDOUT",
            sync.model.as_subquery()
        );
        let names: Vec<&str> = mapping.iter().map(|m| m.field.as_str()).collect();
        Ok(ModelCopy {
            prefix_chars: prefix.chars().count(),
            statement,
            reader: RecordReader {
                layout: Layout::new(&names),
                renderings,
                scratch: Vec::new(),
                values: FieldBuffer::default(),
            },
        })
    }
}

/// Turns `COPY` rows (key, then each mapped column) into records.
pub(crate) struct RecordReader {
    layout: Layout,
    renderings: Vec<Rendering>,
    scratch: Vec<u8>,
    values: FieldBuffer,
}

impl RecordReader {
    pub(crate) fn record(&mut self, row: &[u8]) -> Result<SourceRow, SourceError> {
        let mut fields = copy_text::fields(row);
        let key = fields
            .next()
            .flatten()
            .map(|key| copy_text::unescape(key, &mut self.scratch).to_vec());
        let mut values = self.values.take();
        values.extend(fields);
        if values.len() != self.renderings.len() {
            let found = values.len() + 1;
            self.values.keep(values);
            return Err(SourceError::Read(format!(
                "a row of the model's COPY has {found} fields, expected {} (the key and each mapped column)",
                self.renderings.len() + 1
            )));
        }
        let mut payload = Vec::with_capacity(row.len() + 16 * values.len() + 2);
        let (renderings, scratch) = (&self.renderings, &mut self.scratch);
        self.layout.write(&mut payload, |i, out| match values[i] {
            None => out.extend_from_slice(b"null"),
            Some(escaped) => {
                let value = copy_text::unescape(escaped, scratch);
                match renderings[i] {
                    Rendering::Integer | Rendering::Warehouse => out.extend_from_slice(value),
                    Rendering::Text => canonical::write_string(out, value),
                    Rendering::Bool => match value {
                        b"t" => out.extend_from_slice(b"true"),
                        b"f" => out.extend_from_slice(b"false"),
                        other => canonical::write_string(out, other),
                    },
                    Rendering::Decimal => canonical::write_decimal(out, value),
                    Rendering::Float => canonical::write_float_text(out, value),
                }
            }
        });
        self.values.keep(values);
        Ok(SourceRow { key, payload })
    }
}
