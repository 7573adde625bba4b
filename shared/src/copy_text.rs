//! `COPY`'s text format, read (`COPY … TO STDOUT`) and written (`COPY …
//! FROM STDIN`): rows end with a newline,
//! fields are separated by tabs, `\N` is NULL, and a backslash escapes the
//! bytes that would otherwise be read as structure. Escaped newlines and
//! tabs are the only ones inside a row, so a raw `\n` always ends one,
//! whatever the encoding (UTF-8 and SQL_ASCII bytes alike).

/// Splits the chunks COPY sends into whole rows, however the chunks fall.
#[derive(Debug, Default)]
pub struct Rows {
    /// The start of a row whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Rows {
    /// Calls `row` with each row `chunk` completes (without its newline).
    pub fn push(&mut self, chunk: &[u8], mut row: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                row(&rest[..end]);
            } else {
                self.partial.extend_from_slice(&rest[..end]);
                row(&self.partial);
                self.partial.clear();
            }
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// Bytes after the last newline: a stream that ends with some was cut.
    pub fn unfinished(&self) -> bool {
        !self.partial.is_empty()
    }
}

/// A row's fields, still escaped; `None` for `\N`.
pub fn fields(row: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    row.split(|&b| b == b'\t')
        .map(|field| (field != b"\\N").then_some(field))
}

/// The bytes a field stands for. Borrows when there is nothing to undo.
pub fn unescape<'a>(field: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    if !field.contains(&b'\\') {
        return field;
    }
    scratch.clear();
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            scratch.push(b);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => scratch.push(0x08),
            b'f' => scratch.push(0x0c),
            b'n' => scratch.push(b'\n'),
            b'r' => scratch.push(b'\r'),
            b't' => scratch.push(b'\t'),
            b'v' => scratch.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                let mut taken = 0;
                while taken < 2 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    value = value * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    taken += 1;
                }
                scratch.push(value as u8);
            }
            b'x' if i < field.len() && field[i].is_ascii_hexdigit() => {
                let mut value = 0u32;
                let mut taken = 0;
                while taken < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    value = value * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    taken += 1;
                }
                scratch.push(value as u8);
            }
            other => scratch.push(other),
        }
    }
    scratch
}

/// Appends `value` as a field, escaping what COPY reads as structure.
pub fn push_escaped(buf: &mut Vec<u8>, value: &str) {
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

/// Appends `bytes` as a `bytea` field (hex format, its backslash escaped).
pub fn push_bytea(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(b"\\\\x");
    crate::hex::push_encoded(buf, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_escapes_special_bytes_and_bytea_its_backslash() {
        let mut buf = Vec::new();
        push_escaped(&mut buf, "a\\b\tc\nd\re");
        assert_eq!(buf, b"a\\\\b\\tc\\nd\\re");
        let mut buf = Vec::new();
        push_bytea(&mut buf, &[0x00, 0xab]);
        assert_eq!(buf, b"\\\\x00ab");
        let mut scratch = Vec::new();
        assert_eq!(
            unescape(&buf, &mut scratch),
            b"\\x00ab",
            "read back as bytea text"
        );
    }

    #[test]
    fn rows_are_whole_however_the_chunks_fall() {
        let data = b"1\ta\n22\tbb\n333\t\\N\n";
        for cut in 0..data.len() {
            let mut rows = Rows::default();
            let mut seen: Vec<Vec<u8>> = Vec::new();
            for chunk in [&data[..cut], &data[cut..]] {
                rows.push(chunk, |row| seen.push(row.to_vec()));
            }
            assert!(!rows.unfinished());
            assert_eq!(
                seen,
                vec![b"1\ta".to_vec(), b"22\tbb".to_vec(), b"333\t\\N".to_vec()],
                "cut at {cut}"
            );
        }
        let mut rows = Rows::default();
        rows.push(b"1\ta\n2\t", |_| {});
        assert!(rows.unfinished());
    }

    #[test]
    fn null_is_only_the_bare_marker() {
        let got: Vec<Option<&[u8]>> = fields(b"\\N\t\t\\\\N\tx").collect();
        assert_eq!(
            got,
            vec![None, Some(&b""[..]), Some(&b"\\\\N"[..]), Some(&b"x"[..])]
        );
    }

    #[test]
    fn escapes_are_undone() {
        let mut scratch = Vec::new();
        assert_eq!(unescape(b"plain", &mut scratch), b"plain");
        assert_eq!(
            unescape(b"a\\\\b\\tc\\nd\\re\\bf\\fg\\vh", &mut scratch),
            b"a\\b\tc\nd\re\x08f\x0cg\x0bh"
        );
        assert_eq!(
            unescape(b"\\101\\7\\x41\\x4g\\q", &mut scratch),
            b"A\x07A\x04gq"
        );
        assert_eq!(unescape(b"end\\", &mut scratch), b"end\\");
        assert_eq!(unescape(b"caf\xe9", &mut scratch), b"caf\xe9");
    }
}
