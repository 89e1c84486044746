//! Lowercase hex encoding of keys, for Redis key names and logs.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lowercase hex of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

/// The lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]])
        .map(char::from)
        .collect()
}

/// Whether `s` is non-empty lowercase hex of even length, as [`encode`] writes it.
pub fn is_lower_hex(s: &[u8]) -> bool {
    s.len() % 2 == 0 && s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_lowercase() {
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let mut out = b"k:".to_vec();
        encode_into(&[0xde, 0xad], &mut out);
        assert_eq!(out, b"k:dead");
        assert!(is_lower_hex(b"00ff"));
        assert!(!is_lower_hex(b"0F"));
        assert!(!is_lower_hex(b"abc"));
    }
}
