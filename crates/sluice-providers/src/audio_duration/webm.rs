//! WebM and Matroska (EBML): the `Segment` entered, its children walked by their sizes to
//! `Info`, whose `Duration` (a float, in ticks) times `TimecodeScale` (nanoseconds a tick,
//! 1,000,000 unless given) is the length. A child of unknown size before `Info`, or the
//! first `Cluster`, ends the search.

use super::raw::{be64, read_at_most};
use std::io::{Read, Seek};

const SEGMENT: u64 = 0x1853_8067;
const INFO: u64 = 0x1549_A966;
const CLUSTER: u64 = 0x1F43_B675;
const TIMECODE_SCALE: u64 = 0x2A_D7B1;
const DURATION: u64 = 0x4489;

/// Most elements walked at one level.
const MAX_ELEMENTS: usize = 1024;

/// An element's header: its id (marker kept), the size of its data (`None`: unknown), and
/// where its data starts.
struct Element {
    id: u64,
    size: Option<u64>,
    data: u64,
}

pub(super) fn ms<R: Read + Seek>(r: &mut R, len: u64) -> Option<u64> {
    let segment = find(r, 0, len, SEGMENT)?;
    let segment_end = segment.size.map_or(len, |s| (segment.data + s).min(len));
    let info = find(r, segment.data, segment_end, INFO)?;
    let body = read_at_most(r, info.data, usize::try_from(info.size?.min(65_536)).ok()?)?;
    let (mut scale, mut ticks, mut at) = (1_000_000f64, None, 0usize);
    while at < body.len() {
        let (id, n) = vint(body.get(at..)?, true)?;
        let (size, m) = vint(body.get(at + n..)?, false)?;
        let start = at + n + m;
        let data = body.get(start..)?.get(..usize::try_from(size).ok()?)?;
        match id {
            TIMECODE_SCALE => {
                scale = data.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)) as f64
            }
            DURATION => {
                ticks = match data.len() {
                    4 => Some(f64::from(f32::from_bits(super::raw::be32(data)))),
                    8 => Some(f64::from_bits(be64(data))),
                    _ => None,
                }
            }
            _ => {}
        }
        at = start + data.len();
    }
    let ms = ticks? * scale / 1e6;
    // Past what a u64 holds is no length (`as` would saturate it to u64::MAX).
    (ms.is_finite() && ms > 0.0 && ms < u64::MAX as f64).then(|| ms.round() as u64)
}

/// The first element `id` between `at` and `end`, its siblings skipped by their sizes.
fn find<R: Read + Seek>(r: &mut R, mut at: u64, end: u64, id: u64) -> Option<Element> {
    for _ in 0..MAX_ELEMENTS {
        if at >= end {
            return None;
        }
        let e = header(r, at)?;
        if e.id == id {
            return Some(e);
        }
        if e.id == CLUSTER {
            return None;
        }
        at = e.data + e.size?;
    }
    None
}

fn header<R: Read + Seek>(r: &mut R, at: u64) -> Option<Element> {
    let b = read_at_most(r, at, 12)?;
    let (id, n) = vint(&b, true)?;
    let rest = b.get(n..)?;
    let (size, m) = vint(rest, false)?;
    let unknown = size == (1u64 << (7 * m)) - 1;
    Some(Element {
        id,
        size: (!unknown).then_some(size),
        data: at + (n + m) as u64,
    })
}

/// An EBML variable-length integer at the start of `b`, and its length: with its length
/// marker kept (an id) or removed (a size).
fn vint(b: &[u8], keep_marker: bool) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let n = first.leading_zeros() as usize + 1;
    if n > 8 || b.len() < n {
        return None;
    }
    let mut v = if keep_marker {
        u64::from(first)
    } else {
        u64::from(first) & ((1u64 << (8 - n)) - 1)
    };
    for &x in &b[1..n] {
        v = (v << 8) | u64::from(x);
    }
    Some((v, n))
}
