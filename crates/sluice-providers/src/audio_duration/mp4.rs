//! MP4, M4A and their ISO base media family: the top-level boxes walked by their sizes to
//! `moov` (before or after the media data), then `moov/mvhd`'s duration over its time
//! scale (version 0: 32-bit fields; version 1: 64-bit times and duration).

use super::raw::{be32, be64, ms_of, read_at};
use std::io::{Read, Seek};

/// Most boxes walked at one level.
const MAX_BOXES: usize = 1024;

pub(super) fn ms<R: Read + Seek>(r: &mut R, len: u64) -> Option<u64> {
    let (moov, moov_end) = find(r, 0, len, b"moov")?;
    let (mvhd, _) = find(r, moov, moov_end, b"mvhd")?;
    let b: [u8; 32] = read_at(r, mvhd)?;
    let (scale, duration) = match b[0] {
        1 => (be32(&b[20..24]), be64(&b[24..32])),
        _ => (be32(&b[12..16]), u64::from(be32(&b[16..20]))),
    };
    ms_of(duration, u64::from(scale))
}

/// The body (its start and end) of the first box of type `kind` between `at` and `end`.
fn find<R: Read + Seek>(r: &mut R, mut at: u64, end: u64, kind: &[u8; 4]) -> Option<(u64, u64)> {
    for _ in 0..MAX_BOXES {
        if at.checked_add(8).is_none_or(|e| e > end) {
            return None;
        }
        let h: [u8; 8] = read_at(r, at)?;
        let (size, header) = match be32(&h[..4]) {
            // A 64-bit size follows the type.
            1 => (be64(&read_at::<_, 8>(r, at.checked_add(8)?)?), 16),
            // To the end of the enclosing box (or file).
            0 => (end - at, 8),
            s => (u64::from(s), 8),
        };
        if size < header {
            return None;
        }
        if &h[4..8] == kind {
            return Some((at + header, at.saturating_add(size).min(end)));
        }
        at = at.checked_add(size)?;
    }
    None
}
