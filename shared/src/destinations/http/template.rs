//! Request templates of the `http` destination (minijinja, Jinja2's
//! syntax): the method, URL, header values and body of each request,
//! rendered from the record (`key`, `op`, `version`, `idempotency_key`,
//! `fields`) or, one request per batch, from `records`; `sync`, `run_id`
//! and `batch` are in scope in both. Templates are compiled when the config
//! is read and rendered against a sample record of each sync's mapping by
//! `ebb check`, so a syntax error or a misspelt field is a config error,
//! not a rejected record. Undefined values are errors (strict mode), never
//! empty strings sent to an API.

use std::fmt;

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

use crate::destinations::record::{BatchContext, OutboundRecord};

/// The methods a template may render to.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The parts of a request that can be templated, by the names the config
/// gives them (`method`, `url`, `headers.NAME`, `body`).
pub struct RequestTemplates {
    env: Environment<'static>,
    headers: Vec<String>,
    has_body: bool,
}

/// A request rendered for one record or one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedRequest {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// `None`: no body (the record is a delete and no `body` is set).
    pub body: Option<String>,
}

/// Why a template could not be compiled or rendered: the part (`body`,
/// `headers.Authorization`) and minijinja's message, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub part: String,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the `{}` template: {}", self.part, self.message)
    }
}

fn describe(error: &minijinja::Error) -> String {
    let mut message = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    if let Some(line) = error.line() {
        message.push_str(&format!(" (line {line})"));
    }
    message
}

/// `tojson`, except that an undefined value (a misspelt or absent field)
/// is an error rather than `null`, which would clear the field at the
/// destination.
fn strict_tojson(
    value: &Value,
    indent: Option<Value>,
    args: minijinja::value::Kwargs,
) -> Result<Value, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "tojson was given an undefined value (a field the record does not have?)",
        ));
    }
    minijinja::filters::tojson(value, indent, args)
}

impl RequestTemplates {
    /// Compiles the parts; `headers` are (name, template) pairs. An absent
    /// method is `POST`.
    pub fn compile(
        method: Option<&str>,
        url: &str,
        headers: &[(String, String)],
        body: Option<&str>,
    ) -> Result<RequestTemplates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Nothing is HTML here: `{{ x }}` writes the value as it is; JSON
        // bodies use `tojson`.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("tojson", strict_tojson);
        let mut add = |part: String, source: String| {
            env.add_template_owned(part.clone(), source)
                .map_err(|e| TemplateError {
                    part,
                    message: describe(&e),
                })
        };
        add("method".into(), method.unwrap_or("POST").to_owned())?;
        add("url".into(), url.to_owned())?;
        for (name, template) in headers {
            add(format!("headers.{name}"), template.clone())?;
        }
        if let Some(body) = body {
            add("body".into(), body.to_owned())?;
        }
        Ok(RequestTemplates {
            env,
            headers: headers.iter().map(|(name, _)| name.clone()).collect(),
            has_body: body.is_some(),
        })
    }

    fn render_part(&self, part: &str, scope: &Value) -> Result<String, TemplateError> {
        let failed = |e: minijinja::Error| TemplateError {
            part: part.to_owned(),
            message: describe(&e),
        };
        self.env
            .get_template(part)
            .and_then(|t| t.render(scope))
            .map_err(failed)
    }

    /// Renders every part in `scope` (see [`record_scope`], [`batch_scope`]).
    /// A delete without a body template has no body; a record's fields
    /// without one are sent as a JSON object.
    pub fn render(
        &self,
        scope: &Value,
        default_body: Option<String>,
    ) -> Result<RenderedRequest, TemplateError> {
        let method = self.render_part("method", scope)?;
        let method = method.trim().to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(TemplateError {
                part: "method".into(),
                message: format!(
                    "rendered `{method}`; a method is one of {}",
                    METHODS.join(", ")
                ),
            });
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| TemplateError {
            part: "method".into(),
            message: e.to_string(),
        })?;
        let url = self.render_part("url", scope)?.trim().to_owned();
        let parsed = url::Url::parse(&url).map_err(|e| TemplateError {
            part: "url".into(),
            message: format!("rendered a URL that does not parse ({e})"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(TemplateError {
                part: "url".into(),
                message: "rendered a URL that is not http(s)".into(),
            });
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for name in &self.headers {
            let part = format!("headers.{name}");
            let value = self.render_part(&part, scope)?;
            if reqwest::header::HeaderValue::from_str(&value).is_err() {
                return Err(TemplateError {
                    part,
                    message: "rendered a value that cannot be a header (a line break or a control character)".into(),
                });
            }
            headers.push((name.clone(), value));
        }
        let body = if self.has_body {
            Some(self.render_part("body", scope)?)
        } else {
            default_body
        };
        Ok(RenderedRequest {
            method,
            url,
            headers,
            body,
        })
    }
}

impl fmt::Debug for RequestTemplates {
    // The sources hold interpolated credentials (`${TOKEN}` in a header).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTemplates")
            .field("headers", &self.headers)
            .field("has_body", &self.has_body)
            .finish_non_exhaustive()
    }
}

