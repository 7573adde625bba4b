//! Lowercase hex, as Postgres prints `bytea` and as content hashes travel in
//! request bodies.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the hex digits of `bytes` to `buf`.
pub fn push_encoded(buf: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        buf.push(DIGITS[(byte >> 4) as usize]);
        buf.push(DIGITS[(byte & 0xf) as usize]);
    }
}

pub fn encode(bytes: &[u8]) -> String {
    let mut buf = Vec::with_capacity(bytes.len() * 2);
    push_encoded(&mut buf, bytes);
    // Only ASCII digits were pushed.
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_lowercase_pairs() {
        assert_eq!(super::encode(&[0x00, 0x9f, 0x2c, 0xff]), "009f2cff");
        assert_eq!(super::encode(&[]), "");
    }
}
