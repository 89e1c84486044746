//! W3C Trace Context: trace and span ids, and the `traceparent` header read from clients
//! and written on upstream requests (`00-<trace id>-<parent span id>-<flags>`).

use http::header::HeaderValue;
use sluice_core::rng;

/// A trace's id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A new random id.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&rng::next_u64().to_be_bytes());
        b[8..].copy_from_slice(&(rng::next_u64() | 1).to_be_bytes());
        Self(b)
    }
}

impl SpanId {
    /// A new random id.
    pub fn random() -> Self {
        Self((rng::next_u64() | 1).to_be_bytes())
    }
}

/// What a client's `traceparent` says: the trace the request belongs to and the span that
/// sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The trace.
    pub trace_id: TraceId,
    /// The client's span (the request span's parent).
    pub span_id: SpanId,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Reads a `traceparent` header; `None` when it is missing or malformed (the request then
/// starts a trace of its own, as the W3C recommendation says).
pub fn parse(value: &HeaderValue) -> Option<Parent> {
    let s = value.as_bytes();
    if s.len() < 55 || s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
        return None;
    }
    let version = hex::<1>(&s[..2])?[0];
    // Version ff is invalid; version 00 is exactly 55 bytes; later versions may add fields
    // after a dash, which are ignored.
    match version {
        0xff => return None,
        0 if s.len() != 55 => return None,
        0 => {}
        _ if s.len() > 55 && s[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = hex::<16>(&s[3..35])?;
    let span_id = hex::<8>(&s[36..52])?;
    let flags = hex::<1>(&s[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        flags,
    })
}

/// `traceparent` naming `span` of `trace` as the parent of what receives it.
pub fn header(trace: TraceId, span: SpanId, flags: u8) -> HeaderValue {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    push_hex(&mut s, &trace.0);
    s.push('-');
    push_hex(&mut s, &span.0);
    s.push('-');
    push_hex(&mut s, &[flags]);
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// `2 * N` lowercase hex digits as bytes (the recommendation allows no uppercase).
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn reads_and_writes() {
        let p = parse(&HeaderValue::from_static(SAMPLE)).unwrap();
        assert_eq!(p.trace_id.0[0], 0x0a);
        assert_eq!(p.trace_id.0[15], 0x9c);
        assert_eq!(
            p.span_id.0,
            [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
        );
        assert_eq!(p.flags, 1);
        assert_eq!(header(p.trace_id, p.span_id, p.flags), SAMPLE);
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        ] {
            assert!(parse(&HeaderValue::from_static(bad)).is_none(), "{bad}");
        }
        // A later version may carry more after a dash.
        let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more";
        assert!(parse(&HeaderValue::from_static(later)).is_some());
    }

    #[test]
    fn random_ids_are_not_zero() {
        for _ in 0..1000 {
            assert_ne!(TraceId::random().0, [0; 16]);
            assert_ne!(SpanId::random().0, [0; 8]);
        }
    }
}
