//! Building SQL from names that come from config, safely.

/// Quotes a SQL identifier (`"` doubled), so model column and table names
/// from config can never inject SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
