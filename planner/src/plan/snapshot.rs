//! Streams a model into a temp table of Ebb's state database with COPY,
//! hashing each mapped record on the way. The table lives only for the
//! planning transaction.

use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlx::{PgConnection, PgPool};

use crate::error::PlannerError;
use crate::source::postgres::{PostgresSource, SourceRow};
use ebb_shared::StateError;
use ebb_shared::config::{FieldMapping, SyncConfig};

/// COPY data is sent in chunks of about this size.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// The content hash of a mapped record: BLAKE3 over the canonical jsonb text,
/// truncated to 128 bits.
pub fn content_hash(payload: &str) -> [u8; 16] {
    let digest = blake3::hash(payload.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.as_bytes()[..16]);
    out
}

/// Appends `value` to COPY text-format data, escaping what COPY treats specially.
fn push_copy_text(buf: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            _ => buf.push(b),
        }
    }
}

fn push_row(buf: &mut Vec<u8>, row: &SourceRow) {
    match &row.key {
        Some(key) => push_copy_text(buf, key),
        None => buf.extend_from_slice(b"\\N"),
    }
    buf.extend_from_slice(b"\t\\\\x");
    ebb_shared::hex::push_encoded(buf, &content_hash(&row.payload));
    buf.push(b'\t');
    push_copy_text(buf, &row.payload);
    buf.push(b'\n');
}

/// Creates `ebb_snapshot` (dropped at commit) on `conn` and fills it from the
/// source. Returns the number of rows read. `heartbeat` keeps the planning
/// run alive during long snapshots.
pub async fn snapshot(
    conn: &mut PgConnection,
    source: &PostgresSource,
    sync: &SyncConfig,
    mapping: &[FieldMapping],
    heartbeat: Option<(&PgPool, i64)>,
) -> Result<u64, PlannerError> {
    sqlx::query(
        "CREATE TEMP TABLE ebb_snapshot (record_key TEXT, content_hash BYTEA NOT NULL, payload JSONB NOT NULL) \
         ON COMMIT DROP",
    )
    .execute(&mut *conn)
    .await
    .map_err(StateError::query("creating the snapshot table"))?;

    let mut copy = conn
        .copy_in_raw("COPY ebb_snapshot (record_key, content_hash, payload) FROM STDIN")
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
                return Err(PlannerError::SourceRead {
                    sync: sync.name.clone(),
                    source_name: source.name().to_owned(),
                    rows: count,
                    message: e.to_string(),
                });
            }
        };
        push_row(&mut buf, &row);
        count += 1;
        if buf.len() >= COPY_CHUNK_BYTES {
            copy.send(buf.as_slice())
                .await
                .map_err(StateError::query("writing the snapshot"))?;
            buf.clear();
            if let Some((pool, run_id)) = heartbeat
                && last_beat.elapsed() > Duration::from_secs(30)
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

    #[test]
    fn copy_escaping_covers_special_bytes() {
        let mut buf = Vec::new();
        push_copy_text(&mut buf, "a\\b\tc\nd\re");
        assert_eq!(buf, b"a\\\\b\\tc\\nd\\re");
    }

    #[test]
    fn rows_render_null_keys_and_hex_hashes() {
        let mut buf = Vec::new();
        push_row(
            &mut buf,
            &SourceRow {
                key: None,
                payload: "{\"a\": \"x\\\"y\"}".into(),
            },
        );
        let line = String::from_utf8(buf).unwrap();
        let cols: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(cols[0], "\\N");
        assert!(
            cols[1].starts_with("\\\\x") && cols[1].len() == 3 + 32,
            "{}",
            cols[1]
        );
        assert_eq!(cols[2], "{\"a\": \"x\\\\\"y\"}");
    }

    #[test]
    fn hash_depends_on_content_only() {
        assert_eq!(content_hash("{\"a\": 1}"), content_hash("{\"a\": 1}"));
        assert_ne!(content_hash("{\"a\": 1}"), content_hash("{\"a\": 2}"));
    }
}
