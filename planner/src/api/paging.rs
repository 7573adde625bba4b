//! Cursor paging: a list answers a page of items and, when there are more,
//! the cursor of the next page (pass it back as `cursor`).

use serde::Serialize;

use super::problem::Problem;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; none on the last page.
    pub next_cursor: Option<String>,
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// `limit`, checked.
pub fn limit(limit: Option<i64>) -> Result<i64, Problem> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Problem::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
    }
}

/// A numeric cursor, checked.
pub fn id_cursor(cursor: Option<&str>) -> Result<Option<i64>, Problem> {
    cursor
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| Problem::bad_request(format!("`{c}` is not a cursor this list gave")))
        })
        .transpose()
}

/// A page of `items` fetched with `limit + 1`: the extra item says there is
/// a next page, whose cursor `cursor_of` makes from the page's last item.
pub fn page<T>(mut items: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// Postgres text cannot hold NUL, so nothing Ebb stores contains one: a
/// filter that does matches nothing (`None`).
pub fn stored_text(filter: Option<&str>) -> Option<Option<&str>> {
    match filter {
        Some(text) if text.contains('\0') => None,
        other => Some(other),
    }
}

/// A key cursor with NUL cut off: no stored key contains NUL, so the keys
/// after `abc\0…` are the keys after `abc`.
pub fn key_cursor(cursor: Option<&str>) -> Option<&str> {
    cursor.map(|c| c.split('\0').next().unwrap_or_default())
}
