//! `x-request-id`: the client's own when it sends a sane one, else a new 32-hex-digit id.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn prefix() -> u64 {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // splitmix64 of time and pid: distinct per process, no RNG needed.
        let mut z = nanos ^ (u64::from(std::process::id()) << 32);
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// The id for a request with these headers.
pub fn for_request(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let n = COUNTER.fetch_add(1, Relaxed);
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, word) in [prefix(), n].iter().enumerate() {
        for j in 0..16 {
            buf[i * 16 + j] = HEX[((word >> (60 - 4 * j)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_makes_unique_ones() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(for_request(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        let a = for_request(&h);
        let b = for_request(&HeaderMap::new());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
