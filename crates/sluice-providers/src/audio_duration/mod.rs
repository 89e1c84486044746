//! How long an uploaded audio file plays, read from the file itself (its header, or what
//! its format keeps in a known place), for pricing a transcription per second when the
//! upstream's answer does not say (`text`, `srt` and `vtt` answers carry no usage). Each
//! format reads only what it needs, a few reads of at most 64 KiB, bar an MP3 without a
//! Xing or VBRI header, whose frames are counted (their headers read, their data skipped):
//!
//! - WAV: the `data` chunk's size over `fmt `'s sample rate times block size (`riff`);
//! - FLAC: STREAMINFO's total samples over its sample rate (`flac`);
//! - MP3 (at least 3 frames in a row): the Xing/Info or VBRI header's frame count, else
//!   the frames counted, past any junk between them (`mp3`);
//! - Ogg Vorbis and Opus: the last page's granule position over the rate (Opus: 48 kHz,
//!   less its pre-skip) (`ogg`);
//! - MP4/M4A: `moov/mvhd`'s duration over its time scale (`mp4`);
//! - WebM/Matroska: `Segment/Info`'s `Duration` times its `TimecodeScale` (`webm`).
//!
//! `cues` reads the other source: the end of an `srt` or `vtt` answer's last cue; `raw`
//! holds the byte reading they share.

mod cues;
mod flac;
mod mp3;
mod mp4;
mod ogg;
mod raw;
mod riff;
mod webm;

#[cfg(test)]
mod tests;

pub use cues::last_cue_end_ms;

use raw::read_at_most;
use std::io::{Read, Seek, SeekFrom};

/// How long the audio in `r` plays, in milliseconds; `None` when its format is not one of
/// the above or does not say.
pub fn audio_ms<R: Read + Seek>(r: &mut R) -> Option<u64> {
    let len = r.seek(SeekFrom::End(0)).ok()?;
    let head = read_at_most(r, 0, 12)?;
    let ms = match &head[..] {
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => riff::ms(r, len),
        [b'f', b'L', b'a', b'C', ..] => flac::ms(r),
        [b'O', b'g', b'g', b'S', ..] => ogg::ms(r, len),
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => mp4::ms(r, len),
        [0x1A, 0x45, 0xDF, 0xA3, ..] => webm::ms(r, len),
        _ => mp3::ms(r, len),
    };
    ms.filter(|&ms| ms > 0)
}
