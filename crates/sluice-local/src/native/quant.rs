//! GGUF weight matrices as stored in the file (the 32-value formats repacked, see [`Packing`]), their scalar
//! dequantization, and the length-checked, safe entry to the [`simd`] kernels
//! ([`QMatrix::dot_rows`]) for the activations of [`super::acts`].
//!
//! Weights stay in their GGUF block layout, byte for byte: a matrix is `rows` rows of `cols`
//! values, each row a run of blocks. Scalar dequantization ([`QMatrix::dequantize_row`]) is the
//! reference the kernels are tested against and the embedding lookup.

use std::sync::Arc;

use super::acts::Acts;
use super::blob::Blob;
use super::format::{f16_to_f32, lane_groups, lane_source, q3k_scales, QType};
use super::simd::{self, Isa};

/// A weight matrix: `rows` rows of `cols` values in the GGUF bytes of `qtype` (32-value formats
/// repacked, see [`repack`]), a view into a buffer shared by all of a model's matrices.
#[derive(Debug, Clone)]
pub(crate) struct QMatrix {
    pub(crate) qtype: QType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    row_bytes: usize,
    blob: Arc<Blob>,
    offset: usize,
}

/// Bytes of one row of `cols` values of `qtype`; `None` when `cols` is not a whole number of
/// blocks.
pub(crate) fn row_bytes(qtype: QType, cols: usize) -> Option<usize> {
    (cols > 0 && cols % qtype.block() == 0).then(|| cols / qtype.block() * qtype.block_bytes())
}

/// Rearranges rows of `cols` values of `qtype`, as stored in GGUF, into the layout the kernels
/// read (a no-op except for the 32-value formats, see [`Packing`]); `data` must be whole rows.
pub(crate) fn repack(qtype: QType, cols: usize, data: &mut [u8]) {
    let (Some(packing), Some(row_bytes)) = (Packing::of(qtype), row_bytes(qtype, cols)) else {
        return;
    };
    let mut packed = vec![0u8; row_bytes];
    for row in data.chunks_exact_mut(row_bytes) {
        packing.pack(row, &mut packed);
        row.copy_from_slice(&packed);
    }
}

// === impl QMatrix ===

impl QMatrix {
    /// Takes GGUF bytes of its own (repacking them); `None` when `cols` is not a multiple of
    /// the block or the length is wrong.
    #[cfg(test)]
    pub(crate) fn new(qtype: QType, rows: usize, cols: usize, mut data: Vec<u8>) -> Option<Self> {
        if data.len() != rows.checked_mul(row_bytes(qtype, cols)?)? {
            return None;
        }
        repack(qtype, cols, &mut data);
        Self::view(qtype, rows, cols, &Arc::new(Blob::Read(data)), 0)
    }

    /// The matrix at `offset` of `blob`, already [`repack`]ed; `None` when `cols` is not a
    /// multiple of the block or the rows run past the end.
    pub(crate) fn view(
        qtype: QType,
        rows: usize,
        cols: usize,
        blob: &Arc<Blob>,
        offset: usize,
    ) -> Option<Self> {
        let row_bytes = row_bytes(qtype, cols)?;
        let end = offset.checked_add(rows.checked_mul(row_bytes)?)?;
        (end <= blob.len()).then(|| Self {
            qtype,
            rows,
            cols,
            row_bytes,
            blob: Arc::clone(blob),
            offset,
        })
    }

    /// Rows `first .. first + n` as a matrix of their own (a view into the same buffer).
    pub(crate) fn rows_view(&self, first: usize, n: usize) -> Option<Self> {
        (first.checked_add(n)? <= self.rows).then(|| Self {
            rows: n,
            offset: self.offset + first * self.row_bytes,
            blob: Arc::clone(&self.blob),
            ..*self
        })
    }

    fn data(&self) -> &[u8] {
        &self.blob[self.offset..self.offset + self.rows * self.row_bytes]
    }

