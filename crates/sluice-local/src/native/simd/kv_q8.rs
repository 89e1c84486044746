//! The Q8_0 KV cache's kernels: keys and values stored as GGUF's Q8_0 blocks (an f16 scale and
//! 32 signed bytes: 34 bytes for 32 values, 53% of F16), as llama.cpp's `--cache-type-k/-v
//! q8_0` cache holds them.
//!
//! As there, a block is quantized with `scale = max|x| / 127` and each value rounded to the
//! nearest integer; the query is quantized the same way (per head, in blocks of 32) so that a
//! score is integer products summed exactly and scaled once per block; the values are
//! dequantized as they are added, with the softmax weights in F32. The attention over them is
//! [`super::attend_q8_0`].

use std::arch::x86_64::*;

use super::super::format::f16_to_f32;
use super::lanes::{dot_u8i8, hsum_ps, u16_at};

/// Bytes of one Q8_0 block of 32 values.
pub(crate) const BLOCK_BYTES: usize = 34;

/// One block of 32 values quantized: `qs` as ggml's Q8_0 (`scale = max|x| / 127`, each value
/// rounded half away from zero, as `roundf`); returns the scale as f16 bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_block(xs: &[f32], qs: &mut [i8]) -> u16 {
    let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in qs.iter_mut().zip(xs) {
        // |v · id| ≤ 127.
        let r = v * id;
        *q = (r + 0.5f32.copysign(r)) as i8;
    }
    _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(d))) as u16
}

/// `dst` = `src` in Q8_0 blocks (`src.len() / 32` of them).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn to_q8_0_avx2(src: &[f32], dst: &mut [u8]) {
    let mut qs = [0i8; 32];
    for (xs, blk) in src.chunks_exact(32).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let d = quantize_block(xs, &mut qs);
        blk[..2].copy_from_slice(&d.to_le_bytes());
        for (b, q) in blk[2..].iter_mut().zip(qs) {
            *b = q as u8;
        }
    }
}

/// The query of one head in 8 bits, as ggml quantizes a Q8_0 product's activations: values,
/// and one scale per block of 32 (rounded to f16, as its blocks store it).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn quantize_query(q: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let mut qs = vec![0i8; q.len()];
    let ds = q
        .chunks_exact(32)
        .zip(qs.chunks_exact_mut(32))
        .map(|(xs, out)| f16_to_f32(quantize_block(xs, out)))
        .collect();
    (qs, ds)
}

/// `Σ q · k` over the `ds.len()` blocks of the key at `key`: integer products per block, each
/// block's sum scaled by both scales.
///
/// # Safety
/// AVX2/FMA/F16C present; `key` valid for `ds.len()` blocks and `qs` for `32 · ds.len()` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn score(key: *const u8, qs: &[i8], ds: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, &dq) in ds.iter().enumerate() {
        // SAFETY: block `b < ds.len()` of the key (34 bytes at `34 · b`) and of the query.
        unsafe {
            let blk = key.add(BLOCK_BYTES * b);
            let dk = f16_to_f32(u16_at(blk));
            let k = _mm256_loadu_si256(blk.add(2).cast());
            let x = _mm256_loadu_si256(qs.as_ptr().add(32 * b).cast());
            let p = _mm256_cvtepi32_ps(dot_u8i8(_mm256_sign_epi8(k, k), _mm256_sign_epi8(x, k)));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dk * dq), p, acc);
        }
    }
    hsum_ps(acc)
}

/// `out += w · v` for the value at `value`, dequantized block by block.
///
/// # Safety
/// AVX2/FMA/F16C present; `value` valid for `out.len() / 32` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn add_value(out: &mut [f32], w: f32, value: *const u8) {
    for (b, o) in out.chunks_exact_mut(32).enumerate() {
        // SAFETY: block `b` of the value; `o` holds 32 floats.
        unsafe {
            let blk = value.add(BLOCK_BYTES * b);
            let s = _mm256_set1_ps(w * f16_to_f32(u16_at(blk)));
            for j in 0..4 {
                let bytes = _mm_loadl_epi64(blk.add(2 + 8 * j).cast());
                let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                let p = o.as_mut_ptr().add(8 * j);
                _mm256_storeu_ps(p, _mm256_fmadd_ps(s, v, _mm256_loadu_ps(p)));
            }
        }
    }
}
