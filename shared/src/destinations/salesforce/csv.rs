//! The CSV dialect of Bulk API 2.0 (RFC 4180: comma, LF line endings,
//! fields quoted when they hold a comma, quote or line break; `#N/A` sets a
//! field to null).

use serde_json::Value;

/// Renders rows of JSON values under `columns`. A record without a column
/// (`None`: an update that leaves that field alone) gets an empty cell,
/// which Bulk API 2.0 leaves unchanged; a `null` value clears the field
/// (`#N/A`).
pub fn write(columns: &[String], rows: &[Vec<Option<&Value>>]) -> String {
    let mut out = String::new();
    push_row(&mut out, columns.iter().map(String::as_str));
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .map(|v| v.map(cell).unwrap_or_default())
            .collect();
        push_row(&mut out, cells.iter().map(String::as_str));
    }
    out
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "#N/A".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn push_row<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(cell);
        }
    }
    out.push('\n');
}

/// Parses CSV text into rows of cells; the first row is the header.
pub fn parse(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_a_record_leaves_alone_is_an_empty_cell_and_null_clears() {
        let columns = vec!["Id".to_owned(), "Plan__c".to_owned(), "Phone".to_owned()];
        let (id, plan, null) = (json!("003x"), json!("pro"), json!(null));
        let text = write(
            &columns,
            &[
                vec![Some(&id), Some(&plan), None],
                vec![Some(&id), None, Some(&null)],
            ],
        );
        assert_eq!(text, "Id,Plan__c,Phone\n003x,pro,\n003x,,#N/A\n");
    }

    #[test]
    fn round_trips_quotes_commas_line_breaks_and_nulls() {
        let values = [
            json!("O\"Brien, Ann"),
            json!("two\nlines"),
            json!(12.5),
            json!(null),
        ];
        let columns = vec![
            "A".to_owned(),
            "B".to_owned(),
            "C".to_owned(),
            "D".to_owned(),
        ];
        let text = write(&columns, &[values.iter().map(Some).collect()]);
        assert_eq!(
            text,
            "A,B,C,D\n\"O\"\"Brien, Ann\",\"two\nlines\",12.5,#N/A\n"
        );
        let rows = parse(&text);
        assert_eq!(rows[1], vec!["O\"Brien, Ann", "two\nlines", "12.5", "#N/A"]);
        assert_eq!(
            parse(
                "\"sf__Id\",\"sf__Error\"\r\n\"\",\"REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --\"\r\n"
            )[1][1],
            "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --"
        );
    }
}
