//! Streams a model into a temp table of Ebb's state database with COPY,
//! hashing each mapped record on the way. The table lives only for the
//! planning transaction. A record that cannot be kept (its key or a value
//! is not UTF-8, or it is larger than `max_record_bytes`) goes in with its
//! problem and no payload, and becomes a planning rejection in the DLQ with
//! its key: the rest of the run goes on.

use std::time::Instant;

use futures::StreamExt;
use sqlx::{PgConnection, PgPool};

use super::{COPY_CHUNK_BYTES, HEARTBEAT_EVERY};
use crate::error::PlannerError;
use ebb_shared::StateError;
use ebb_shared::config::{FieldMapping, SyncConfig};
use ebb_shared::copy_text::{push_bytea, push_escaped};
use ebb_shared::sources::{Source, SourceError, SourceRow};

/// The content hash of a mapped record: BLAKE3 over the canonical jsonb text,
/// truncated to 128 bits.
pub fn content_hash(payload: &str) -> [u8; 16] {
    content_hash_bytes(payload.as_bytes())
}

/// A model row as it goes into the snapshot.
pub(super) struct Checked {
    pub(super) key: Option<String>,
    /// The payload, or why the record is refused.
    pub(super) payload: Result<String, String>,
    pub(super) hash: [u8; 16],
}

pub(super) fn check(row: SourceRow, max_record_bytes: usize) -> Checked {
    let hash = content_hash_bytes(&row.payload);
    let (key, bad_key) = match row.key {
        None => (None, None),
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(key) => (Some(key), None),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                (
                    Some(String::from_utf8_lossy(&bytes).into_owned()),
                    Some(format!(
                        "the primary key is not valid UTF-8 (byte 0x{:02X} at position {at}; shown here with U+FFFD); \
                         is the warehouse's encoding SQL_ASCII? Convert the key in the model, e.g. with convert_from(convert_to(col, 'LATIN1'), 'LATIN1')",
                        bytes[at]
                    )),
                )
            }
        },
    };
    let payload = match (bad_key, String::from_utf8(row.payload)) {
        (Some(problem), _) => Err(problem),
        (None, Err(e)) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            Err(format!(
                "{} is not valid UTF-8 (byte 0x{:02X}); is the warehouse's encoding SQL_ASCII? Convert the column in the model, \
                 e.g. with convert_from(convert_to(col, 'LATIN1'), 'LATIN1')",
                field_at(&bytes[..at]).map_or("a value".to_owned(), |f| format!("field `{f}`")),
                bytes[at]
            ))
        }
        (None, Ok(payload)) if payload.len() > max_record_bytes => Err(format!(
            "the record's mapped fields take {} bytes, over the sync's max_record_bytes ({max_record_bytes}); \
             trim the large values in the model, or raise max_record_bytes if the destination takes records this large",
            payload.len()
        )),
        (None, Ok(payload)) => Ok(payload),
    };
    Checked { key, payload, hash }
}

/// The field whose value the jsonb text `prefix` ends inside of (the last
/// `"name": ` before the end), to name it in a rejection.
fn field_at(prefix: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(prefix);
    let colon = text.rfind("\": ")?;
    let start = text[..colon].rfind('"')?;
    Some(text[start + 1..colon].to_owned())
}

fn content_hash_bytes(payload: &[u8]) -> [u8; 16] {
    let digest = blake3::hash(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.as_bytes()[..16]);
    out
}

fn push_row(buf: &mut Vec<u8>, row: &Checked) {
    match &row.key {
        Some(key) => push_escaped(buf, key),
        None => buf.extend_from_slice(b"\\N"),
    }
    buf.push(b'\t');
    push_bytea(buf, &row.hash);
    buf.push(b'\t');
    match &row.payload {
        Ok(payload) => {
            push_escaped(buf, payload);
            buf.extend_from_slice(b"\t\\N");
        }
        Err(problem) => {
            buf.extend_from_slice(b"\\N\t");
            push_escaped(buf, problem);
        }
    }
    buf.push(b'\n');
}

/// The planner's error for a source that failed after `rows` rows.
pub(super) fn read_failed(
    error: SourceError,
    sync: &SyncConfig,
    source_name: &str,
    rows: u64,
) -> PlannerError {
    match error {
        SourceError::Read(message) => PlannerError::SourceRead {
            sync: sync.name.clone(),
            source_name: source_name.to_owned(),
            rows,
            message,
        },
        other => other.into(),
    }
}