/// One record as templates see it.
#[derive(Debug, Serialize)]
pub struct RecordScope<'a> {
    pub key: &'a str,
    pub op: &'static str,
    pub version: Option<&'a str>,
    pub idempotency_key: String,
    /// The mapped fields; an empty object for a delete.
    pub fields: serde_json::Value,
}

impl<'a> RecordScope<'a> {
    pub fn of(ctx: &BatchContext, record: &'a OutboundRecord) -> Result<RecordScope<'a>, String> {
        let fields = match &record.fields {
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|e| format!("the record's fields are not JSON: {e}"))?,
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        Ok(RecordScope {
            key: &record.key,
            op: record.op.as_str(),
            version: record.version.as_deref(),
            idempotency_key: record.idempotency_key(&ctx.sync),
            fields,
        })
    }
}

#[derive(Serialize)]
struct RecordRequestScope<'a> {
    sync: &'a str,
    run_id: i64,
    batch: i32,
    #[serde(flatten)]
    record: &'a RecordScope<'a>,
}

#[derive(Serialize)]
struct BatchRequestScope<'a> {
    sync: &'a str,
    run_id: i64,
    batch: i32,
    records: &'a [RecordScope<'a>],
}

/// What a one-request-per-record template sees.
pub fn record_scope(ctx: &BatchContext, record: &RecordScope<'_>) -> Value {
    Value::from(Serde(RecordRequestScope {
        sync: &ctx.sync,
        run_id: ctx.run_id,
        batch: ctx.batch_no,
        record,
    }))
}

