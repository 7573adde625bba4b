//! [`FieldBuffer`]: the allocation of a row's list of fields, kept from one
//! row to the next. COPY sends a message per row, so a list allocated per
//! call was one allocation (and one free) per row read.

/// An empty `Vec` of borrowed fields, kept without any borrow.
#[derive(Debug, Default)]
pub struct FieldBuffer(Vec<Option<&'static [u8]>>);

impl FieldBuffer {
    /// The kept allocation, empty, to fill with fields of one row.
    pub fn take<'a>(&mut self) -> Vec<Option<&'a [u8]>> {
        recycle(std::mem::take(&mut self.0))
    }

    /// Keeps `fields`' allocation for the next [`FieldBuffer::take`].
    pub fn keep(&mut self, fields: Vec<Option<&[u8]>>) {
        self.0 = recycle(fields);
    }
}

/// `fields`, emptied, as a `Vec` of another lifetime: collecting an
/// emptied `Vec` into one of the same layout reuses its allocation.
fn recycle<'a>(mut fields: Vec<Option<&[u8]>>) -> Vec<Option<&'a [u8]>> {
    fields.clear();
    fields.into_iter().map(|_| None).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocation_is_reused_and_comes_back_empty() {
        let mut buffer = FieldBuffer::default();
        let row = b"a\tb".to_vec();
        let mut fields = buffer.take();
        fields.extend(row.split(|&b| b == b'\t').map(Some));
        let (capacity, at) = (fields.capacity(), fields.as_ptr() as usize);
        buffer.keep(fields);
        drop(row);
        let again = buffer.take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        assert_eq!(again.as_ptr() as usize, at, "the same allocation");
    }
}
