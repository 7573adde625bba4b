//! `COPY … (FORMAT binary)`: each value as the bytes of its type's binary
//! form, with its length in front. Where the text format spells `bytea` in
//! hex and escapes text, the binary format carries both as they are: the
//! state database neither encodes nor parses them.
//!
//! The layout (PostgreSQL documentation, "COPY", "Binary Format"): an
//! 11-byte signature, a 32-bit flags word and a header extension of a given
//! length; then per row a 16-bit field count, and per field a 32-bit length
//! (−1 for NULL) and that many bytes; then −1 as a 16-bit word. Integers are
//! big-endian.

use crate::field_buffer::FieldBuffer;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags, header extension length.
const HEADER_LEN: usize = SIGNATURE.len() + 4 + 4;

/// Appends the header every binary COPY starts with.
pub fn push_header(out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
}

/// Appends the trailer that ends a binary COPY.
pub fn push_trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Starts a row of `fields` fields; each is then appended by one of the
/// functions below, in the table's column order.
pub fn push_row(out: &mut Vec<u8>, fields: i16) {
    out.extend_from_slice(&fields.to_be_bytes());
}

pub fn push_null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

pub fn push_int4(out: &mut Vec<u8>, value: i32) {
    out.extend_from_slice(&4i32.to_be_bytes());
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn push_int8(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&value.to_be_bytes());
}

/// A `text` (UTF-8, as the server's encoding) or `bytea` value.
pub fn push_bytes(out: &mut Vec<u8>, value: &[u8]) {
    // A field longer than 2 GiB cannot be stored by Postgres at all; its
    // length is written as the server will refuse it.
    let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// What in a binary COPY's bytes is not as the format has it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the COPY data does not start with the binary COPY signature")]
    Signature,
    #[error("a row has {0} fields, fewer than none")]
    FieldCount(i16),
    #[error("a field's length is {0}")]
    FieldLength(i32),
    #[error("bytes after the COPY data's trailer")]
    AfterTrailer,
}

/// Splits the chunks a binary `COPY … TO STDOUT` sends into rows, however
/// the chunks fall.
#[derive(Debug, Default)]
pub struct Rows {
    /// Bytes of an unfinished header or row, kept until the rest comes.
    partial: Vec<u8>,
    header_read: bool,
    ended: bool,
    fields: FieldBuffer,
}

impl Rows {
    /// Calls `row` with the fields of each row `chunk` completes (`None`
    /// for NULL).
    pub fn push(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(&[Option<&[u8]>]),
    ) -> Result<(), FormatError> {
        if self.partial.is_empty() {
            let used = self.read(chunk, &mut row)?;
            self.partial.extend_from_slice(&chunk[used..]);
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(chunk);
            let used = self.read(&joined, &mut row)?;
            joined.drain(..used);
            self.partial = joined;
        }
        Ok(())
    }

    /// The stream ended cut: before the trailer, or in a row.
    pub fn unfinished(&self) -> bool {
        !self.ended
    }

    /// Reads the header and every whole row of `data`; returns how many
    /// bytes that took.
    fn read(
        &mut self,
        data: &[u8],
        row: &mut impl FnMut(&[Option<&[u8]>]),
    ) -> Result<usize, FormatError> {
        let mut fields = self.fields.take();
        let read = self.read_rows(data, row, &mut fields);
        self.fields.keep(fields);
        read
    }

    fn read_rows<'d>(
        &mut self,
        data: &'d [u8],
        row: &mut impl FnMut(&[Option<&[u8]>]),
        fields: &mut Vec<Option<&'d [u8]>>,
    ) -> Result<usize, FormatError> {
        let mut at = 0;
        if !self.header_read {
            let Some(extension) = data.get(HEADER_LEN - 4..HEADER_LEN) else {
                return Ok(0);
            };
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err(FormatError::Signature);
            }
            let extension = be_i32(extension);
            let Ok(extension) = usize::try_from(extension) else {
                return Err(FormatError::FieldLength(extension));
            };
            if data.len() < HEADER_LEN + extension {
                return Ok(0);
            }
            at = HEADER_LEN + extension;
            self.header_read = true;
        }
        while at < data.len() {
            if self.ended {
                return Err(FormatError::AfterTrailer);
            }
            let Some(count) = data.get(at..at + 2).map(be_i16) else {
                break;
            };
            if count == -1 {
                self.ended = true;
                at += 2;
                continue;
            }
            let Ok(count) = usize::try_from(count) else {
                return Err(FormatError::FieldCount(count));
            };
            let Some(end) = row_end(data, at + 2, count, fields)? else {
                break;
            };
            row(fields);
            at = end;
        }
        Ok(at)
    }
}

/// Reads `count` fields from `at` into `fields`; the end of the row, or
/// `None` when `data` stops before it.
fn row_end<'d>(
    data: &'d [u8],
    mut at: usize,
    count: usize,
    fields: &mut Vec<Option<&'d [u8]>>,
) -> Result<Option<usize>, FormatError> {
    fields.clear();
    for _ in 0..count {
        let Some(len) = data.get(at..at + 4).map(be_i32) else {
            return Ok(None);
        };
        at += 4;
        if len == -1 {
            fields.push(None);
            continue;
        }
        let Ok(len) = usize::try_from(len) else {
            return Err(FormatError::FieldLength(len));
        };
        let Some(value) = data.get(at..at + len) else {
            return Ok(None);
        };
        fields.push(Some(value));
        at += len;
    }
    Ok(Some(at))
}

