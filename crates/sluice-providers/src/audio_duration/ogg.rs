//! Ogg Vorbis and Opus: the rate from the first page's identification header (Vorbis:
//! its sample rate; Opus: always 48 kHz, less the header's pre-skip), the length from the
//! granule position of the last page of that stream (a page is at most 65,307 bytes, so it
//! starts in the file's last 64 KiB and a bit).

use super::raw::{le32, le64, ms_of, read_at_most};
use std::io::{Read, Seek};

/// The bytes at the end of the file searched for the last page.
const TAIL: u64 = 65_536 + 27 + 255;

pub(super) fn ms<R: Read + Seek>(r: &mut R, len: u64) -> Option<u64> {
    let first = read_at_most(r, 0, 27 + 255 + 19)?;
    let serial = le32(first.get(14..18)?);
    let packet = first.get(27 + usize::from(*first.get(26)?)..)?;
    let (rate, pre_skip) = if packet.starts_with(b"\x01vorbis") {
        (u64::from(le32(packet.get(12..16)?)), 0)
    } else if packet.starts_with(b"OpusHead") {
        let skip = packet.get(10..12)?;
        (48_000, u64::from(skip[0]) | (u64::from(skip[1]) << 8))
    } else {
        return None;
    };
    let from = len.saturating_sub(TAIL);
    let tail = read_at_most(r, from, usize::try_from(len - from).ok()?)?;
    let granule = (0..tail.len().saturating_sub(26)).rev().find_map(|i| {
        let page = &tail[i..];
        let ours = page.starts_with(b"OggS") && page[4] == 0 && le32(&page[14..18]) == serial;
        let granule = le64(&page[6..14]);
        (ours && granule != u64::MAX).then_some(granule)
    })?;
    ms_of(granule.saturating_sub(pre_skip), rate)
}
