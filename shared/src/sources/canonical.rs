//! The payload text every source produces for a record: Postgres `jsonb`'s
//! text form, `{"id": 7, "plan": "pro", "email": "a@b.co"}` (keys shortest
//! first, then in byte order; `", "` and `": "` between), so that a record
//! hashes the same and reaches a destination the same whatever warehouse it
//! came from. The Postgres source has the warehouse write it
//! (`jsonb_build_object(…)::text`); the other sources build it here from
//! typed values, rendered as Postgres renders the matching type (the table
//! is in `docs/sources.md`).

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};

/// One value of a record, typed as the warehouse typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// A decimal with its scale, as the warehouse wrote it (`12.50`).
    Decimal(String),
    Float(f64),
    Float32(f32),
    /// Text as the warehouse's bytes: a value that is not UTF-8 reaches the
    /// planner as its record's problem, not as a failed run.
    Text(Vec<u8>),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    TimestampUtc(DateTime<Utc>),
    Time(NaiveTime),
    Json(serde_json::Value),
}

/// The payload of one record: `fields` (name, value) as a `jsonb` object.
pub fn object(fields: &[(&str, Value)]) -> Vec<u8> {
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let mut out = Vec::with_capacity(16 * fields.len() + 2);
    Layout::new(&names).write(&mut out, |i, out| write_value(out, &fields[i].1));
    out
}

/// The shape of a model's payloads, worked out once per model: its fields
/// in jsonb's key order, each with its `"name": ` already written.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Indices into the names given to [`Layout::new`], in writing order.
    order: Vec<usize>,
    /// `"name": ` of each field, by index.
    prefixes: Vec<Vec<u8>>,
}

impl Layout {
    pub fn new(names: &[&str]) -> Layout {
        // A field named twice keeps its last value, as jsonb does: of equal
        // names the last comes first, and `dedup` keeps the first.
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| jsonb_key_order(names[a], names[b]).then(b.cmp(&a)));
        order.dedup_by(|next, kept| names[*next] == names[*kept]);
        let prefixes = names
            .iter()
            .map(|name| {
                let mut prefix = Vec::with_capacity(name.len() + 4);
                write_string(&mut prefix, name.as_bytes());
                prefix.extend_from_slice(b": ");
                prefix
            })
            .collect();
        Layout { order, prefixes }
    }

    /// Writes one payload; `value(i, out)` writes the value of field `i`.
    pub fn write(&self, out: &mut Vec<u8>, mut value: impl FnMut(usize, &mut Vec<u8>)) {
        out.push(b'{');
        for (n, &index) in self.order.iter().enumerate() {
            if n > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(&self.prefixes[index]);
            value(index, out);
        }
        out.push(b'}');
    }
}

/// A primary key as text, as Postgres's `(key)::text` writes it; None for
/// NULL.
pub fn key_text(value: &Value) -> Option<Vec<u8>> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::UInt(u) => u.to_string().into_bytes(),
        Value::Decimal(d) => d.clone().into_bytes(),
        Value::Float(f) => float_text(*f).into_bytes(),
        Value::Float32(f) => float32_text(*f).into_bytes(),
        Value::Text(bytes) => bytes.clone(),
        Value::Bytes(bytes) => bytea_text(bytes).into_bytes(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string().into_bytes(),
        Value::Timestamp(t) => timestamp_text(t, ' ').into_bytes(),
        Value::TimestampUtc(t) => {
            format!("{}+00", timestamp_text(&t.naive_utc(), ' ')).into_bytes()
        }
        Value::Time(t) => time_text(t).into_bytes(),
        Value::Json(json) => {
            let mut out = Vec::new();
            write_json(&mut out, json);
            out
        }
    })
}

/// jsonb's key order: shorter keys first, equal lengths in byte order.
fn jsonb_key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::UInt(u) => out.extend_from_slice(u.to_string().as_bytes()),
        Value::Decimal(d) => write_decimal(out, d.as_bytes()),
        Value::Float(f) => write_float(out, *f, float_text),
        Value::Float32(f) => write_float(out, *f as f64, |_| float32_text(*f)),
        Value::Text(bytes) => write_string(out, bytes),
        Value::Bytes(bytes) => write_string(out, bytea_text(bytes).as_bytes()),
        Value::Date(d) => write_string(out, d.format("%Y-%m-%d").to_string().as_bytes()),
        Value::Timestamp(t) => write_string(out, timestamp_text(t, 'T').as_bytes()),
        Value::TimestampUtc(t) => {
            let text = format!("{}+00:00", timestamp_text(&t.naive_utc(), 'T'));
            write_string(out, text.as_bytes())
        }
        Value::Time(t) => write_string(out, time_text(t).as_bytes()),
        Value::Json(json) => write_json(out, json),
    }
}

