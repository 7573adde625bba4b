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

/// Each byte's value as a hex digit (either case), or `NOT_A_DIGIT`.
const DIGIT_VALUES: [u8; 256] = {
    let mut values = [NOT_A_DIGIT; 256];
    let mut i = 0;
    while i < 16 {
        values[DIGITS[i] as usize] = i as u8;
        values[DIGITS[i].to_ascii_uppercase() as usize] = i as u8;
        i += 1;
    }
    values
};
const NOT_A_DIGIT: u8 = 0xff;

/// The `N` bytes that `hex` (exactly `2 * N` digits, either case) encodes,
/// or `None`. By table: the planner decodes a content hash per ledger row,
/// and a branch per digit was 8% of its CPU in a no-change re-sync.
pub fn decode_array<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (
            DIGIT_VALUES[pair[0] as usize],
            DIGIT_VALUES[pair[1] as usize],
        );
        if high > 0xf || low > 0xf {
            return None;
        }
        *byte = (high << 4) | low;
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
        assert_eq!(super::decode_array::<1>(b"/0"), None, "the byte before '0'");
        assert_eq!(super::decode_array::<1>(b"0:"), None, "the byte after '9'");
        assert_eq!(super::decode_array::<1>(b"G0"), None);
        assert_eq!(super::decode_array::<1>(&[0xff, b'0']), None);
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(
            super::decode_array::<256>(super::encode(&every_byte).as_bytes()).map(|b| b.to_vec()),
            Some(every_byte)
        );
    }
}