/// The elements of a one-dimensional array in binary form (`array_send`):
/// `None` when the bytes are not one (or it has more dimensions).
pub fn array_elements(value: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let dimensions = be_i32(value.get(0..4)?);
    // Flags (has NULLs) and the element type come next.
    let mut at = 12;
    if dimensions == 0 {
        return (value.len() == at).then(Vec::new);
    }
    if dimensions != 1 {
        return None;
    }
    let len = usize::try_from(be_i32(value.get(at..at + 4)?)).ok()?;
    // The lower bound.
    at += 8;
    let mut elements = Vec::with_capacity(len);
    for _ in 0..len {
        let element_len = be_i32(value.get(at..at + 4)?);
        at += 4;
        if element_len == -1 {
            elements.push(None);
            continue;
        }
        let element_len = usize::try_from(element_len).ok()?;
        elements.push(Some(value.get(at..at + element_len)?));
        at += element_len;
    }
    (at == value.len()).then_some(elements)
}

fn be_i16(bytes: &[u8]) -> i16 {
    i16::from_be_bytes([bytes[0], bytes[1]])
}

fn be_i32(bytes: &[u8]) -> i32 {
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's fields as owned bytes.
    type Row = Vec<Option<Vec<u8>>>;

    /// Two rows as `push_*` write them, and what they stand for.
    fn sample() -> (Vec<u8>, Vec<Row>) {
        let mut out = Vec::new();
        push_header(&mut out);
        push_row(&mut out, 3);
        push_int8(&mut out, -2);
        push_bytes(&mut out, "ké\ty\n".as_bytes());
        push_null(&mut out);
        push_row(&mut out, 2);
        push_int4(&mut out, 7);
        push_bytes(&mut out, b"");
        push_trailer(&mut out);
        let rows = vec![
            vec![
                Some((-2i64).to_be_bytes().to_vec()),
                Some("ké\ty\n".as_bytes().to_vec()),
                None,
            ],
            vec![Some(7i32.to_be_bytes().to_vec()), Some(Vec::new())],
        ];
        (out, rows)
    }

    fn read_in_chunks(data: &[u8], sizes: &[usize]) -> (Rows, Vec<Row>) {
        let mut rows = Rows::default();
        let mut got = Vec::new();
        let mut rest = data;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let take = (*sizes.next().unwrap_or(&1)).min(rest.len());
            let (chunk, after) = rest.split_at(take);
            rows.push(chunk, |fields| {
                got.push(fields.iter().map(|f| f.map(<[u8]>::to_vec)).collect());
            })
            .expect("valid COPY data");
            rest = after;
        }
        (rows, got)
    }

    #[test]
    fn rows_come_out_whole_however_the_chunks_fall() {
        let (data, expected) = sample();
        for split in 1..data.len() {
            let (rows, got) = read_in_chunks(&data, &[split, data.len()]);
            assert_eq!(got, expected, "first chunk of {split} bytes");
            assert!(!rows.unfinished());
        }
        let (rows, got) = read_in_chunks(&data, &[1]);
        assert_eq!(got, expected, "byte by byte");
        assert!(!rows.unfinished());
    }

    #[test]
    fn a_stream_cut_before_its_trailer_is_unfinished() {
        let (data, expected) = sample();
        let (rows, got) = read_in_chunks(&data[..data.len() - 2], &[data.len()]);
        assert_eq!(got, expected);
        assert!(rows.unfinished());
        let (rows, got) = read_in_chunks(&data[..data.len() - 3], &[data.len()]);
        assert_eq!(got.len(), 1, "the second row is cut");
        assert!(rows.unfinished());
    }

    #[test]
    fn bad_data_is_refused() {
        let mut rows = Rows::default();
        assert_eq!(
            rows.push(b"PGCOPY\n\xff\r\n\x01\0\0\0\0\0\0\0\0", |_| {}),
            Err(FormatError::Signature)
        );
        let (mut data, _) = sample();
        data.extend_from_slice(&0i16.to_be_bytes());
        assert_eq!(
            Rows::default().push(&data, |_| {}),
            Err(FormatError::AfterTrailer)
        );
        let mut data = Vec::new();
        push_header(&mut data);
        push_row(&mut data, 1);
        data.extend_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            Rows::default().push(&data, |_| {}),
            Err(FormatError::FieldLength(-5))
        );
    }

    #[test]
    fn arrays_give_their_elements() {
        // As `array_send` writes `'{"\\x0102",NULL}'::bytea[]`: one
        // dimension, has NULLs, element type bytea (17), length 2, lower
        // bound 1.
        let mut value = Vec::new();
        for word in [1i32, 1, 17, 2, 1, 2] {
            value.extend_from_slice(&word.to_be_bytes());
        }
        value.extend_from_slice(&[1, 2]);
        value.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            array_elements(&value),
            Some(vec![Some(&[1u8, 2][..]), None])
        );
        let mut empty = Vec::new();
        for word in [0i32, 0, 17] {
            empty.extend_from_slice(&word.to_be_bytes());
        }
        assert_eq!(array_elements(&empty), Some(Vec::new()));
        assert_eq!(array_elements(&value[..value.len() - 1]), None);
        let mut two_dimensions = value.clone();
        two_dimensions[3] = 2;
        assert_eq!(array_elements(&two_dimensions), None);
    }
}
