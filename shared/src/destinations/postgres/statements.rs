//! SQL for the `postgres` destination. Rows travel as one JSON array bound
//! as a parameter and are typed by `json_populate_recordset` against the
//! table's own row type; identifiers are quoted. The `json` form, not
//! `jsonb`: payloads are already in jsonb's text form, and converting the
//! array to jsonb first cost a quarter of the upsert's time.

use super::TableName;
use crate::sql::quote_ident;

/// A plain `INSERT` of the given columns.
pub fn insert(table: &TableName, columns: &[String]) -> String {
    let table_sql = table.quoted();
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    format!(
        "INSERT INTO {table_sql} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{table_sql}, $1::json)",
        cols = cols.join(", "),
    )
}

/// `INSERT … ON CONFLICT (key) DO UPDATE` for the given columns; an update
/// leaves `on_create_only` columns as they are.
pub fn upsert(
    table: &TableName,
    key_column: &str,
    columns: &[String],
    on_create_only: &[String],
) -> String {
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| c.as_str() != key_column && !on_create_only.contains(c))
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
        .collect();
    let on_conflict = if updates.is_empty() {
        "DO NOTHING".to_owned()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    format!(
        "{} ON CONFLICT ({key}) {on_conflict}",
        insert(table, columns),
        key = quote_ident(key_column),
    )
}

/// `DELETE` by key; keys are typed through the table's row type too.
pub fn delete(table: &TableName, key_column: &str) -> String {
    let table_sql = table.quoted();
    let key = quote_ident(key_column);
    format!(
        "DELETE FROM {table_sql} AS t USING json_populate_recordset(NULL::{table_sql}, $1::json) AS d \
         WHERE t.{key} = d.{key}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_identifiers() {
        let table = TableName {
            schema: Some("public".into()),
            table: "cust\"omers".into(),
        };
        let sql = upsert(&table, "id", &["id".into(), "email".into()], &[]);
        assert!(
            sql.starts_with("INSERT INTO \"public\".\"cust\"\"omers\" (\"id\", \"email\")"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ON CONFLICT (\"id\") DO UPDATE SET \"email\" = EXCLUDED.\"email\""),
            "{sql}"
        );
        assert!(upsert(&table, "id", &["id".into()], &[]).ends_with("DO NOTHING"));
        let kept = upsert(
            &table,
            "id",
            &["id".into(), "email".into(), "source".into()],
            &["source".into()],
        );
        assert!(
            kept.ends_with("DO UPDATE SET \"email\" = EXCLUDED.\"email\""),
            "on_create_only columns are inserted, never updated: {kept}"
        );
        assert!(delete(&table, "id").contains("WHERE t.\"id\" = d.\"id\""));
    }
}
