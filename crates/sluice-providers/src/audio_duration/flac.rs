//! FLAC: the STREAMINFO block, always the first after `fLaC`: 20 bits of sample rate and
//! 36 bits of total samples (0: unknown).

use super::raw::{be32, ms_of, read_at};
use std::io::{Read, Seek};

pub(super) fn ms<R: Read + Seek>(r: &mut R) -> Option<u64> {
    // The block header (type 0: STREAMINFO), then min/max block and frame sizes (10 bytes).
    let b: [u8; 22] = read_at(r, 4)?;
    if b[0] & 0x7F != 0 {
        return None;
    }
    let info = &b[4..];
    let rate = (u64::from(info[10]) << 12) | (u64::from(info[11]) << 4) | u64::from(info[12] >> 4);
    let samples = (u64::from(info[13] & 0x0F) << 32) | u64::from(be32(&info[14..18]));
    if samples == 0 {
        return None;
    }
    ms_of(samples, rate)
}
