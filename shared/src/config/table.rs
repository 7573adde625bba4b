//! Reading config text with its positions: turning byte offsets into
//! `file:line` errors, and [`ConnectorTable`], what a connector's config
//! parser is given for its `[sources.NAME]` or `[destinations.NAME]` table.
//!
//! Connector tables are parsed in two steps, as Arroyo does for
//! connectors: the table is read as an untyped TOML table first, then its
//! `type` picks the connector whose typed config it is deserialized into.

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;

use super::ConfigError;
use super::delivery::{self, DeliveryDefaults, DeliverySettings};
use super::interpolate::interpolate;
use crate::secret::Secret;

/// The config file's text, to turn byte offsets into line numbers.
pub(crate) struct SourceText<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl SourceText<'_> {
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    pub fn invalid(
        &self,
        offset: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: offset.map(|o| self.line_of(o)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Finds the line of `field = ...` inside the table that starts at
    /// `table_offset`, so an unknown or bad field in a destination points at
    /// its own line rather than at the table header.
    pub fn field_offset(&self, table_offset: usize, field: &str) -> usize {
        let mut offset = table_offset;
        for line in self.text[table_offset.min(self.text.len())..].split_inclusive('\n') {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(field)
                && rest.trim_start().starts_with('=')
            {
                return offset + (line.len() - trimmed.len());
            }
            offset += line.len();
        }
        table_offset
    }

    fn localize(&self, interpolation: ConfigError, offset: usize) -> ConfigError {
        match interpolation {
            ConfigError::MissingEnv { key, var } => self.invalid(
                Some(offset),
                key,
                format!("environment variable `{var}` is not set; export it or change the value"),
            ),
            ConfigError::Interpolation { key, message } => self.invalid(Some(offset), key, message),
            other => other,
        }
    }

    /// `value` with `${VAR}` filled in, kept as a secret; errors point at
    /// `offset`.
    pub fn secret_at(
        &self,
        value: &str,
        key: &str,
        offset: usize,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, ConfigError> {
        interpolate(value, key, lookup)
            .map(Secret::new)
            .map_err(|e| self.localize(e, offset))
    }

    /// Deserializes `table` as `T`; serde's message names the field, whose
    /// line the error then points at.
    pub fn typed<T: DeserializeOwned>(
        &self,
        key: &str,
        table: toml::Table,
        table_offset: usize,
    ) -> Result<T, ConfigError> {
        T::deserialize(toml::Value::Table(table)).map_err(|e| {
            let message = e.message().trim().to_owned();
            let offset = message
                .split('`')
                .nth(1)
                .map(|field| self.field_offset(table_offset, field))
                .unwrap_or(table_offset);
            self.invalid(Some(offset), key, message)
        })
    }
}

/// A connector's table in `ebb.toml`: `[sources.NAME]` or
/// `[destinations.NAME]`. A connector reads its typed fields with
/// [`ConnectorTable::typed`] and, for a destination, its delivery settings
/// with [`ConnectorTable::delivery`]; every error it makes with
/// [`ConnectorTable::invalid`] names the file, the line and the key.
pub struct ConnectorTable<'a> {
    src: &'a SourceText<'a>,
    key: String,
    table: &'a Spanned<toml::Table>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Fields read by [`Self::delivery`], not by the connector's own
    /// struct (none for sources).
    delivery_fields: &'static [&'static str],
}

