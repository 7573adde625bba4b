//! `type = "http"`: the URL batches are `POST`ed to, and its headers; or,
//! with templates, any REST API's requests (see `template.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::HttpDestination;
use super::template::{RecordScope, RequestTemplates, batch_scope, record_scope};
use crate::config::{
    ConfigError, ConnectorTable, DeliveryDefaults, DeliverySettings, FieldMapping, SyncConfig,
};
use crate::destinations::budget::BatchWrites;
use crate::destinations::record::{BatchContext, Op, OutboundRecord};
use crate::destinations::{BuildContext, Destination, DestinationConfig, DestinationError};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub url: Secret,
    /// Sent with every request; values may hold credentials.
    pub headers: BTreeMap<String, Secret>,
    /// Set when the requests are templated: Ebb's documented batch format
    /// is then not used.
    pub templated: Option<Arc<Templated>>,
    pub delivery: DeliverySettings,
}

/// Requests rendered from templates.
#[derive(Debug)]
pub struct Templated {
    pub templates: RequestTemplates,
    pub per: RequestPer,
    /// Where a 2xx answer says a request failed after all (APIs that answer
    /// `200 {"ok": false, "error": "…"}`): a value found there that is not
    /// `null`, `false` or `""` rejects the request's records, with it as
    /// the reason.
    pub error_path: Option<serde_json_path::JsonPath>,
}

/// One request per record, or per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestPer {
    Record,
    Batch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpConfig {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    method: Option<String>,
    body: Option<String>,
    request_per: Option<RequestPer>,
    error_path: Option<String>,
}

/// 100 records a request; 8 requests in flight to one endpoint, across all
/// workers.
fn defaults() -> DeliveryDefaults {
    DeliveryDefaults::new(100, 8)
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

pub fn parse(table: &ConnectorTable<'_>) -> Result<Arc<dyn DestinationConfig>, ConfigError> {
    let raw: RawHttpConfig = table.typed()?;
    let delivery = table.delivery(&defaults())?;
    let url = table.secret("url", &raw.url)?;
    let mut headers = BTreeMap::new();
    for (header, value) in &raw.headers {
        let key = format!("{}.headers.{header}", table.key());
        headers.insert(header.clone(), table.secret_at("headers", &key, value)?);
    }
    let templated = raw.method.is_some()
        || raw.body.is_some()
        || raw.request_per.is_some()
        || raw.error_path.is_some()
        || is_template(url.expose())
        || headers.values().any(|v| is_template(v.expose()));
    let templated = if templated {
        Some(Arc::new(templated_requests(table, &raw, &url, &headers)?))
    } else {
        table.http_url("url", url.expose())?;
        None
    };
    Ok(Arc::new(HttpConfig {
        url,
        headers,
        templated,
        delivery,
    }))
}

fn templated_requests(
    table: &ConnectorTable<'_>,
    raw: &RawHttpConfig,
    url: &Secret,
    headers: &BTreeMap<String, Secret>,
) -> Result<Templated, ConfigError> {
    let header_templates: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose().to_owned()))
        .collect();
    let templates = RequestTemplates::compile(
        raw.method.as_deref(),
        url.expose(),
        &header_templates,
        raw.body.as_deref(),
    )
    .map_err(|e| {
        let field = e.part.split('.').next().unwrap_or("url").to_owned();
        table.invalid(&field, e.to_string())
    })?;
    let error_path = raw
        .error_path
        .as_deref()
        .map(|path| {
            serde_json_path::JsonPath::parse(path).map_err(|e| {
                table.invalid(
                    "error_path",
                    format!("`{path}` is not a JSONPath ({e}); e.g. \"$.error\" or \"$.errors[0].message\""),
                )
            })
        })
        .transpose()?;
    let per = raw.request_per.unwrap_or(if raw.body.is_some() {
        RequestPer::Record
    } else {
        RequestPer::Batch
    });
    Ok(Templated {
        templates,
        per,
        error_path,
    })
}

impl DestinationConfig for HttpConfig {
    fn type_name(&self) -> &'static str {
        "http"
    }

    fn delivery(&self) -> &DeliverySettings {
        &self.delivery
    }

    /// Renders the templates for a sample record of the sync's mapping (an
    /// upsert, and a delete when the sync sends them), so that a misspelt
    /// field or a body that does not render is found by `ebb check`.
    fn check_mapping(
        &self,
        destination: &str,
        mapping: &[FieldMapping],
        _primary_key: &str,
        sends_removed: bool,
    ) -> Result<(), String> {
        let Some(templated) = &self.templated else {
            return Ok(());
        };
        // Without a `[mapping]`, the fields are the model's columns: known
        // when `ebb check` describes the model, which calls this again.
        if mapping.is_empty() {
            return Ok(());
        }
        let ctx = BatchContext {
            sync: "sync".into(),
            destination: destination.to_owned(),
            run_id: 1,
            batch_no: 1,
            new_keys_only: false,
        };
        let fields: serde_json::Map<String, serde_json::Value> = mapping
            .iter()
            .map(|m| (m.field.clone(), serde_json::Value::String("example".into())))
            .collect();
        let fields = serde_json::Value::Object(fields).to_string();
        let upsert = OutboundRecord {
            key: "1".into(),
            op: Op::Upsert,
            fields: serde_json::value::RawValue::from_string(fields).ok(),
            version: Some("0".into()),
            snapshot_run_id: 1,
            destination_id: None,
            update_fields: None,
        };
        let delete = OutboundRecord {
            op: Op::Delete,
            fields: None,
            version: None,
            ..upsert.clone()
        };
        let samples: &[&OutboundRecord] = if sends_removed {
            &[&upsert, &delete]
        } else {
            &[&upsert]
        };
        for record in samples {
            let scope = RecordScope::of(&ctx, record)?;
            let rendered = match templated.per {
                RequestPer::Record => templated
                    .templates
                    .render(&record_scope(&ctx, &scope), None),
                RequestPer::Batch => templated
                    .templates
                    .render(&batch_scope(&ctx, std::slice::from_ref(&scope)), None),
            };
            rendered.map_err(|e| {
                format!(
                    "the http destination `{destination}`'s {e}, for {} with this sync's fields ({}){}",
                    if record.op == Op::Delete { "a delete" } else { "an upsert" },
                    mapping.iter().map(|m| m.field.as_str()).collect::<Vec<_>>().join(", "),
                    if record.op == Op::Delete {
                        "; a delete has no fields: branch on `op` (`{% if op == \"delete\" %}`)"
                    } else {
                        ""
                    }
                )
            })?;
        }
        Ok(())
    }

    fn requests_for(&self, _sync: &SyncConfig, batch: &BatchWrites) -> u64 {
        match self.templated.as_deref().map(|t| t.per) {
            Some(RequestPer::Record) => batch.total(),
            _ => u64::from(batch.total() > 0),
        }
    }

    fn build(&self, ctx: &BuildContext<'_>) -> Result<Arc<dyn Destination>, DestinationError> {
        Ok(Arc::new(HttpDestination::new(
            ctx.http.clone(),
            self,
            ctx.limiter.clone(),
        )))
    }
}
