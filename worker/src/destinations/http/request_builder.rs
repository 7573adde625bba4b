//! The request body of the `http` destination (documented in the README):
//!
//! ```json
//! {"sync": "customers", "run_id": 12, "batch": 3,
//!  "records": [
//!    {"op": "upsert", "key": "42", "version": "9f2c…", "fields": {"email": "a@b.co"}},
//!    {"op": "delete", "key": "17"}]}
//! ```
//! `version` is the content hash of the record version: together with `key`
//! it identifies a version, so receivers can drop repeats.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::batch::{BatchContext, OutboundRecord};

#[derive(Serialize)]
struct Body<'a> {
    sync: &'a str,
    run_id: i64,
    batch: i32,
    records: Vec<RecordBody<'a>>,
}

#[derive(Serialize)]
struct RecordBody<'a> {
    op: &'static str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a RawValue>,
}

pub fn build_body(
    ctx: &BatchContext,
    records: &[OutboundRecord],
) -> Result<Vec<u8>, serde_json::Error> {
    let body = Body {
        sync: &ctx.sync,
        run_id: ctx.run_id,
        batch: ctx.batch_no,
        records: records
            .iter()
            .map(|r| RecordBody {
                op: r.op.as_str(),
                key: &r.key,
                version: r.version.as_deref(),
                fields: r.fields.as_deref(),
            })
            .collect(),
    };
    serde_json::to_vec(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Op;

    #[test]
    fn body_matches_the_documented_format() {
        let ctx = BatchContext {
            sync: "customers".into(),
            destination: "crm".into(),
            run_id: 12,
            batch_no: 3,
        };
        let records = vec![
            OutboundRecord {
                key: "42".into(),
                op: Op::Upsert,
                fields: Some(RawValue::from_string("{\"email\": \"a@b.co\"}".into()).unwrap()),
                version: Some("9f2c".into()),
            },
            OutboundRecord {
                key: "17".into(),
                op: Op::Delete,
                fields: None,
                version: None,
            },
        ];
        let body: serde_json::Value =
            serde_json::from_slice(&build_body(&ctx, &records).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"sync": "customers", "run_id": 12, "batch": 3, "records": [
                {"op": "upsert", "key": "42", "version": "9f2c", "fields": {"email": "a@b.co"}},
                {"op": "delete", "key": "17"}
            ]})
        );
    }
}