/// NaN and the infinities are not JSON numbers: jsonb keeps them as
/// strings. Every other float is written in full decimal notation with the
/// fewest digits that read back the same (what Postgres's float-to-jsonb
/// conversion gives), and -0 as 0.
fn write_float(out: &mut Vec<u8>, f: f64, text: impl Fn(f64) -> String) {
    if f.is_nan() {
        write_string(out, b"NaN");
    } else if f.is_infinite() {
        write_string(out, if f > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        out.extend_from_slice(text(f).as_bytes());
    }
}

fn float_text(f: f64) -> String {
    if f == 0.0 {
        "0".to_owned()
    } else {
        f.to_string()
    }
}

fn float32_text(f: f32) -> String {
    if f == 0.0 {
        "0".to_owned()
    } else {
        f.to_string()
    }
}

/// A decimal the warehouse wrote: a JSON number when it is one (its scale
/// kept), a string otherwise (`NaN`).
pub(crate) fn write_decimal(out: &mut Vec<u8>, text: &[u8]) {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let is_number = !digits.is_empty()
        && digits.iter().all(|&b| b.is_ascii_digit() || b == b'.')
        && digits.iter().filter(|&&b| b == b'.').count() <= 1
        && !digits.starts_with(b".")
        && !digits.ends_with(b".");
    if is_number {
        out.extend_from_slice(text);
    } else {
        write_string(out, text);
    }
}

/// A float as Postgres's `float4`/`float8` text wrote it (`1.5e-07`), as
/// jsonb keeps it: NaN and the infinities as strings, every other value
/// read as a `numeric` (so in full decimal notation, `0.00000015`, and -0
/// as 0). Text that is no float is written as a string.
pub(crate) fn write_float_text(out: &mut Vec<u8>, text: &[u8]) {
    match decimal_notation(text) {
        Some(decimal) => out.extend_from_slice(decimal.as_bytes()),
        None => write_string(out, text),
    }
}

/// `numeric_in` then `numeric_out` of a float's text: the digits moved by
/// the exponent, and as many decimals as the text had after its point
/// minus the exponent (none when that is negative).
fn decimal_notation(text: &[u8]) -> Option<String> {
    let (negative, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
        Some(at) => {
            let exponent = std::str::from_utf8(&rest[at + 1..]).ok()?;
            (&rest[..at], exponent.parse::<i32>().ok()?)
        }
        None => (rest, 0),
    };
    let (whole, fraction) = match mantissa.iter().position(|&b| b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, &mantissa[mantissa.len()..]),
    };
    // A float's exponent stays within ±400; anything else is not a float.
    if exponent.abs() > 400
        || whole.is_empty()
        || !whole.iter().chain(fraction).all(u8::is_ascii_digit)
    {
        return None;
    }
    let digits: Vec<u8> = whole.iter().chain(fraction).copied().collect();
    let point = whole.len() as i64 + exponent as i64;
    let scale = (fraction.len() as i64 - exponent as i64).max(0);
    let digit_at = |i: i64| {
        if i < 0 || i >= digits.len() as i64 {
            b'0'
        } else {
            digits[i as usize]
        }
    };
    let mut integer: Vec<u8> = (0..point.max(0)).map(digit_at).collect();
    let leading_zeros = integer.iter().take_while(|&&b| b == b'0').count();
    integer.drain(..leading_zeros);
    if integer.is_empty() {
        integer.push(b'0');
    }
    let mut out = String::new();
    if negative && digits.iter().any(|&b| b != b'0') {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&integer).ok()?);
    if scale > 0 {
        out.push('.');
        for i in 0..scale {
            out.push(digit_at(point + i) as char);
        }
    }
    Some(out)
}

/// Postgres's `bytea` text: `\x` and lower-case hex.
fn bytea_text(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + 2 * bytes.len());
    text.push_str("\\x");
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// `2026-12-02T07:05:09.25`: fractional seconds without trailing zeros, as
/// Postgres writes timestamps in JSON (`T`) and as text (` `).
fn timestamp_text(t: &NaiveDateTime, separator: char) -> String {
    format!(
        "{}{separator}{}",
        t.date().format("%Y-%m-%d"),
        time_text(&t.time())
    )
}

