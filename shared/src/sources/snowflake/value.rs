//! A Snowflake value in the SQL API's jsonv2 encoding (every value a string)
//! as a [`canonical::Value`], by its column's `rowType`.

use chrono::{DateTime, NaiveDate, NaiveTime};

use super::api::ColumnType;
use crate::sources::canonical::Value;

/// The value of one cell. A string that does not read as its type is kept
/// as text.
pub(super) fn read(cell: Option<&str>, column: &ColumnType) -> Value {
    let Some(text) = cell else {
        return Value::Null;
    };
    typed(text, column).unwrap_or_else(|| Value::Text(text.as_bytes().to_vec()))
}

fn typed(text: &str, column: &ColumnType) -> Option<Value> {
    Some(match column.kind.to_ascii_lowercase().as_str() {
        "fixed" | "number" if column.scale.unwrap_or(0) == 0 => match text.parse() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Decimal(text.to_owned()),
        },
        "fixed" | "number" | "decfloat" => Value::Decimal(text.to_owned()),
        "real" | "float" | "double" => Value::Float(text.parse().ok()?),
        "boolean" => Value::Bool(match text {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return None,
        }),
        // Days since 1970-01-01.
        "date" => {
            let days: i64 = text.parse().ok()?;
            Value::Date(
                NaiveDate::from_ymd_opt(1970, 1, 1)?
                    .checked_add_signed(chrono::Duration::days(days))?,
            )
        }
        // Seconds since midnight, with nine decimals.
        "time" => {
            let nanos = epoch_nanos(text)?;
            let secs = u32::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
            let frac = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
            Value::Time(NaiveTime::from_num_seconds_from_midnight_opt(secs, frac)?)
        }
        "timestamp_ntz" => Value::Timestamp(instant(text)?.naive_utc()),
        "timestamp_ltz" => Value::TimestampUtc(instant(text)?),
        // Seconds since the epoch, a space, and the offset in minutes plus
        // 1440: the instant is the same whatever the offset.
        "timestamp_tz" => Value::TimestampUtc(instant(text.split(' ').next()?)?),
        "variant" | "object" | "array" => Value::Json(serde_json::from_str(text).ok()?),
        "binary" => Value::Bytes(hex(text)?),
        _ => return None,
    })
}

fn instant(text: &str) -> Option<DateTime<chrono::Utc>> {
    let nanos = epoch_nanos(text)?;
    Some(DateTime::from_timestamp_nanos(i64::try_from(nanos).ok()?))
}

/// `1764659109.250000000` (or `-1.500000000`) in nanoseconds.
fn epoch_nanos(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let fraction: i128 = format!("{fraction:0<9}").parse().ok()?;
    let nanos = whole * 1_000_000_000 + fraction;
    Some(if negative { -nanos } else { nanos })
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

    fn column(kind: &str, scale: i64) -> ColumnType {
        ColumnType {
            name: "C".into(),
            kind: kind.into(),
            scale: Some(scale),
        }
    }

    #[test]
    fn jsonv2_strings_read_by_their_types() {
        assert_eq!(read(Some("42"), &column("fixed", 0)), Value::Int(42));
        assert_eq!(
            read(Some("12.50"), &column("fixed", 2)),
            Value::Decimal("12.50".into())
        );
        let day = NaiveDate::from_ymd_opt(2025, 12, 2).unwrap();
        let days = (day - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days();
        assert_eq!(
            read(Some(&days.to_string()), &column("date", 0)),
            Value::Date(day)
        );
        let at = NaiveDate::from_ymd_opt(2026, 12, 2)
            .unwrap()
            .and_hms_milli_opt(7, 5, 9, 250)
            .unwrap();
        let epoch = format!("{}.250000000", at.and_utc().timestamp());
        assert_eq!(
            read(Some(&epoch), &column("timestamp_ntz", 9)),
            Value::Timestamp(at)
        );
        assert_eq!(
            read(Some(&format!("{epoch} 1500")), &column("timestamp_tz", 9)),
            Value::TimestampUtc(at.and_utc())
        );
        assert_eq!(
            read(Some("-1.500000000"), &column("timestamp_ntz", 9)),
            Value::Timestamp(DateTime::from_timestamp_nanos(-1_500_000_000).naive_utc())
        );
        assert_eq!(
            read(Some("3600.5"), &column("time", 9)),
            Value::Time(NaiveTime::from_hms_milli_opt(1, 0, 0, 500).unwrap())
        );
        assert_eq!(
            read(Some("00AB"), &column("binary", 0)),
            Value::Bytes(vec![0, 0xab])
        );
        assert_eq!(read(Some("true"), &column("boolean", 0)), Value::Bool(true));
        assert_eq!(read(None, &column("text", 0)), Value::Null);
        assert_eq!(
            read(Some("not a day"), &column("date", 0)),
            Value::Text(b"not a day".to_vec())
        );
    }
}
