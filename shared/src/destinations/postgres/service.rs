//! Applying a chunk in one transaction and classifying Postgres errors by
//! SQLSTATE class: 22 (data), 23 (integrity) and 54 (a program limit, such
//! as a value too large for its index) reject the content, so splitting
//! finds the record at fault; 08, 40, 53, 55 and 57 are transient; anything
//! else (42: missing table or column, 28: bad credentials…) is fatal for the
//! batch.

use std::sync::atomic::Ordering;

use sqlx::PgPool;

use super::statements;
use super::{SyncColumns, TableName};
use crate::destinations::record::{Op, OutboundRecord};
use crate::destinations::util::outcome::Attempt;

/// Writes the records in one transaction; `new_keys_only` (see
/// `BatchContext`) tries a plain insert of the upserts first.
pub async fn apply(
    pool: &PgPool,
    table: &TableName,
    columns: &SyncColumns,
    new_keys_only: bool,
    records: &[OutboundRecord],
) -> Attempt {
    match try_apply(pool, table, columns, new_keys_only, records).await {
        Ok(()) => Attempt::Delivered,
        Err(e) => classify(&e, table),
    }
}

async fn try_apply(
    pool: &PgPool,
    table: &TableName,
    columns: &SyncColumns,
    new_keys_only: bool,
    records: &[OutboundRecord],
) -> Result<(), sqlx::Error> {
    let key_column = columns.key.as_str();
    let upserts: Vec<&OutboundRecord> = records.iter().filter(|r| r.op == Op::Upsert).collect();
    let deletes: Vec<&OutboundRecord> = records.iter().filter(|r| r.op == Op::Delete).collect();
    let mut tx = pool.begin().await?;
    if let Some(first) = upserts.first() {
        let field_columns = field_names(first);
        let mut rows = String::from("[");
        for (i, r) in upserts.iter().enumerate() {
            if i > 0 {
                rows.push(',');
            }
            rows.push_str(r.fields.as_ref().map(|f| f.get()).unwrap_or("{}"));
        }
        rows.push(']');
        // A row already there (a crashed delivery's) turns the batch back
        // into the upsert.
        let inserted = new_keys_only
            && columns.upsert_proven.load(Ordering::Relaxed)
            && crate::db::insert_unless_duplicate(
                &mut tx,
                sqlx::query(sqlx::AssertSqlSafe(statements::insert(
                    table,
                    &field_columns,
                )))
                .bind(rows.as_str()),
            )
            .await?;
        if !inserted {
            sqlx::query(sqlx::AssertSqlSafe(statements::upsert(
                table,
                key_column,
                &field_columns,
                &columns.on_create_only,
            )))
            .bind(rows)
            .execute(&mut *tx)
            .await?;
            columns.upsert_proven.store(true, Ordering::Relaxed);
        }
    }
    if !deletes.is_empty() {
        let keys: Vec<serde_json::Value> = deletes
            .iter()
            .map(|r| serde_json::json!({ key_column: r.key }))
            .collect();
        sqlx::query(sqlx::AssertSqlSafe(statements::delete(table, key_column)))
            .bind(serde_json::Value::Array(keys).to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Every record of a sync carries the same mapped fields, so the first one
/// names the columns.
fn field_names(record: &OutboundRecord) -> Vec<String> {
    record
        .fields
        .as_ref()
        .and_then(|f| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(f.get()).ok()
        })
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn classify(error: &sqlx::Error, table: &TableName) -> Attempt {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let detail = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.detail())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let message = format!("{}{detail} [SQLSTATE {code}]", db.message());
            match code.get(..2).unwrap_or("") {
                "22" | "23" | "54" => Attempt::Rejected(message),
                "08" | "40" | "53" | "55" | "57" => Attempt::Transient {
                    message,
                    retry_after: None,
                },
                "42" if code == "42P10" => Attempt::Fatal(format!(
                    "table {table} needs a unique index or primary key on the mapped key column to upsert: {message}"
                )),
                _ => Attempt::Fatal(format!("table {table}: {message}")),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Attempt::Transient {
            message: format!("destination database unavailable: {error}"),
            retry_after: None,
        },
        other => Attempt::Fatal(format!("table {table}: {other}")),
    }
}
