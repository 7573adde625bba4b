//! Building SQL from names that come from config, safely.

/// Quotes a SQL identifier (`"` doubled), so model column and table names
/// from config can never inject SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for statements that take no parameters
/// (`COPY`): an escape-string literal, so it reads the same whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(super::quote_literal("a'b\\c"), "E'a\\'b\\\\c'");
    }
}
