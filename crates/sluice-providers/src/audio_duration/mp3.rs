//! MP3 (MPEG audio layers I-III, versions 1, 2 and 2.5), after an ID3v2 tag if there is
//! one: the first frame followed by two more of its stream, each where the one before
//! says (fewer is not MP3, so that any other file whose bytes happen to look like a frame
//! header has no length rather than a wrong one), then the frame count of its Xing/Info
//! header (variable bit rate, or LAME's constant one) or its VBRI header (Fraunhofer's);
//! else the frames are counted, each header read and its data skipped, to the end of the
//! file: past bytes that are not a frame (padding, junk, an ID3 tag between frames, an
//! ID3v1 tag at the end) the count resumes at the next frame whose own next frame is
//! where its length says.

use super::raw::{be32, ms_of, read_at, read_at_most};
use std::io::{BufReader, Read, Seek, SeekFrom};

/// How far past the tag the first frame is looked for.
const SYNC_WINDOW: usize = 64 * 1024;

/// An MPEG audio frame's header, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    /// Its length in bytes, header included.
    pub len: u64,
    /// The samples it holds.
    pub samples: u64,
    /// Samples per second.
    pub rate: u64,
    /// The length of its side information (where a Xing header starts after it).
    pub side: u64,
}

const BITRATES_V1: [[u16; 15]; 3] = [
    [
        0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ],
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ],
    [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
];
const BITRATES_V2: [[u16; 15]; 2] = [
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

/// The frame whose header is `h`, if it is one.
pub(super) fn frame(h: [u8; 4]) -> Option<Frame> {
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    // Version: 0 MPEG 2.5, 1 reserved, 2 MPEG 2, 3 MPEG 1; layer: 1 III, 2 II, 3 I.
    let (version, layer) = ((h[1] >> 3) & 3, (h[1] >> 1) & 3);
    let (bitrate_index, rate_index) = (usize::from(h[2] >> 4), usize::from((h[2] >> 2) & 3));
    if version == 1 || layer == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    let mpeg1 = version == 3;
    let rate = [44_100u64, 48_000, 32_000][rate_index] >> [2, 0, 1, 0][usize::from(version)];
    let kbps = u64::from(match (mpeg1, layer) {
        (true, l) => BITRATES_V1[usize::from(3 - l)][bitrate_index],
        (false, 3) => BITRATES_V2[0][bitrate_index],
        (false, _) => BITRATES_V2[1][bitrate_index],
    });
    let padding = u64::from((h[2] >> 1) & 1);
    let bits = kbps * 1000;
    let (samples, len) = match (layer, mpeg1) {
        (3, _) => (384, (12 * bits / rate + padding) * 4),
        (1, false) => (576, 72 * bits / rate + padding),
        _ => (1152, 144 * bits / rate + padding),
    };
    let mono = h[3] >> 6 == 3;
    let side = match (mpeg1, mono) {
        (true, false) => 32,
        (true, true) | (false, false) => 17,
        (false, true) => 9,
    };
    Some(Frame {
        len,
        samples,
        rate,
        side,
    })
}

pub(super) fn ms<R: Read + Seek>(r: &mut R, len: u64) -> Option<u64> {
    let start = id3_end(r, 0)?.unwrap_or(0);
    let (at, first) = first_frame(r, start, len)?;
    // A count of 0 says nothing: the frames are counted instead.
    let counted = xing_frames(r, at, first).or_else(|| vbri_frames(r, at));
    if let Some(frames) = counted.filter(|&n| n > 0) {
        return ms_of(u64::from(frames) * first.samples, first.rate);
    }
    ms_of(count_samples(r, at, len, first)?, first.rate)
}

/// Where an ID3v2 tag at `at` (and its footer) ends, if one starts there.
fn id3_end<R: Read + Seek>(r: &mut R, at: u64) -> Option<Option<u64>> {
    let h = read_at_most(r, at, 10)?;
    if h.len() < 10 || &h[..3] != b"ID3" {
        return Some(None);
    }
    let size = h[6..10]
        .iter()
        .fold(0u64, |v, &b| (v << 7) | u64::from(b & 0x7F));
    let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
    Some(Some(at + 10 + size + footer))
}

/// Whether `f` can belong to the stream whose first frame is `first`: frames of one stream
/// share their version, layer and sample rate.
fn same_stream(f: Frame, first: Frame) -> bool {
    f.rate == first.rate && f.samples == first.samples
}

/// The frame of `first`'s stream whose header is at `at`, if there is one.
fn frame_at<R: Read + Seek>(r: &mut R, at: u64, first: Frame) -> Option<Frame> {
    read_at(r, at)
        .and_then(frame)
        .filter(|&f| same_stream(f, first))
}

/// The first frame at or after `start` followed by two more of its stream, each where
/// the one before says: fewer than [`FIRST_FRAMES`] frames in a row is not MP3 (a file of
/// another format, or none, whose bytes happen to look like a frame header).
fn first_frame<R: Read + Seek>(r: &mut R, start: u64, len: u64) -> Option<(u64, Frame)> {
    let window = read_at_most(r, start, SYNC_WINDOW)?;
    for i in 0..window.len().saturating_sub(3) {
        let Some(f) = frame([window[i], window[i + 1], window[i + 2], window[i + 3]]) else {
            continue;
        };
        let at = start + i as u64;
        let mut next = at + f.len;
        let mut run = 1;
        while run < FIRST_FRAMES && next < len {
            let Some(g) = frame_at(r, next, f) else { break };
            next += g.len;
            run += 1;
        }
        if run == FIRST_FRAMES {
            return Some((at, f));
        }
    }
    None
}

/// Consecutive frames that make a file MP3.
const FIRST_FRAMES: usize = 3;

/// The frame count of a Xing or Info header in the first frame, when it has one.
fn xing_frames<R: Read + Seek>(r: &mut R, at: u64, f: Frame) -> Option<u32> {
    let x: [u8; 12] = read_at(r, at + 4 + f.side)?;
    let tagged = &x[..4] == b"Xing" || &x[..4] == b"Info";
    (tagged && be32(&x[4..8]) & 1 != 0).then(|| be32(&x[8..12]))
}

/// The frame count of a VBRI header (32 bytes after the first frame's header).
fn vbri_frames<R: Read + Seek>(r: &mut R, at: u64) -> Option<u32> {
    let v: [u8; 18] = read_at(r, at + 36)?;
    (&v[..4] == b"VBRI").then(|| be32(&v[14..18]))
}

/// The samples of the frames from `at` on, each header read and its data skipped; past
/// bytes that are not a frame (padding, junk, an ID3 tag between frames), counting goes on
/// at the next frame found, one whose own next frame is where its length says (or which
/// ends the file), so that stray bytes that look like a header are not taken for one.
fn count_samples<R: Read + Seek>(r: &mut R, at: u64, len: u64, first: Frame) -> Option<u64> {
    let mut reader = BufReader::with_capacity(SYNC_WINDOW, r);
    reader.seek(SeekFrom::Start(at)).ok()?;
    let (mut pos, mut samples) = (at, 0u64);
    let mut h = [0u8; 4];
    while pos + 4 <= len {
        if reader.read_exact(&mut h).is_err() {
            break;
        }
        if let Some(f) = frame(h).filter(|&f| same_stream(f, first)) {
            samples += f.samples;
            pos += f.len;
            let skip = i64::try_from(f.len - 4).ok()?;
            reader.seek_relative(skip).ok()?;
            continue;
        }
        let from = match id3_end(&mut reader, pos)? {
            Some(end) => end,
            None => pos + 1,
        };
        let Some(next) = resync(&mut reader, from, len, first)? else {
            break;
        };
        pos = next;
        reader.seek(SeekFrom::Start(pos)).ok()?;
    }
    Some(samples)
}

/// The first frame of `first`'s stream at or after `from` whose next frame's header is
/// where its length says, or which ends the audio: `None` when there is none.
fn resync<R: Read + Seek>(r: &mut R, from: u64, len: u64, first: Frame) -> Option<Option<u64>> {
    let mut start = from;
    while start + 4 <= len {
        let window = read_at_most(r, start, SYNC_WINDOW)?;
        if window.len() < 4 {
            break;
        }
        for i in 0..window.len() - 3 {
            let h = [window[i], window[i + 1], window[i + 2], window[i + 3]];
            let Some(f) = frame(h).filter(|&f| same_stream(f, first)) else {
                continue;
            };
            let at = start + i as u64;
            let next = at + f.len;
            // The next header from the window when it is there (no seek: a file full of
            // false headers must not cost a read each), else from the file.
            let in_window = usize::try_from(f.len)
                .ok()
                .and_then(|l| i.checked_add(l))
                .and_then(|n| window.get(n..n + 4));
            let follows = match in_window {
                Some(h) => frame([h[0], h[1], h[2], h[3]])
                    .filter(|&g| same_stream(g, first))
                    .is_some(),
                None => frame_at(r, next, first).is_some(),
            };
            if follows || ends_stream(r, next, len)? {
                return Some(Some(at));
            }
        }
        // The last 3 bytes again: a header may straddle two windows.
        start += (window.len() - 3) as u64;
    }
    Some(None)
}

/// Whether the audio ends at `at`: the end of the file, or an ID3v1 tag (its last 128
/// bytes, starting `TAG`).
fn ends_stream<R: Read + Seek>(r: &mut R, at: u64, len: u64) -> Option<bool> {
    if at == len {
        return Some(true);
    }
    if at.checked_add(128) != Some(len) {
        return Some(false);
    }
    Some(read_at_most(r, at, 3)? == b"TAG")
}