    /// Bytes of the buffer this matrix is a view into (shared with the model's others).
    pub(crate) fn blob_bytes(&self) -> usize {
        self.blob.len()
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.data()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` as f32 values, into `out` (`cols` long).
    pub(crate) fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let row = self.row(r);
        match Packing::of(self.qtype) {
            Some(packing) => {
                let mut raw = vec![0u8; row.len()];
                packing.unpack(row, &mut raw);
                dequantize(self.qtype, &raw, &mut out[..self.cols]);
            }
            None => dequantize(self.qtype, row, &mut out[..self.cols]),
        }
    }

    /// Row `r`'s bytes as GGUF stores them (the repacking undone), for tests.
    #[cfg(test)]
    pub(crate) fn gguf_row(&self, r: usize) -> Vec<u8> {
        let row = self.row(r);
        let mut raw = row.to_vec();
        if let Some(packing) = Packing::of(self.qtype) {
            packing.unpack(row, &mut raw);
        }
        raw
    }

    /// `out[t][r] = row r · acts[t]` for the rows `rows` and every activation row, written
    /// row-major by weight row: `out[(r - rows.start) * acts.m + t]`.
    pub(crate) fn dot_rows(
        &self,
        isa: Isa,
        rows: std::ops::Range<usize>,
        acts: &Acts,
        out: &mut [f32],
    ) {
        // The widths, forms and output length are checked by `simd::rows`.
        assert!(rows.end <= self.rows);
        let data = &self.data()[rows.start * self.row_bytes..rows.end * self.row_bytes];
        let m = acts.m;
        // A tile of weight rows at a time, small enough for L1, through every activation row:
        // each weight byte comes from memory once per pass, however many rows (sequences) there
        // are, and the kernels unpack it once per 4 (8 with AVX-512's registers, see below) of
        // them.
        let tile = (TILE_BYTES / self.row_bytes).max(1) * self.row_bytes;
        // 8 rows at a time on AVX-512, except for the lane-order formats (Q4_0, Q5_0), whose
        // kernels cost no more per row in tiles of 4 (`kernel_speed`, 8 rows, ns per 32 weights
        // × row: Q4_0 0.48 against 0.53; Q5_0 896 wide, release build, 0.42–0.45 against
        // 0.43–0.48, though 2.5 % more in the dev build).
        let eight = isa.wide() && !matches!(self.qtype, QType::Q4_0 | QType::Q5_0);
        for (i, tile) in data.chunks(tile).enumerate() {
            let out = &mut out[i * (TILE_BYTES / self.row_bytes).max(1) * m..];
            let mut t = 0;
            while eight && t + 8 <= m {
                simd::rows::<8>(isa, self.qtype, tile, self.cols, acts, t, &mut out[t..], m);
                t += 8;
            }
            while t + 4 <= m {
                simd::rows::<4>(isa, self.qtype, tile, self.cols, acts, t, &mut out[t..], m);
                t += 4;
            }
            while t < m {
                simd::rows::<1>(isa, self.qtype, tile, self.cols, acts, t, &mut out[t..], m);
                t += 1;
            }
        }
    }
}

/// Bytes of weight rows [`QMatrix::dot_rows`] takes through all activation rows at a time.
const TILE_BYTES: usize = 16 * 1024;

/// How a row of a 32-value format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) is held: field by field
/// instead of block by block. A GGUF block is `halves` f16 fields (scale, then min), `high`
/// bytes of fifth bits and `run` bytes of values; the row is held as every block's scale, then
/// every block's min, then the fifth bits, then the values, nibble values (`run == 16`) pair by
/// pair in [`interleave`]'s order. Same bytes, another order: the kernels convert 8 scales with
/// one instruction and unpack two blocks' nibbles with one mask and one shift. Q4_0 and Q5_0
/// (`lanes`) hold their blocks in lane groups of 8 (and one of 4) instead ([`lane_groups`],
/// [`to_lanes`], Q5_0's fifth bits by [`bits_to_lanes`]), so that their kernels sum each block
/// in its own lane and scale 8 blocks at once; their last blocks (fewer than 4) are in pairs as
/// the others'. (Q4_1 and Q5_1 could follow; llama.cpp's presets use them rarely.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packing {
    halves: usize,
    high: usize,
    run: usize,
    lanes: bool,
}

// === impl Packing ===

impl Packing {
    pub(crate) fn of(qtype: QType) -> Option<Self> {
        let lanes = matches!(qtype, QType::Q4_0 | QType::Q5_0);
        let (halves, high, run) = match qtype {
            QType::Q4_0 => (1, 0, 16),
            QType::Q4_1 => (2, 0, 16),
            QType::Q5_0 => (1, 4, 16),
            QType::Q5_1 => (2, 4, 16),
            QType::Q8_0 => (1, 0, 32),
            _ => return None,
        };
        Some(Self {
            halves,
            high,
            run,
            lanes,
        })
    }

    fn block(self) -> usize {
        2 * self.halves + self.high + self.run
    }

    /// Each field of block `b` of a row of `blocks`: its place in the GGUF block and in the
    /// packed row, and its length.
    fn fields(self, b: usize, blocks: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let halves = (0..self.halves).map(move |h| (2 * h, 2 * (h * blocks + b), 2));
        let high_at = 2 * self.halves;
        let high =
            (self.high > 0).then_some((high_at, high_at * blocks + self.high * b, self.high));
        let run_at = high_at + self.high;
        let values = (run_at, run_at * blocks + self.run * b, self.run);
        halves.chain(high).chain(std::iter::once(values))
    }

    /// GGUF blocks → the packed row.
    fn pack(self, raw: &[u8], packed: &mut [u8]) {
        let blocks = raw.len() / self.block();
        for (b, blk) in raw.chunks_exact(self.block()).enumerate() {
            for (at, to, len) in self.fields(b, blocks) {
                packed[to..to + len].copy_from_slice(&blk[at..at + len]);
            }
        }
        for (first, g) in self.high_groups(blocks) {
            let high = &mut packed[2 * self.halves * blocks..];
            bits_to_lanes(&mut high[4 * first..4 * (first + g)]);
        }
        if self.run == 16 {
            let values = &mut packed[(2 * self.halves + self.high) * blocks..];
            let (grouped, pairs) = values.split_at_mut(self.grouped(blocks) * 16);
            for (first, g) in lane_groups(blocks).take_while(|_| self.lanes) {
                to_lanes(&mut grouped[16 * first..16 * (first + g)]);
            }
            for pair in pairs.chunks_exact_mut(32) {
                let mut out = [0u8; 32];
                interleave(pair, &mut out);
                pair.copy_from_slice(&out);
            }
        }
    }

    /// The lane groups of a row of `blocks` whose fifth bits are held in lane order (Q5_0's).
    fn high_groups(self, blocks: usize) -> impl Iterator<Item = (usize, usize)> {
        lane_groups(blocks).take_while(move |_| self.lanes && self.high == 4)
    }

    /// The blocks of a row of `blocks` held in lane order.
    fn grouped(self, blocks: usize) -> usize {
        if self.lanes {
            lane_groups(blocks).map(|(_, g)| g).sum()
        } else {
            0
        }
    }

    /// The inverse of [`Packing::pack`].
    fn unpack(self, packed: &[u8], raw: &mut [u8]) {
        let blocks = packed.len() / self.block();
        let mut packed = packed.to_vec();
        for (first, g) in self.high_groups(blocks) {
            let high = &mut packed[2 * self.halves * blocks..];
            bits_from_lanes(&mut high[4 * first..4 * (first + g)]);
        }
        if self.run == 16 {
            let values = &mut packed[(2 * self.halves + self.high) * blocks..];
            let (grouped, pairs) = values.split_at_mut(self.grouped(blocks) * 16);
            for (first, g) in lane_groups(blocks).take_while(|_| self.lanes) {
                from_lanes(&mut grouped[16 * first..16 * (first + g)]);
            }
            for pair in pairs.chunks_exact_mut(32) {
                let mut out = [0u8; 32];
                deinterleave(pair, &mut out);
                pair.copy_from_slice(&out);
            }
        }
        for (b, blk) in raw.chunks_exact_mut(self.block()).enumerate() {
            for (at, from, len) in self.fields(b, blocks) {
                blk[at..at + len].copy_from_slice(&packed[from..from + len]);
            }
        }
    }
}

/// Two Q4_0 blocks' 16 GGUF bytes each (byte `j`: value `j` low, value `j + 16` high) → 32
/// bytes whose low nibbles are the first block's 32 values in order and whose high nibbles are
/// the second's, so one mask and one shift unpack both.
fn interleave(natural: &[u8], out: &mut [u8; 32]) {
    let value = |blk: &[u8], i: usize| {
        if i < 16 {
            blk[i] & 0x0F
        } else {
            blk[i - 16] >> 4
        }
    };
    let (a, b) = natural.split_at(16);
    for (i, o) in out.iter_mut().enumerate() {
        *o = value(a, i) | (value(b, i) << 4);
    }
}

/// A lane group of `g` Q4_0 or Q5_0 blocks (8 or 4), 16 GGUF bytes of nibbles each → their
/// values in lane order ([`lane_source`]), `L`, as `16g` bytes: byte `32q + i` holds
/// `L[64q + i]` in its low nibble and `L[64q + 32 + i]` in its high one, so one 32-byte load, a
/// shift and a mask give 64 values in order.
fn to_lanes(group: &mut [u8]) {
    let g = group.len() / 16;
    let nibble = |n: usize| {
        let (blk, v) = (n / 32, n % 32);
        let byte = group[16 * blk + v % 16];
        if v < 16 {
            byte & 0x0F
        } else {
            byte >> 4
        }
    };
    let out: Vec<u8> = (0..group.len())
        .map(|at| {
            let (q, i) = (at / 32, at % 32);
            nibble(lane_source(64 * q + i, g)) | (nibble(lane_source(64 * q + 32 + i, g)) << 4)
        })
        .collect();
    group.copy_from_slice(&out);
}

/// The inverse of [`to_lanes`].
fn from_lanes(group: &mut [u8]) {
    let g = group.len() / 16;
    let mut out = vec![0u8; group.len()];
    for (at, &byte) in group.iter().enumerate() {
        let (q, i) = (at / 32, at % 32);
        for (p, value) in [(64 * q + i, byte & 0x0F), (64 * q + 32 + i, byte >> 4)] {
            let n = lane_source(p, g);
            let (blk, v) = (n / 32, n % 32);
            out[16 * blk + v % 16] |= if v < 16 { value } else { value << 4 };
        }
    }
    group.copy_from_slice(&out);
}

/// A lane group of `g` Q5_0 blocks' fifth bits (8 or 4 blocks), GGUF's little-endian `u32` a
/// block (bit `j` of block `b`'s is value `j`'s: bit `32b + j` of the `4g` bytes read as one
/// little-endian bit string) → bit `p` of the bit string is position `p`'s in lane order
/// ([`lane_source`]). So the 32 positions one 32-byte register of [`to_lanes`]' values holds
/// (or the 64 of a 64-byte one) have their fifth bits in one `u32` (`u64`) load.
fn bits_to_lanes(group: &mut [u8]) {
    let g = group.len() / 4;
    let bit = |n: usize| (group[n / 8] >> (n % 8)) & 1;
    let mut out = vec![0u8; group.len()];
    for p in 0..32 * g {
        out[p / 8] |= bit(lane_source(p, g)) << (p % 8);
    }
    group.copy_from_slice(&out);
}

/// The inverse of [`bits_to_lanes`].
fn bits_from_lanes(group: &mut [u8]) {
    let g = group.len() / 4;
    let bit = |p: usize| (group[p / 8] >> (p % 8)) & 1;
    let mut out = vec![0u8; group.len()];
    for p in 0..32 * g {
        let n = lane_source(p, g);
        out[n / 8] |= bit(p) << (n % 8);
    }
    group.copy_from_slice(&out);
}

/// The inverse of [`interleave`].
fn deinterleave(paired: &[u8], out: &mut [u8; 32]) {
    let (a, b) = out.split_at_mut(16);
    for j in 0..16 {
        a[j] = (paired[j] & 0x0F) | ((paired[j + 16] & 0x0F) << 4);
        b[j] = (paired[j] >> 4) | (paired[j + 16] & 0xF0);
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// Scalar dequantization of one row (ggml's `dequantize_row_*`).
pub(crate) fn dequantize(qtype: QType, row: &[u8], out: &mut [f32]) {
    match qtype {
        QType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        QType::F16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16_at(row, 2 * i);
            }
        }
        QType::BF16 => {
            // The top half of an f32.
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
            }
        }
        QType::Q4_0 => {
            for (blk, y) in row.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(blk, 0);
                for j in 0..16 {
                    let q = blk[2 + j];
                    y[j] = f32::from(i16::from(q & 0x0F) - 8) * d;
                    y[j + 16] = f32::from(i16::from(q >> 4) - 8) * d;
                }
            }
        }
        QType::Q4_1 | QType::Q5_0 | QType::Q5_1 => dequantize_legacy(qtype, row, out),
        QType::Q8_0 => {
            for (blk, y) in row.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(blk, 0);
                for j in 0..32 {
                    y[j] = f32::from(blk[2 + j] as i8) * d;
                }
            }
        }
        QType::Q4K => {
            for (blk, y) in row.chunks_exact(144).zip(out.chunks_exact_mut(256)) {
                let d = f16_at(blk, 0);
                let dmin = f16_at(blk, 2);
                let mut s = [0u8; 12];
                s.copy_from_slice(&blk[4..16]);
                let (sc, mn) = q4k_scales(&s);
                let qs = &blk[16..];
                for c in 0..4 {
                    let (d1, m1) = (d * f32::from(sc[2 * c]), dmin * f32::from(mn[2 * c]));
                    let (d2, m2) = (
                        d * f32::from(sc[2 * c + 1]),
                        dmin * f32::from(mn[2 * c + 1]),
                    );
                    for l in 0..32 {
                        let q = qs[32 * c + l];
                        y[64 * c + l] = d1 * f32::from(q & 0x0F) - m1;
                        y[64 * c + 32 + l] = d2 * f32::from(q >> 4) - m2;
                    }
                }
            }
        }
        QType::Q2K | QType::Q3K => dequantize_planes(qtype, row, out),
        QType::Q5K => dequantize_q5k(row, out),
        QType::Q6K => {
            for (blk, y) in row.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
                let d = f16_at(blk, 208);
                for half in 0..2 {
                    let ql = &blk[64 * half..];
                    let qh = &blk[128 + 32 * half..];
                    let sc = &blk[192 + 8 * half..];
                    let y = &mut y[128 * half..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q = |low: u8, shift: u32| {
                            f32::from(i16::from(low | (((qh[l] >> shift) & 3) << 4)) - 32)
                        };
                        let scale = |i: usize| d * f32::from(sc[is + i] as i8);
                        y[l] = scale(0) * q(ql[l] & 0x0F, 0);
                        y[l + 32] = scale(2) * q(ql[l + 32] & 0x0F, 2);
                        y[l + 64] = scale(4) * q(ql[l] >> 4, 4);
                        y[l + 96] = scale(6) * q(ql[l + 32] >> 4, 6);
                    }
                }
            }
        }
    }
}

/// Q4_1, Q5_0 and Q5_1 rows (ggml's `dequantize_row_q4_1`, `_q5_0`, `_q5_1`): a block is f16
/// `d`, f16 `m` (Q4_1, Q5_1), 32 fifth bits (Q5_0, Q5_1: bit `j` of the little-endian `u32` is
/// value `j`'s), 16 bytes of nibbles (byte `j`: value `j` low, value `j + 16` high); a value is
/// `q · d + m`, or `(q − 16) · d` for Q5_0.
fn dequantize_legacy(qtype: QType, row: &[u8], out: &mut [f32]) {
    let Some(packing) = Packing::of(qtype) else {
        return;
    };
    let min = packing.halves == 2;
    for (blk, y) in row
        .chunks_exact(packing.block())
        .zip(out.chunks_exact_mut(32))
    {
        let d = f16_at(blk, 0);
        let m = if min { f16_at(blk, 2) } else { 0.0 };
        let at = 2 * packing.halves;
        let qh = if packing.high == 4 {
            u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]])
        } else {
            0
        };
        let qs = &blk[at + packing.high..];
        for j in 0..16 {
            let fifth = |i: usize| (((qh >> i) & 1) << 4) as u8;
            let q0 = (qs[j] & 0x0F) | fifth(j);
            let q1 = (qs[j] >> 4) | fifth(j + 16);
            (y[j], y[j + 16]) = match qtype {
                QType::Q5_0 => (
                    f32::from(i16::from(q0) - 16) * d,
                    f32::from(i16::from(q1) - 16) * d,
                ),
                _ => (f32::from(q0) * d + m, f32::from(q1) * d + m),
            };
        }
    }
}

/// Q5_K rows (ggml's `dequantize_row_q5_K`): a block is f16 `d`, f16 `dmin`, Q4_K's 12 bytes of
/// scales and mins, 32 bytes of fifth bits, 128 bytes of nibbles; chunk `c` of 64 values is
/// sub-block `2c` (low nibbles of bytes `32c..32c + 32`, bit `2c` of `qh[l]`) then `2c + 1`
/// (high nibbles, bit `2c + 1`), value `d · sc · q − dmin · mn`.
fn dequantize_q5k(row: &[u8], out: &mut [f32]) {
    for (blk, y) in row.chunks_exact(176).zip(out.chunks_exact_mut(256)) {
        let d = f16_at(blk, 0);
        let dmin = f16_at(blk, 2);
        let mut s = [0u8; 12];
        s.copy_from_slice(&blk[4..16]);
        let (sc, mn) = q4k_scales(&s);
        let (qh, qs) = (&blk[16..48], &blk[48..]);
        for c in 0..4 {
            for (half, j) in [(0, 2 * c), (1, 2 * c + 1)] {
                let (dj, mj) = (d * f32::from(sc[j]), dmin * f32::from(mn[j]));
                for l in 0..32 {
                    let nibble = (qs[32 * c + l] >> (4 * half)) & 0x0F;
                    let fifth = ((qh[l] >> j) & 1) << 4;
                    y[64 * c + 32 * half + l] = dj * f32::from(nibble + fifth) - mj;
                }
            }
        }
    }
}

/// Q2_K and Q3_K rows (ggml's `dequantize_row_q2_K`, `_q3_K`): 2-bit values in bit planes.
/// Each half of a block (128 values) has 32 bytes; value `32j + l` of the half is bits
/// `2j, 2j + 1` of byte `l`, in sub-block `2j + l / 16` of 16 values.
///
/// - Q2_K (84 bytes): 16 scale bytes (scale in the low nibble, min in the high one), the 64
///   bytes of values, f16 `d`, f16 `dmin`; a value is `d · sc · q − dmin · mn`.
/// - Q3_K (110 bytes): 32 bytes of third bits (bit `4 · half + j` of byte `l`), the 64 bytes
///   of values, 12 bytes of 6-bit scales ([`q3k_scales`]), f16 `d`; a value is
///   `d · sc · (q − 4)` where the third bit is clear, `d · sc · q` where it is set.
fn dequantize_planes(qtype: QType, row: &[u8], out: &mut [f32]) {
    let q3 = qtype == QType::Q3K;
    let (block, qs_at) = if q3 { (110, 32) } else { (84, 16) };
    for (blk, y) in row.chunks_exact(block).zip(out.chunks_exact_mut(256)) {
        let (d, dmin) = if q3 {
            (f16_at(blk, 108), 0.0)
        } else {
            (f16_at(blk, 80), f16_at(blk, 82))
        };
        let signed = if q3 {
            let mut packed = [0u8; 12];
            packed.copy_from_slice(&blk[96..108]);
            q3k_scales(&packed)
        } else {
            [0; 16]
        };
        for half in 0..2 {
            let qs = &blk[qs_at + 32 * half..];
            for j in 0..4 {
                for l in 0..32 {
                    let s = 8 * half + 2 * j + l / 16;
                    let q = (qs[l] >> (2 * j)) & 3;
                    let i = 128 * half + 32 * j + l;
                    y[i] = if q3 {
                        let third = (blk[l] >> (4 * half + j)) & 1;
                        let dl = d * f32::from(signed[s]);
                        dl * f32::from(q as i8 - if third == 0 { 4 } else { 0 })
                    } else {
                        let sc = blk[s];
                        let (dl, ml) = (d * f32::from(sc & 0x0F), dmin * f32::from(sc >> 4));
                        dl * f32::from(q) - ml
                    };
                }
            }
        }
    }
}

/// ggml's `get_scale_min_k4` for all 8 sub-blocks of a Q4_K block.
pub(crate) fn q4k_scales(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}
