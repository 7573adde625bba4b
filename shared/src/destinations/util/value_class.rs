//! Whether a warehouse column's type can fill a destination field, for
//! `ebb check --connect`: a type mismatch is a config error before any data
//! moves. Text columns may fill any field (their values are checked per
//! record); typed columns must fit the field's kind.

/// What a destination field holds, across vendors' type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueClass {
    Text,
    Number,
    Bool,
    Date,
    DateTime,
}

/// Why a column of type `column_type` (a Postgres or MySQL type name)
/// cannot fill a field of `class`, or None when it can.
pub fn mismatch(class: ValueClass, column_type: &str) -> Option<String> {
    let column = column_type.to_ascii_uppercase();
    let column_class = match column.as_str() {
        // Postgres's names, then MySQL's.
        "INT2" | "INT4" | "INT8" | "FLOAT4" | "FLOAT8" | "NUMERIC" | "MONEY" | "TINYINT"
        | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "FLOAT" | "DOUBLE" | "DECIMAL" | "YEAR" => {
            Some(ValueClass::Number)
        }
        unsigned if unsigned.ends_with(" UNSIGNED") => Some(ValueClass::Number),
        "BOOL" | "BOOLEAN" => Some(ValueClass::Bool),
        "DATE" => Some(ValueClass::Date),
        "TIMESTAMP" | "TIMESTAMPTZ" | "DATETIME" => Some(ValueClass::DateTime),
        "JSON" | "JSONB" => {
            return Some(format!(
                "a {column} column holds JSON documents; the field takes a single value"
            ));
        }
        array if array.starts_with('_') || array.ends_with("[]") => {
            return Some(format!(
                "an array column ({column}) cannot fill a single-value field"
            ));
        }
        _ => None,
    };
    let column_class = column_class?;
    let fits = match class {
        ValueClass::Text => true,
        ValueClass::DateTime => matches!(column_class, ValueClass::DateTime | ValueClass::Date),
        other => other == column_class,
    };
    (!fits).then(|| format!("a {column} column cannot fill a {} field", describe(class)))
}

/// Problems with filling destination fields from typed model columns:
/// `columns` pairs each mapped field with its column's Postgres type;
/// `class_of` gives a field's class (None: unknown, reported elsewhere).
pub fn column_problems(
    columns: &[(&str, &str)],
    class_of: impl Fn(&str) -> Option<ValueClass>,
) -> Vec<String> {
    columns
        .iter()
        .filter_map(|(field, column_type)| {
            let why = mismatch(class_of(field)?, column_type)?;
            Some(format!("`{field}`: {why}"))
        })
        .collect()
}

fn describe(class: ValueClass) -> &'static str {
    match class {
        ValueClass::Text => "text",
        ValueClass::Number => "number",
        ValueClass::Bool => "boolean",
        ValueClass::Date => "date",
        ValueClass::DateTime => "datetime",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_columns_must_fit_and_text_fits_everything() {
        assert_eq!(mismatch(ValueClass::Number, "INT8"), None);
        assert_eq!(mismatch(ValueClass::Number, "TEXT"), None);
        assert_eq!(mismatch(ValueClass::Text, "NUMERIC"), None);
        assert_eq!(mismatch(ValueClass::DateTime, "DATE"), None);
        assert_eq!(
            mismatch(ValueClass::Number, "BOOL").as_deref(),
            Some("a BOOL column cannot fill a number field")
        );
        assert!(mismatch(ValueClass::Date, "TIMESTAMPTZ").is_some());
        assert!(mismatch(ValueClass::Text, "JSONB").is_some());
        assert!(mismatch(ValueClass::Text, "_TEXT").is_some());
    }
}
