//! The request body of the `http` destination (documented in the README):
//!
//! ```json
//! {"sync": "customers", "run_id": 12, "batch": 3,
//!  "records": [
//!    {"op": "upsert", "key": "42", "version": "9f2c…", "idempotency_key": "customers:42:9f2c…:11",
//!     "fields": {"email": "a@b.co"}},
//!    {"op": "delete", "key": "17", "idempotency_key": "customers:17:delete:12"}]}
//! ```
//! Each record's `idempotency_key` names its effect (see
//! [`OutboundRecord::idempotency_key`]); the `Idempotency-Key` header names
//! the request's set of effects, so a receiver can drop repeated requests
//! whole, or repeated records one by one.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::destinations::record::{BatchContext, OutboundRecord};

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
    idempotency_key: String,
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
                idempotency_key: r.idempotency_key(&ctx.sync),
                fields: r.fields.as_deref(),
            })
            .collect(),
    };
    serde_json::to_vec(&body)
}

/// The `Idempotency-Key` header: a hash of the records' own keys, so a
/// retried or redelivered request (same records) repeats it, and a
/// sub-request of a split batch gets its own.
pub fn request_idempotency_key(sync: &str, records: &[OutboundRecord]) -> String {
    let mut hasher = blake3::Hasher::new();
    for r in records {
        hasher.update(r.idempotency_key(sync).as_bytes());
        hasher.update(b"\n");
    }
    let hash = hasher.finalize();
    crate::hex::encode(&hash.as_bytes()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::record::Op;

    #[test]
    fn body_matches_the_documented_format() {
        let ctx = BatchContext {
            sync: "customers".into(),
            destination: "crm".into(),
            run_id: 12,
            batch_no: 3,
            new_keys_only: false,
        };
        let records = vec![
            OutboundRecord {
                key: "42".into(),
                op: Op::Upsert,
                fields: Some(RawValue::from_string("{\"email\": \"a@b.co\"}".into()).unwrap()),
                version: Some("9f2c".into()),
                snapshot_run_id: 11,
                destination_id: None,
                update_fields: None,
            },
            OutboundRecord {
                key: "17".into(),
                op: Op::Delete,
                fields: None,
                version: None,
                snapshot_run_id: 12,
                destination_id: None,
                update_fields: None,
            },
        ];
        let body: serde_json::Value =
            serde_json::from_slice(&build_body(&ctx, &records).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"sync": "customers", "run_id": 12, "batch": 3, "records": [
                {"op": "upsert", "key": "42", "version": "9f2c", "idempotency_key": "customers:42:9f2c:11",
                 "fields": {"email": "a@b.co"}},
                {"op": "delete", "key": "17", "idempotency_key": "customers:17:delete:12"}
            ]})
        );
        let whole = request_idempotency_key("customers", &records);
        assert_eq!(whole.len(), 32);
        assert_eq!(whole, request_idempotency_key("customers", &records));
        assert_ne!(whole, request_idempotency_key("customers", &records[..1]));
    }
}
