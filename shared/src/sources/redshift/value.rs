//! A Redshift value, read in the text format of the simple query protocol,
//! as a [`canonical::Value`] by its column's type.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use sqlx::postgres::PgRow;
use sqlx::{Row, TypeInfo, ValueRef};

use crate::sources::canonical::Value;

/// The value of column `index` of `row`. Text that does not parse as its
/// type (`infinity`, dates before Christ) is kept as text, as Postgres's
/// JSON shows it.
pub(super) fn read(row: &PgRow, index: usize) -> Result<Value, String> {
    let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_owned();
    let bytes: Vec<u8> = raw
        .as_bytes()
        .map(<[u8]>::to_vec)
        .map_err(|e| format!("cannot read a {type_name} value: {e}"))?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        // Not UTF-8: the planner rejects the record with its key.
        return Ok(Value::Text(bytes));
    };
    Ok(typed(&type_name, text).unwrap_or(Value::Text(bytes)))
}

fn typed(type_name: &str, text: &str) -> Option<Value> {
    Some(match type_name {
        "BOOL" => Value::Bool(match text {
            "t" | "true" => true,
            "f" | "false" => false,
            _ => return None,
        }),
        "INT2" | "INT4" | "INT8" => Value::Int(text.parse().ok()?),
        "NUMERIC" => Value::Decimal(text.to_owned()),
        "FLOAT4" => Value::Float32(text.parse().ok()?),
        "FLOAT8" => Value::Float(text.parse().ok()?),
        "DATE" => Value::Date(NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?),
        "TIMESTAMP" => Value::Timestamp(timestamp(text)?),
        // The session's time zone is UTC, so the offset is +00.
        "TIMESTAMPTZ" => Value::TimestampUtc(timestamp(text.strip_suffix("+00")?)?.and_utc()),
        "TIME" => Value::Time(NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?),
        "JSON" | "JSONB" => Value::Json(serde_json::from_str(text).ok()?),
        "BYTEA" => Value::Bytes(hex(text.strip_prefix("\\x").unwrap_or(text))?),
        _ => return None,
    })
}

fn timestamp(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_parse_by_type_and_odd_ones_stay_text() {
        assert_eq!(typed("BOOL", "t"), Some(Value::Bool(true)));
        assert_eq!(typed("INT8", "-42"), Some(Value::Int(-42)));
        assert_eq!(
            typed("NUMERIC", "12.50"),
            Some(Value::Decimal("12.50".into()))
        );
        assert_eq!(
            typed("FLOAT8", "-Infinity"),
            Some(Value::Float(f64::NEG_INFINITY))
        );
        assert_eq!(typed("BYTEA", "\\x00ab"), Some(Value::Bytes(vec![0, 0xab])));
        assert_eq!(typed("DATE", "infinity"), None);
        assert_eq!(typed("TIMESTAMPTZ", "2026-12-02 07:05:09+01"), None);
        assert!(matches!(
            typed("TIMESTAMPTZ", "2026-12-02 07:05:09.5+00"),
            Some(Value::TimestampUtc(_))
        ));
        assert_eq!(typed("UUID", "0b7d…"), None);
    }
}
