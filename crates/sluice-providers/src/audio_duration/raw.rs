//! Reading a file's bytes at an offset, and the integers and rates the formats store.

use std::io::{Read, Seek, SeekFrom};

/// Reads up to `n` bytes at `at` (fewer at the end of the file).
pub(super) fn read_at_most<R: Read + Seek>(r: &mut R, at: u64, n: usize) -> Option<Vec<u8>> {
    r.seek(SeekFrom::Start(at)).ok()?;
    let mut buf = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Reads exactly `N` bytes at `at`.
pub(super) fn read_at<R: Read + Seek, const N: usize>(r: &mut R, at: u64) -> Option<[u8; N]> {
    r.seek(SeekFrom::Start(at)).ok()?;
    let mut buf = [0; N];
    r.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// `count` units at `per_second` of them, in milliseconds.
pub(super) fn ms_of(count: u64, per_second: u64) -> Option<u64> {
    let ms = u128::from(count) * 1000 / u128::from(per_second).max(1);
    u64::try_from(ms).ok().filter(|_| per_second > 0)
}

/// A big-endian integer from the first 4 bytes.
pub(super) fn be32(b: &[u8]) -> u32 {
    b.iter().take(4).fold(0, |v, &x| (v << 8) | u32::from(x))
}

/// A big-endian integer from the first 8 bytes.
pub(super) fn be64(b: &[u8]) -> u64 {
    b.iter().take(8).fold(0, |v, &x| (v << 8) | u64::from(x))
}

/// A little-endian integer from the first 4 bytes.
pub(super) fn le32(b: &[u8]) -> u32 {
    b.iter()
        .take(4)
        .rev()
        .fold(0, |v, &x| (v << 8) | u32::from(x))
}

/// A little-endian integer from the first 8 bytes.
pub(super) fn le64(b: &[u8]) -> u64 {
    b.iter()
        .take(8)
        .rev()
        .fold(0, |v, &x| (v << 8) | u64::from(x))
}