impl<'a> ConnectorTable<'a> {
    pub(crate) fn new(
        src: &'a SourceText<'a>,
        key: String,
        table: &'a Spanned<toml::Table>,
        lookup: &'a dyn Fn(&str) -> Option<String>,
        delivery_fields: &'static [&'static str],
    ) -> Self {
        Self {
            src,
            key,
            table,
            lookup,
            delivery_fields,
        }
    }

    /// `destinations.NAME` or `sources.NAME`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The folder of the config file, against which relative paths in it
    /// are read.
    pub fn base_dir(&self) -> std::path::PathBuf {
        self.src
            .path
            .parent()
            .map(std::path::Path::to_owned)
            .unwrap_or_default()
    }

    fn start(&self) -> usize {
        self.table.span().start
    }

    /// The table's `type`, one of `known`.
    pub(crate) fn type_of(&self, known: &[&str]) -> Result<String, ConfigError> {
        match self.table.get_ref().get("type") {
            Some(toml::Value::String(t)) if known.contains(&t.as_str()) => Ok(t.clone()),
            Some(toml::Value::String(t)) => Err(self.invalid(
                "type",
                format!(
                    "unknown type `{t}`; supported types are: {}",
                    known.join(", ")
                ),
            )),
            _ => Err(self.src.invalid(
                Some(self.start()),
                &self.key,
                format!(
                    "missing `type = \"...\"`; supported types are: {}",
                    known.join(", ")
                ),
            )),
        }
    }

    /// The connector's own fields as `T` (which should deny unknown
    /// fields): the table without `type` and the delivery settings.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let mut own = self.table.get_ref().clone();
        own.remove("type");
        for field in self.delivery_fields {
            own.remove(*field);
        }
        self.src
            .typed(&self.key, own, self.start())
            .map_err(|e| self.with_delivery_fields(e))
    }

    /// serde lists the connector's own fields for an unknown one; the
    /// delivery settings are fields of the table too.
    fn with_delivery_fields(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Invalid {
                path,
                line,
                key,
                message,
            } if message.starts_with("unknown field") && !self.delivery_fields.is_empty() => {
                let fields: Vec<String> = self
                    .delivery_fields
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect();
                ConfigError::Invalid {
                    path,
                    line,
                    key,
                    message: format!("{message}, or a delivery setting: {}", fields.join(", ")),
                }
            }
            other => other,
        }
    }

    /// The destination's delivery settings (batch size, timeout, retries,
    /// limits), with this connector's defaults and caps.
    pub fn delivery(&self, defaults: &DeliveryDefaults) -> Result<DeliverySettings, ConfigError> {
        let mut fields = toml::Table::new();
        for field in self.delivery_fields {
            if let Some(value) = self.table.get_ref().get(*field) {
                fields.insert((*field).to_owned(), value.clone());
            }
        }
        let raw = self.src.typed(&self.key, fields, self.start())?;
        delivery::resolve(raw, defaults).map_err(|(field, message)| self.invalid(field, message))
    }

    /// An error about `field`, at its line.
    pub fn invalid(&self, field: &str, message: impl Into<String>) -> ConfigError {
        self.src.invalid(
            Some(self.src.field_offset(self.start(), field)),
            format!("{}.{field}", self.key),
            message,
        )
    }

    /// An error about the table as a whole, at its header.
    pub fn invalid_table(&self, message: impl Into<String>) -> ConfigError {
        self.src.invalid(Some(self.start()), &self.key, message)
    }

    /// `field`'s value with `${VAR}` filled in, kept as a secret.
    pub fn secret(&self, field: &str, value: &str) -> Result<Secret, ConfigError> {
        self.secret_at(field, &format!("{}.{field}", self.key), value)
    }

    /// A value nested under `field` (e.g. one of its headers), named by
    /// `key`, with `${VAR}` filled in.
    pub fn secret_at(&self, field: &str, key: &str, value: &str) -> Result<Secret, ConfigError> {
        self.src.secret_at(
            value,
            key,
            self.src.field_offset(self.start(), field),
            self.lookup,
        )
    }

    /// Checks that `url` is an http(s) URL.
    pub fn http_url(&self, field: &str, url: &str) -> Result<(), ConfigError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(())
        } else {
            Err(self.invalid(field, "must start with http:// or https://"))
        }
    }

    /// A vendor API's base URL: interpolated, http(s), no trailing slash.
    pub fn service_url(&self, field: &str, value: &str) -> Result<String, ConfigError> {
        let url = self
            .secret(field, value)?
            .expose()
            .trim_end_matches('/')
            .to_owned();
        self.http_url(field, &url)?;
        Ok(url)
    }
}
