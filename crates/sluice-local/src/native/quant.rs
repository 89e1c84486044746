//! GGUF weight matrices as stored in the file (Q4_0 and Q8_0 repacked), their scalar
//! dequantization, and the length-checked, safe entry to the [`simd`] kernels
//! ([`QMatrix::dot_rows`]) for the activations of [`super::acts`].
//!
//! Weights stay in their GGUF block layout, byte for byte: a matrix is `rows` rows of `cols`
//! values, each row a run of blocks. Scalar dequantization ([`QMatrix::dequantize_row`]) is the
//! reference the kernels are tested against and the embedding lookup.

use std::sync::Arc;

use super::acts::Acts;
use super::format::{f16_to_f32, QType};
use super::simd::{self, Isa};

/// A weight matrix: `rows` rows of `cols` values in the GGUF bytes of `qtype` (Q4_0 and Q8_0
/// repacked, see [`repack`]), a view into a buffer shared by all of a model's matrices.
#[derive(Debug, Clone)]
pub(crate) struct QMatrix {
    pub(crate) qtype: QType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    row_bytes: usize,
    blob: Arc<Vec<u8>>,
    offset: usize,
}

/// Bytes of one row of `cols` values of `qtype`; `None` when `cols` is not a whole number of
/// blocks.
pub(crate) fn row_bytes(qtype: QType, cols: usize) -> Option<usize> {
    (cols > 0 && cols % qtype.block() == 0).then(|| cols / qtype.block() * qtype.block_bytes())
}

/// Rearranges rows of `cols` values of `qtype`, as stored in GGUF, into the layout the kernels
/// read (a no-op except for Q4_0 and Q8_0); `data` must be whole rows.
pub(crate) fn repack(qtype: QType, cols: usize, data: &mut [u8]) {
    let (Some(scale_run), Some(row_bytes)) = (packed_scales(qtype), row_bytes(qtype, cols)) else {
        return;
    };
    let mut packed = vec![0u8; row_bytes];
    for row in data.chunks_exact_mut(row_bytes) {
        pack(row, &mut packed, scale_run);
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
        Self::view(qtype, rows, cols, &Arc::new(data), 0)
    }

    /// The matrix at `offset` of `blob`, already [`repack`]ed; `None` when `cols` is not a
    /// multiple of the block or the rows run past the end.
    pub(crate) fn view(
        qtype: QType,
        rows: usize,
        cols: usize,
        blob: &Arc<Vec<u8>>,
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
        match packed_scales(self.qtype) {
            Some(scale_run) => {
                let mut raw = vec![0u8; row.len()];
                unpack(row, &mut raw, scale_run);
                dequantize(self.qtype, &raw, &mut out[..self.cols]);
            }
            None => dequantize(self.qtype, row, &mut out[..self.cols]),
        }
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
        let mut t = 0;
        while t + 4 <= m {
            simd::rows::<4>(isa, self.qtype, data, self.cols, acts, t, &mut out[t..], m);
            t += 4;
        }
        while t < m {
            simd::rows::<1>(isa, self.qtype, data, self.cols, acts, t, &mut out[t..], m);
            t += 1;
        }
    }
}

/// For the formats held repacked, the bytes of a block after its f16 scale.
///
/// Q4_0 and Q8_0 rows are held as all the blocks' scales first, then all their values, so the
/// kernels convert 8 scales with one instruction. Same bytes, another order.
fn packed_scales(qtype: QType) -> Option<usize> {
    match qtype {
        QType::Q4_0 => Some(16),
        QType::Q8_0 => Some(32),
        _ => None,
    }
}

/// GGUF blocks (`scale, values`)* → `scale* values*`; Q4_0's values (16-byte runs) also go
/// pair by pair into [`interleave`]'s order.
fn pack(raw: &[u8], packed: &mut [u8], run: usize) {
    let blocks = raw.len() / (run + 2);
    let (scales, values) = packed.split_at_mut(2 * blocks);
    for (b, blk) in raw.chunks_exact(run + 2).enumerate() {
        scales[2 * b..2 * b + 2].copy_from_slice(&blk[..2]);
        values[run * b..run * (b + 1)].copy_from_slice(&blk[2..]);
    }
    if run == 16 {
        for pair in values.chunks_exact_mut(32) {
            let mut out = [0u8; 32];
            interleave(pair, &mut out);
            pair.copy_from_slice(&out);
        }
    }
}

/// The inverse of [`pack`].
fn unpack(packed: &[u8], raw: &mut [u8], run: usize) {
    let blocks = packed.len() / (run + 2);
    let (scales, values) = packed.split_at(2 * blocks);
    let mut values = values.to_vec();
    if run == 16 {
        for pair in values.chunks_exact_mut(32) {
            let mut out = [0u8; 32];
            deinterleave(pair, &mut out);
            pair.copy_from_slice(&out);
        }
    }
    for (b, blk) in raw.chunks_exact_mut(run + 2).enumerate() {
        blk[..2].copy_from_slice(&scales[2 * b..2 * b + 2]);
        blk[2..].copy_from_slice(&values[run * b..run * (b + 1)]);
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