/// What a one-request-per-batch template sees.
pub fn batch_scope(ctx: &BatchContext, records: &[RecordScope<'_>]) -> Value {
    Value::from(Serde(BatchRequestScope {
        sync: &ctx.sync,
        run_id: ctx.run_id,
        batch: ctx.batch_no,
        records,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::record::Op;
    use serde_json::value::RawValue;

    fn ctx() -> BatchContext {
        BatchContext {
            sync: "customers".into(),
            destination: "crm".into(),
            run_id: 12,
            batch_no: 3,
            new_keys_only: false,
        }
    }

    fn record(op: Op, fields: Option<&str>) -> OutboundRecord {
        OutboundRecord {
            key: "42".into(),
            op,
            fields: fields.map(|f| RawValue::from_string(f.into()).unwrap()),
            version: fields.map(|_| "9f2c".into()),
            snapshot_run_id: 11,
            destination_id: None,
            update_fields: None,
        }
    }

    fn templates() -> RequestTemplates {
        RequestTemplates::compile(
            Some("{% if op == 'delete' %}DELETE{% else %}PUT{% endif %}"),
            "https://api.example.com/users/{{ key | urlencode }}",
            &[(
                "X-Plan".into(),
                "{{ fields.plan | default('none') }}".into(),
            )],
            Some(r#"{"email": {{ fields.email | tojson }}, "sync": {{ sync | tojson }}}"#),
        )
        .unwrap()
    }

    #[test]
    fn a_record_renders_to_its_request() {
        let upsert = record(Op::Upsert, Some(r#"{"email": "a\"b@c.co", "plan": "pro"}"#));
        let scope = RecordScope::of(&ctx(), &upsert).unwrap();
        let request = templates()
            .render(&record_scope(&ctx(), &scope), None)
            .unwrap();
        assert_eq!(request.method, reqwest::Method::PUT);
        assert_eq!(request.url, "https://api.example.com/users/42");
        assert_eq!(request.headers, [("X-Plan".to_owned(), "pro".to_owned())]);
        let body: serde_json::Value =
            serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"email": "a\"b@c.co", "sync": "customers"})
        );
    }

    #[test]
    fn undefined_values_are_errors_not_empty_strings() {
        let delete = record(Op::Delete, None);
        let scope = RecordScope::of(&ctx(), &delete).unwrap();
        let error = templates()
            .render(&record_scope(&ctx(), &scope), None)
            .unwrap_err();
        assert_eq!(error.part, "body");
        assert!(error.to_string().contains("undefined"), "{error}");
        let misspelt =
            RequestTemplates::compile(None, "https://x.example/{{ kee }}", &[], None).unwrap();
        let upsert = record(Op::Upsert, Some("{}"));
        let scope = RecordScope::of(&ctx(), &upsert).unwrap();
        assert_eq!(
            misspelt
                .render(&record_scope(&ctx(), &scope), None)
                .unwrap_err()
                .part,
            "url"
        );
    }

    #[test]
    fn syntax_errors_name_their_part_and_line() {
        let error = RequestTemplates::compile(
            None,
            "https://x.example",
            &[],
            Some("{\n {{ fields.email }"),
        )
        .unwrap_err();
        assert_eq!(error.part, "body");
        assert!(error.message.contains("line 2"), "{error}");
        let error =
            RequestTemplates::compile(Some("{{ op"), "https://x.example", &[], None).unwrap_err();
        assert_eq!(error.part, "method");
    }

    #[test]
    fn rendered_methods_urls_and_headers_are_checked() {
        let upsert = record(Op::Upsert, Some(r#"{"plan": "pro"}"#));
        let scope = RecordScope::of(&ctx(), &upsert).unwrap();
        let scope = record_scope(&ctx(), &scope);
        let bad_method =
            RequestTemplates::compile(Some("FETCH"), "https://x.example", &[], None).unwrap();
        assert_eq!(bad_method.render(&scope, None).unwrap_err().part, "method");
        let bad_url =
            RequestTemplates::compile(None, "ftp://x.example/{{ key }}", &[], None).unwrap();
        assert_eq!(bad_url.render(&scope, None).unwrap_err().part, "url");
        let bad_header = RequestTemplates::compile(
            None,
            "https://x.example",
            &[("X".into(), "a\nb".into())],
            None,
        )
        .unwrap();
        assert_eq!(
            bad_header.render(&scope, None).unwrap_err().part,
            "headers.X"
        );
    }

    #[test]
    fn a_batch_renders_from_its_records() {
        let templates = RequestTemplates::compile(
            None,
            "https://x.example/batch/{{ batch }}",
            &[],
            Some(r#"[{% for r in records %}{{ {"id": r.key, "email": r.fields.email} | tojson }}{% if not loop.last %},{% endif %}{% endfor %}]"#),
        )
        .unwrap();
        let a = record(Op::Upsert, Some(r#"{"email": "a@b.co"}"#));
        let b = OutboundRecord {
            key: "43".into(),
            ..record(Op::Upsert, Some(r#"{"email": "c@d.co"}"#))
        };
        let scopes = [
            RecordScope::of(&ctx(), &a).unwrap(),
            RecordScope::of(&ctx(), &b).unwrap(),
        ];
        let request = templates
            .render(&batch_scope(&ctx(), &scopes), None)
            .unwrap();
        assert_eq!(request.url, "https://x.example/batch/3");
        let body: serde_json::Value =
            serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!([{"id": "42", "email": "a@b.co"}, {"id": "43", "email": "c@d.co"}])
        );
    }
}