/// Creates `ebb_snapshot` (dropped at commit) on `conn` and fills it from the
/// source. Payloads are kept as the canonical text they came as: only those
/// a run sends are ever read as `jsonb`. Returns the number of rows read.
/// `heartbeat` keeps the planning run alive during long snapshots.
pub async fn snapshot(
    conn: &mut PgConnection,
    source: &dyn Source,
    sync: &SyncConfig,
    mapping: &[FieldMapping],
    heartbeat: Option<(&PgPool, i64)>,
) -> Result<u64, PlannerError> {
    sqlx::query(
        "CREATE TEMP TABLE ebb_snapshot (record_key TEXT, content_hash BYTEA NOT NULL, payload TEXT, problem TEXT) \
         ON COMMIT DROP",
    )
    .execute(&mut *conn)
    .await
    .map_err(StateError::query("creating the snapshot table"))?;

    let mut copy = conn
        .copy_in_raw("COPY ebb_snapshot (record_key, content_hash, payload, problem) FROM STDIN")
        .await
        .map_err(StateError::query("starting COPY into the snapshot"))?;
    let mut rows = source.stream(sync, mapping);
    let mut buf = Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024);
    let mut count = 0u64;
    let mut last_beat = Instant::now();
    while let Some(row) = rows.next().await {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                let _ = copy.abort("source read failed").await;
                return Err(read_failed(e, sync, source.name(), count));
            }
        };
        push_row(&mut buf, &check(row, sync.max_record_bytes));
        count += 1;
        if buf.len() >= COPY_CHUNK_BYTES {
            copy.send(buf.as_slice())
                .await
                .map_err(StateError::query("writing the snapshot"))?;
            buf.clear();
            if let Some((pool, run_id)) = heartbeat
                && last_beat.elapsed() > HEARTBEAT_EVERY
            {
                ebb_shared::state::runs::heartbeat(pool, run_id).await?;
                last_beat = Instant::now();
            }
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_slice())
            .await
            .map_err(StateError::query("writing the snapshot"))?;
    }
    copy.finish()
        .await
        .map_err(StateError::query("finishing the snapshot COPY"))?;
    sqlx::query("ANALYZE ebb_snapshot")
        .execute(&mut *conn)
        .await
        .map_err(StateError::query("analyzing the snapshot"))?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: Option<&[u8]>, payload: &[u8]) -> SourceRow {
        SourceRow {
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn rows_render_null_keys_and_hex_hashes() {
        let mut buf = Vec::new();
        push_row(&mut buf, &check(row(None, b"{\"a\": \"x\\\"y\"}"), 100));
        let line = String::from_utf8(buf).unwrap();
        let cols: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(cols[0], "\\N");
        assert!(
            cols[1].starts_with("\\\\x") && cols[1].len() == 3 + 32,
            "{}",
            cols[1]
        );
        assert_eq!(cols[2], "{\"a\": \"x\\\\\"y\"}");
        assert_eq!(cols[3], "\\N", "no problem");
    }

    #[test]
    fn bytes_that_are_not_utf8_and_oversized_records_become_problems() {
        let bad_value = check(
            row(Some(b"7"), b"{\"city\": \"Z\xfcrich\", \"id\": 7}"),
            100,
        );
        assert_eq!(bad_value.key.as_deref(), Some("7"));
        let problem = bad_value.payload.unwrap_err();
        assert!(
            problem.starts_with("field `city` is not valid UTF-8 (byte 0xFC)"),
            "{problem}"
        );

        let bad_key = check(row(Some(b"caf\xe9"), b"{}"), 100);
        assert_eq!(bad_key.key.as_deref(), Some("caf\u{fffd}"));
        assert!(
            bad_key
                .payload
                .unwrap_err()
                .contains("primary key is not valid UTF-8 (byte 0xE9 at position 3")
        );

        let big = check(row(Some(b"8"), &[b'x'; 101]), 100);
        assert!(
            big.payload
                .unwrap_err()
                .contains("take 101 bytes, over the sync's max_record_bytes (100)")
        );

        let mut buf = Vec::new();
        push_row(&mut buf, &check(row(Some(b"8"), &[b'x'; 101]), 100));
        let line = String::from_utf8(buf).unwrap();
        let cols: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(cols[2], "\\N", "no payload is stored");
        assert!(cols[3].contains("max_record_bytes"));
    }

    #[test]
    fn hash_depends_on_content_only() {
        assert_eq!(content_hash("{\"a\": 1}"), content_hash("{\"a\": 1}"));
        assert_ne!(content_hash("{\"a\": 1}"), content_hash("{\"a\": 2}"));
    }
}