fn time_text(t: &NaiveTime) -> String {
    let mut text = t.format("%H:%M:%S").to_string();
    let micros = t.nanosecond() / 1_000;
    if micros > 0 {
        let fraction = format!("{micros:06}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text
}

/// A JSON string with Postgres's escapes: `"`, `\`, the named controls and
/// `\u00XX` for the other controls; every other byte as it is. The bytes
/// between escapes are copied as runs (every text value of every model row
/// comes through here).
pub(crate) fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        if escaped.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escaped);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// A JSON document in jsonb's text form (nested objects in jsonb key order).
fn write_json(out: &mut Vec<u8>, json: &serde_json::Value) {
    match json {
        serde_json::Value::Null => out.extend_from_slice(b"null"),
        serde_json::Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.extend_from_slice(i.to_string().as_bytes()),
            (_, Some(u), _) => out.extend_from_slice(u.to_string().as_bytes()),
            (_, _, Some(f)) => write_float(out, f, float_text),
            _ => out.extend_from_slice(n.to_string().as_bytes()),
        },
        serde_json::Value::String(s) => write_string(out, s.as_bytes()),
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| jsonb_key_order(a, b));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_string(out, key.as_bytes());
                out.extend_from_slice(b": ");
                write_json(out, &map[key]);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(fields: &[(&str, Value)]) -> String {
        String::from_utf8(object(fields)).expect("utf-8")
    }

    #[test]
    fn keys_go_shortest_first_then_in_byte_order_like_jsonb() {
        let fields = [
            ("plan", Value::Text(b"pro".to_vec())),
            ("id", Value::Int(7)),
            ("email", Value::Null),
            ("Zeta", Value::Bool(true)),
        ];
        assert_eq!(
            text(&fields),
            r#"{"id": 7, "Zeta": true, "plan": "pro", "email": null}"#
        );
        assert_eq!(text(&[]), "{}");
        // As jsonb_build_object('a', 1, 'b', 2, 'a', 3) does.
        let twice = [
            ("a", Value::Int(1)),
            ("b", Value::Int(2)),
            ("a", Value::Int(3)),
        ];
        assert_eq!(text(&twice), r#"{"a": 3, "b": 2}"#);
    }

    #[test]
    fn strings_are_escaped_as_postgres_escapes_them() {
        let fields = [("s", Value::Text(b"a\"b\\c\nd\te\x01\x7f\xc3\xa9".to_vec()))];
        assert_eq!(
            text(&fields),
            "{\"s\": \"a\\\"b\\\\c\\nd\\te\\u0001\u{7f}é\"}"
        );
        // Escapes first and last, and nothing to escape at all.
        let edges = [
            ("e", Value::Text(Vec::new())),
            ("f", Value::Text(b"\x08x\x0c\r".to_vec())),
            ("g", Value::Text(b"\x1fplain\"".to_vec())),
        ];
        assert_eq!(
            text(&edges),
            r#"{"e": "", "f": "\bx\f\r", "g": "\u001fplain\""}"#
        );
    }

    #[test]
    fn floats_are_written_in_full_with_the_fewest_digits() {
        let cases = [
            (0.1, "0.1"),
            (1e20, "100000000000000000000"),
            (1e-7, "0.0000001"),
            (-0.0, "0"),
            (3.0, "3"),
            (f64::NAN, "\"NaN\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
        ];
        for (f, want) in cases {
            assert_eq!(
                text(&[("f", Value::Float(f))]),
                format!("{{\"f\": {want}}}")
            );
        }
        assert_eq!(text(&[("f", Value::Float32(0.1))]), "{\"f\": 0.1}");
    }

    #[test]
    fn decimals_keep_their_scale_and_times_drop_trailing_zeros() {
        let at = NaiveDate::from_ymd_opt(2026, 12, 2)
            .unwrap()
            .and_hms_micro_opt(7, 5, 9, 250_000)
            .unwrap();
        let fields = [
            ("d", Value::Decimal("12.50".to_owned())),
            ("n", Value::Decimal("NaN".to_owned())),
            ("ts", Value::Timestamp(at)),
            ("tz", Value::TimestampUtc(at.and_utc())),
            ("day", Value::Date(at.date())),
            ("bin", Value::Bytes(vec![0, 0xab])),
        ];
        assert_eq!(
            text(&fields),
            r#"{"d": 12.50, "n": "NaN", "ts": "2026-12-02T07:05:09.25", "tz": "2026-12-02T07:05:09.25+00:00", "bin": "\\x00ab", "day": "2026-12-02"}"#
        );
        assert_eq!(
            key_text(&Value::Timestamp(at)).unwrap(),
            b"2026-12-02 07:05:09.25"
        );
    }

    #[test]
    fn float_text_is_read_as_numeric_reads_it() {
        let cases: [(&[u8], &str); 11] = [
            (b"0.1", "0.1"),
            (b"1e+30", "1000000000000000000000000000000"),
            (b"1.5e-07", "0.00000015"),
            (b"-1.5e-07", "-0.00000015"),
            (b"-0", "0"),
            (b"123456.7", "123456.7"),
            (b"1.2345678901234567e+16", "12345678901234567"),
            (b"1e-05", "0.00001"),
            (b"NaN", "\"NaN\""),
            (b"-Infinity", "\"-Infinity\""),
            (b"1e+999", "\"1e+999\""),
        ];
        for (text, want) in cases {
            let mut out = Vec::new();
            write_float_text(&mut out, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn nested_json_is_written_in_jsonb_form() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"tags":["a","b"],"x":{"bb":1,"a":2.5},"n":null}"#).unwrap();
        assert_eq!(
            text(&[("j", Value::Json(json))]),
            r#"{"j": {"n": null, "x": {"a": 2.5, "bb": 1}, "tags": ["a", "b"]}}"#
        );
    }
}
