//! Reading delivered rows back for `ebb verify`: each record's row by its
//! key (typed through the table's row type, as deletes are), and every
//! key of the table for the extras of a mirror sync.

use serde_json::{Map, Value};
use sqlx::PgPool;

use super::TableName;
use crate::destinations::destination::ReadBack;
use crate::destinations::record::OutboundRecord;
use crate::destinations::util::verify::as_text;
use crate::sql::quote_ident;

pub async fn rows(
    pool: &PgPool,
    table: &TableName,
    key_column: &str,
    records: &[OutboundRecord],
) -> ReadBack {
    let keys: Vec<Value> = records
        .iter()
        .map(|r| serde_json::json!({ key_column: r.key }))
        .collect();
    let table_sql = table.quoted();
    let key = quote_ident(key_column);
    let found: Vec<(Value,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT to_jsonb(t) FROM {table_sql} AS t \
         JOIN json_populate_recordset(NULL::{table_sql}, $1::json) AS d ON t.{key} = d.{key}"
    )))
    .bind(Value::Array(keys).to_string())
    .fetch_all(pool)
    .await
    .map_err(|e| format!("reading rows of {table} back: {e}"))?;
    let mut by_key: std::collections::HashMap<String, Map<String, Value>> = found
        .into_iter()
        .filter_map(|(row,)| match row {
            Value::Object(row) => Some((as_text(row.get(key_column)?), row)),
            _ => None,
        })
        .collect();
    Ok(records.iter().map(|r| by_key.remove(&r.key)).collect())
}

pub async fn keys(
    pool: &PgPool,
    table: &TableName,
    key_column: &str,
) -> Result<Vec<String>, String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {}::text FROM {}",
        quote_ident(key_column),
        table.quoted()
    )))
    .fetch_all(pool)
    .await
    .map_err(|e| format!("listing the keys of {table}: {e}"))
}
