//! WAV (RIFF `WAVE`): the chunks walked from the first; the `data` chunk's size over the
//! byte rate (`fmt `'s sample rate times its block size, not its byte-rate field). A `data`
//! size of 0 or 0xFFFFFFFF (written by a streaming recorder) or past the end of the file
//! counts the bytes to the end.

use super::raw::{le32, ms_of, read_at};
use std::io::{Read, Seek};

/// Most chunks looked at before `data`.
const MAX_CHUNKS: usize = 64;

pub(super) fn ms<R: Read + Seek>(r: &mut R, len: u64) -> Option<u64> {
    let (mut at, mut byte_rate) = (12u64, None);
    for _ in 0..MAX_CHUNKS {
        let h: [u8; 8] = read_at(r, at)?;
        let (id, size, body) = (&h[..4], u64::from(le32(&h[4..])), at + 8);
        if id == b"fmt " {
            let f: [u8; 16] = read_at(r, body)?;
            // The rate from the sample rate and block size, not the byte-rate field, which
            // a writer can set to anything.
            let block_align = u64::from(u16::from_le_bytes([f[12], f[13]]));
            byte_rate = Some(u64::from(le32(&f[4..8])) * block_align);
        } else if id == b"data" {
            let size = match size {
                0 | 0xFFFF_FFFF => len.saturating_sub(body),
                s if body + s > len => len.saturating_sub(body),
                s => s,
            };
            return ms_of(size, byte_rate?);
        }
        at = body + size + (size & 1);
    }
    None
}
