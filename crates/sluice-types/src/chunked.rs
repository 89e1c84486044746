//! HTTP/1.1's chunked transfer coding, the lines of it that both of sluice's HTTP/1.1 sides
//! read (the server's request bodies, the upstream client's answers): where a chunk-size or
//! trailer line ends, and the size a chunk-size line gives. Errors are the reason, for the
//! caller's own error type.

/// Where the CRLF ending the line at the start of `buf` is; `None` while it has not arrived
/// within `limit` bytes; an error past them, or on a bare CR or LF inside the line (another
/// parser would end the line there: request smuggling through a lenient proxy; refused, as
/// hyper does).
pub fn line_end(buf: &[u8], limit: usize) -> Result<Option<usize>, &'static str> {
    let window = &buf[..buf.len().min(limit.saturating_add(2))];
    let bare = "a bare CR or LF in a chunk line";
    match memchr::memmem::find(window, b"\r\n") {
        Some(at) if window[..at].iter().any(|&b| b == b'\r' || b == b'\n') => Err(bare),
        Some(at) => Ok(Some(at)),
        None if memchr::memchr(b'\n', window).is_some() => Err(bare),
        None if buf.len() > limit => Err("a chunk-size or trailer line is too long"),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits (at most 15 after leading zeros: 60 bits), then optional whitespace and
/// `;extensions`.
pub fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("a chunk-size is not hexadecimal");
    }
    // Leading zeros do not count toward the 15 digits.
    let zeros = line[..digits - 1]
        .iter()
        .take_while(|&&b| b == b'0')
        .count();
    if digits - zeros > 15 {
        return Err("a chunk-size is too large");
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()..];
    if !(rest.is_empty() || rest[0] == b';') {
        return Err("a chunk-size line has junk after the size");
    }
    Ok(line[..digits].iter().fold(0u64, |n, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        (n << 4) | u64::from(digit)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Ok(26));
        assert_eq!(chunk_size(b"FF ; name=value"), Ok(255));
        assert_eq!(chunk_size(b"fffffffffffffff"), Ok((1 << 60) - 1));
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert!(chunk_size(b"1000000000000000").is_err(), "16 digits");
        assert_eq!(chunk_size(b"0000000000000010"), Ok(16), "leading zeros");
        assert_eq!(chunk_size(b"0"), Ok(0));
        assert_eq!(chunk_size(b"000"), Ok(0));
        assert!(chunk_size(b"1x").is_err());
    }

    #[test]
    fn line_ends() {
        assert_eq!(line_end(b"1a\r\nxyz", 10), Ok(Some(2)));
        assert_eq!(line_end(b"1a", 10), Ok(None), "not arrived yet");
        assert_eq!(line_end(b"1a\r", 10), Ok(None), "CR, LF still to come");
        assert!(line_end(b"1\na\r\n", 10).is_err(), "bare LF");
        assert!(line_end(b"1\ra\r\n", 10).is_err(), "bare CR");
        assert!(line_end(b"123456", 4).is_err(), "too long");
        assert_eq!(line_end(b"1234\r\n", 4), Ok(Some(4)), "at the limit");
    }
}
