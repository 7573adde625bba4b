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

/// The `N` bytes that `hex` (exactly `2 * N` digits, either case) encodes,
/// or `None`.
pub fn decode_array<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_lowercase_pairs() {
        assert_eq!(super::encode(&[0x00, 0x9f, 0x2c, 0xff]), "009f2cff");
        assert_eq!(super::encode(&[]), "");
    }

    #[test]
    fn decodes_exact_lengths_only() {
        assert_eq!(
            super::decode_array::<4>(b"009F2cff"),
            Some([0x00, 0x9f, 0x2c, 0xff])
        );
        assert_eq!(super::decode_array::<4>(b"009f2c"), None);
        assert_eq!(super::decode_array::<2>(b"0g00"), None);
    }
}
