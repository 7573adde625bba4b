//! A BigQuery cell (the REST API's `{"v": …}`, scalars as strings) as a
//! [`canonical::Value`], by its schema field.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::Value as Json;

use super::api::Field;
use crate::sources::canonical::Value;

pub(super) fn read(cell: &Json, field: &Field) -> Value {
    if cell.is_null() {
        return Value::Null;
    }
    if is_nested(field) {
        return Value::Json(json_of(cell, field));
    }
    let Some(text) = cell.as_str() else {
        return Value::Json(cell.clone());
    };
    typed(text, &field.kind).unwrap_or_else(|| Value::Text(text.as_bytes().to_vec()))
}

fn is_nested(field: &Field) -> bool {
    field.mode.as_deref() == Some("REPEATED") || matches!(field.kind.as_str(), "RECORD" | "STRUCT")
}

fn typed(text: &str, kind: &str) -> Option<Value> {
    Some(match kind {
        "INTEGER" | "INT64" => Value::Int(text.parse().ok()?),
        "FLOAT" | "FLOAT64" => Value::Float(text.parse().ok()?),
        "NUMERIC" | "BIGNUMERIC" | "DECIMAL" | "BIGDECIMAL" => Value::Decimal(text.to_owned()),
        "BOOLEAN" | "BOOL" => Value::Bool(match text {
            "true" => true,
            "false" => false,
            _ => return None,
        }),
        "STRING" => Value::Text(text.as_bytes().to_vec()),
        "BYTES" => Value::Bytes(STANDARD.decode(text).ok()?),
        "DATE" => Value::Date(NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?),
        "DATETIME" => Value::Timestamp(
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                .ok()?,
        ),
        "TIME" => Value::Time(NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?),
        // Microseconds since the epoch (formatOptions.useInt64Timestamp).
        "TIMESTAMP" => Value::TimestampUtc(DateTime::from_timestamp_micros(text.parse().ok()?)?),
        "JSON" => Value::Json(serde_json::from_str(text).ok()?),
        _ => return None,
    })
}

/// A nested value (a STRUCT's `{"f": [...]}`, a REPEATED field's
/// `[{"v": …}]`) as JSON: numbers and booleans as JSON's, the rest as text.
fn json_of(cell: &Json, field: &Field) -> Json {
    if field.mode.as_deref() == Some("REPEATED") {
        let element = Field {
            mode: None,
            ..field.clone()
        };
        return Json::Array(
            cell.as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|item| json_of(&item["v"], &element))
                        .collect()
                })
                .unwrap_or_default(),
        );
    }
    if matches!(field.kind.as_str(), "RECORD" | "STRUCT") {
        let values = cell["f"].as_array().cloned().unwrap_or_default();
        return Json::Object(
            field
                .fields
                .iter()
                .zip(values)
                .map(|(sub, value)| (sub.name.clone(), json_of(&value["v"], sub)))
                .collect(),
        );
    }
    let Some(text) = cell.as_str() else {
        return cell.clone();
    };
    match field.kind.as_str() {
        "INTEGER" | "INT64" => text
            .parse::<i64>()
            .map(Json::from)
            .unwrap_or_else(|_| text.into()),
        "FLOAT" | "FLOAT64" => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Json::Number)
            .unwrap_or_else(|| text.into()),
        "BOOLEAN" | "BOOL" => Json::Bool(text == "true"),
        "JSON" => serde_json::from_str(text).unwrap_or_else(|_| text.into()),
        _ => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: &str, mode: Option<&str>, fields: Vec<Field>) -> Field {
        Field {
            name: "f".into(),
            kind: kind.into(),
            mode: mode.map(Into::into),
            fields,
        }
    }

    #[test]
    fn cells_read_by_their_schema() {
        assert_eq!(
            read(&"42".into(), &field("INTEGER", None, vec![])),
            Value::Int(42)
        );
        assert_eq!(
            read(&"AAs=".into(), &field("BYTES", None, vec![])),
            Value::Bytes(vec![0, 0x0b])
        );
        assert_eq!(
            read(
                &"1764659109250000".into(),
                &field("TIMESTAMP", None, vec![])
            ),
            Value::TimestampUtc(DateTime::from_timestamp_micros(1_764_659_109_250_000).unwrap())
        );
        assert_eq!(
            read(&Json::Null, &field("STRING", None, vec![])),
            Value::Null
        );
        let tags = serde_json::json!([{ "v": "a" }, { "v": "b" }]);
        assert_eq!(
            read(&tags, &field("STRING", Some("REPEATED"), vec![])),
            Value::Json(serde_json::json!(["a", "b"]))
        );
        let address =
            serde_json::json!({ "f": [{ "v": "Berlin" }, { "v": "10115" }, { "v": "3" }] });
        let record = field(
            "RECORD",
            None,
            vec![
                Field {
                    name: "city".into(),
                    ..field("STRING", None, vec![])
                },
                Field {
                    name: "zip".into(),
                    ..field("STRING", None, vec![])
                },
                Field {
                    name: "floor".into(),
                    ..field("INTEGER", None, vec![])
                },
            ],
        );
        assert_eq!(
            read(&address, &record),
            Value::Json(serde_json::json!({ "city": "Berlin", "zip": "10115", "floor": 3 }))
        );
    }
}
