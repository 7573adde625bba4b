//! A MySQL or MariaDB column value as a [`canonical::Value`], by the
//! column's type (the table is in `docs/sources.md`).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::mysql::{MySql, MySqlRow};
use sqlx::{Row, Type, TypeInfo, ValueRef};

use crate::sources::canonical::Value;

/// The value of column `index` of `row`; an error says what could not be
/// read.
pub(super) fn read(row: &MySqlRow, index: usize) -> Result<Value, String> {
    let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_info = raw.type_info().into_owned();
    let type_name = type_info.name();
    let decode_error = |e: sqlx::Error| format!("cannot read a {type_name} value: {e}");
    Ok(match type_name {
        // TINYINT(1), which is what BOOLEAN declares.
        "BOOLEAN" => Value::Bool(row.try_get::<bool, _>(index).map_err(decode_error)?),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            Value::Int(row.try_get::<i64, _>(index).map_err(decode_error)?)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => Value::UInt(row.try_get::<u64, _>(index).map_err(decode_error)?),
        "YEAR" => Value::UInt(
            row.try_get_unchecked::<u16, _>(index)
                .map_err(decode_error)?
                .into(),
        ),
        "FLOAT" => Value::Float32(row.try_get::<f32, _>(index).map_err(decode_error)?),
        "DOUBLE" => Value::Float(row.try_get::<f64, _>(index).map_err(decode_error)?),
        // Sent as text in both protocols: the scale is kept.
        "DECIMAL" => Value::Decimal(text(row, index).map_err(decode_error)?),
        "DATE" => Value::Date(row.try_get::<NaiveDate, _>(index).map_err(decode_error)?),
        "DATETIME" => Value::Timestamp(
            row.try_get::<NaiveDateTime, _>(index)
                .map_err(decode_error)?,
        ),
        // Stored in UTC; the session's time zone is +00:00.
        "TIMESTAMP" => Value::TimestampUtc(
            row.try_get::<DateTime<Utc>, _>(index)
                .map_err(decode_error)?,
        ),
        "TIME" => Value::Time(row.try_get::<NaiveTime, _>(index).map_err(|e| {
            format!("cannot read a TIME value as a time of day (00:00:00 to 23:59:59): {e}")
        })?),
        "JSON" => {
            let bytes = bytes(row, index).map_err(decode_error)?;
            Value::Json(serde_json::from_slice(&bytes).map_err(|e| format!("JSON value: {e}"))?)
        }
        "BIT" => {
            let bytes = bytes(row, index).map_err(decode_error)?;
            if bytes.len() > 8 {
                return Err(format!("a BIT value of {} bytes", bytes.len()));
            }
            Value::UInt(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
        }
        _ => {
            let bytes = bytes(row, index).map_err(decode_error)?;
            if <&str as Type<MySql>>::compatible(&type_info) {
                Value::Text(bytes)
            } else {
                // BINARY, VARBINARY, BLOBs, GEOMETRY: as Postgres shows bytea.
                Value::Bytes(bytes)
            }
        }
    })
}

/// The value's bytes as the server sent them (text, in the connection's
/// utf8mb4, for the string types and DECIMAL).
fn bytes(row: &MySqlRow, index: usize) -> Result<Vec<u8>, sqlx::Error> {
    row.try_get_unchecked::<Vec<u8>, _>(index)
}

fn text(row: &MySqlRow, index: usize) -> Result<String, sqlx::Error> {
    let bytes = bytes(row, index)?;
    String::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
