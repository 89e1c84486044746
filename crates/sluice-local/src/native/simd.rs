//! x86-64 kernels (AVX2, FMA, F16C): the dot products of GGUF weight rows with activations,
//! `N` activation rows at a time so a weight block is unpacked once for all of them.
//!
//! Integer kernels follow ggml's arithmetic: activations are quantized to 8 bits (blocks of 32
//! with one scale for Q4_0/Q8_0 weights, blocks of 256 with per-16 sums for the K-quants), the
//! products of weight and activation integers are summed exactly in `i32`, and each block's sum
//! is scaled once in `f32`. `maddubs` multiplies unsigned weight bytes with signed activation
//! bytes into saturating `i16` pairs; every weight format here stays below saturation
//! (`63 · 127 · 2 < 2¹⁵`), Q8_0 by moving its sign onto the activation.
//!
//! Every function is `unsafe`: the caller must have checked the CPU features ([`Isa::detect`])
//! and pass pointers valid for the lengths the block counts imply. [`super::quant`] wraps them
//! in safe, length-checked calls.

// Unsafe: the kernels read weight and activation buffers through raw pointers with x86
// intrinsics, on CPU features the caller has checked (`Isa`).
#![allow(unsafe_code)]

mod attention;
mod kquants;
mod kv_q8;
mod lane_order;
mod lanes;
mod legacy;

use std::arch::x86_64::*;

use super::acts::{Acts, Q8KPtr, Q8Ptr};
use super::format::{f16_to_f32, QType};
use attention::{axpy_f16, axpy_f16_avx512, to_f16_avx2};
use kquants::*;
pub(crate) use kv_q8::BLOCK_BYTES as Q8_0_BLOCK_BYTES;
use kv_q8::{add_value, quantize_query, score, to_q8_0_avx2};
use lane_order::*;
use lanes::*;
use legacy::*;

/// Proof that the CPU runs the kernels of this module (AVX2, FMA, F16C), and whether it also
/// has AVX-512 with VNNI (`vpdpbusd`: 64 byte products per instruction).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Isa {
    avx512: bool,
}

// === impl Isa ===

impl Isa {
    /// `Some` when the CPU has AVX2, FMA and F16C.
    pub(crate) fn detect() -> Option<Self> {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        // The unit tests can run every model and kernel on the AVX2 kernels alone.
        #[cfg(test)]
        let avx512 = avx512 && std::env::var_os("SLUICE_TEST_AVX2_ONLY").is_none();
        avx2.then_some(Self { avx512 })
    }

    /// Whether the kernels run 8 activation rows at a time (AVX-512: 32 vector registers).
    pub(crate) fn wide(self) -> bool {
        self.avx512
    }

    /// The same CPU limited to AVX2 (to test the AVX2 kernels on an AVX-512 machine).
    #[cfg(test)]
    pub(crate) fn avx2_only(self) -> Self {
        Self { avx512: false }
    }

    /// Whether the AVX-512 VNNI kernels run.
    #[cfg(test)]
    pub(crate) fn has_avx512(self) -> bool {
        self.avx512
    }
}

/// [`q8_0`] on AVX-512 VNNI: a pair of blocks per `vpdpbusd`, the weights made unsigned by
/// `+ 128` (a flip of the top bit) and `128 · Σx` taken off per group.
///
/// # Safety
/// As [`q8_0`], and the CPU has AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn q8_0_avx512<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8Ptr; N],
) -> [f32; N] {
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [[_mm512_setzero_ps(); 2]; N];
    let mut fix = [_mm256_setzero_ps(); N];
    // SAFETY: `row` holds `blocks` 2-byte scales before the values (the caller's contract), so
    // `row + 2 · blocks` stays inside it.
    let qs = unsafe { row.add(2 * blocks) };
    let groups = blocks / 8;
    for g in 0..groups {
        // SAFETY: group `g < blocks / 8`: its 8 scales and the 256 bytes of values at
        // `qs + 256 · g` lie inside `row`; each 64-byte load at `32 · b` is blocks `b` and
        // `b + 1 < 8g + 8 <= blocks`, of the row and of each activation row (the caller's
        // contract). Prefetches never fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(256 * g + PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(256 * g + 128 + PREFETCH).cast());
            let ds = group_scales(row, g, &a, Some(&mut fix));
            for j in 0..4 {
                let b = 8 * g + 2 * j;
                let w = _mm512_xor_si512(_mm512_loadu_si512(qs.add(32 * b).cast()), flip);
                let k = if N == 1 { j & 1 } else { 0 };
                for t in 0..N {
                    let x = _mm512_loadu_si512(a[t].qs.add(32 * b).cast());
                    let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x));
                    acc[t][k] = _mm512_fmadd_ps(pair_scales(ds[t], j), p, acc[t][k]);
                }
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum512(_mm512_add_ps(acc[t][0], acc[t][1])) - 128.0 * hsum_ps(fix[t]);
    }
    for b in 8 * groups..blocks {
        // SAFETY: `b < blocks`: block `b`'s scale (at `2 · b`) and 32 values (at `qs + 32 · b`) lie
        // inside `row`, and each activation row holds block `b`'s 32 values and scale.
        unsafe {
            let dw = f16_to_f32(u16_at(row.add(2 * b)));
            let w = _mm256_loadu_si256(qs.add(32 * b).cast());
            let abs = _mm256_sign_epi8(w, w);
            for t in 0..N {
                let x = _mm256_loadu_si256(a[t].qs.add(32 * b).cast());
                let p = hsum_epi32(dot_u8i8(abs, _mm256_sign_epi8(x, w))) as f32;
                out[t] += dw * *a[t].d.add(b) * p;
            }
        }
    }
    out
}

/// Q8_0 row, repacked: `blocks` f16 scales, then `blocks` × 32 signed bytes · `N` Q8 rows.
///
/// # Safety
/// AVX2/FMA/F16C present; `row` valid for `blocks × 34` bytes and each activation for
/// `blocks × 32` values and `blocks` scales.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_0<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8Ptr; N],
) -> [f32; N] {
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    // SAFETY: `row` holds `blocks` 2-byte scales before the values (the caller's contract), so
    // `row + 2 · blocks` stays inside it.
    let qs = unsafe { row.add(2 * blocks) };
    let groups = blocks / 8;
    for g in 0..groups {
        // SAFETY: group `g < blocks / 8`: its 8 scales and the 256 bytes of values at
        // `qs + 256 · g` lie inside `row`, and each activation row holds blocks `8g .. 8g + 8`
        // (values, scales), as the caller guarantees. Prefetches never fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(256 * g + PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(256 * g + 128 + PREFETCH).cast());
            let ds = group_scales(row, g, &a, None);
            for j in 0..8 {
                let b = 8 * g + j;
                let w = _mm256_loadu_si256(qs.add(32 * b).cast());
                let abs = _mm256_sign_epi8(w, w);
                let k = if N == 1 { j & 1 } else { 0 };
                for t in 0..N {
                    let x = _mm256_loadu_si256(a[t].qs.add(32 * b).cast());
                    let p = _mm256_cvtepi32_ps(dot_u8i8(abs, _mm256_sign_epi8(x, w)));
                    let scale = _mm256_permutevar8x32_ps(ds[t], _mm256_set1_epi32(j as i32));
                    acc[t][k] = _mm256_fmadd_ps(scale, p, acc[t][k]);
                }
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(_mm256_add_ps(acc[t][0], acc[t][1]));
    }
    for b in 8 * groups..blocks {
        // SAFETY: `b < blocks`: block `b`'s scale (at `2 · b`) and 32 values (at `qs + 32 · b`) lie
        // inside `row`, and each activation row holds block `b`'s 32 values and scale.
        unsafe {
            let dw = f16_to_f32(u16_at(row.add(2 * b)));
            let w = _mm256_loadu_si256(qs.add(32 * b).cast());
            let abs = _mm256_sign_epi8(w, w);
            for t in 0..N {
                let x = _mm256_loadu_si256(a[t].qs.add(32 * b).cast());
                let p = hsum_epi32(dot_u8i8(abs, _mm256_sign_epi8(x, w))) as f32;
                out[t] += dw * *a[t].d.add(b) * p;
            }
        }
    }
    out
}

/// Q4_K row (`blocks` × 144 bytes, as stored) · `N` Q8_K rows.
///
/// A block: f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles; value
/// `i` of sub-block `j` is `d · sc[j] · q − dmin · mn[j]`.
///
/// # Safety
/// AVX2/FMA/F16C present; `row` valid for `blocks × 144` bytes and each activation for
/// `blocks × 256` values, `blocks` scales and `blocks × 16` sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8KPtr; N],
) -> [f32; N] {
    let mask = _mm256_set1_epi8(0x0F);
    // Byte pairs (2j, 2j+1) everywhere: broadcasts i16 lane j of a register.
    let pick: [__m256i; 8] =
        std::array::from_fn(|j| _mm256_set1_epi16((((2 * j + 1) << 8) | (2 * j)) as i16));
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY: `b < blocks`: block `b`'s 144 bytes (`blk`; `q4k_header` reads its first 16, the
        // values are the 128 after them) lie inside `row`, and each activation row holds block
        // `b`'s 256 values, its scale and its 16 sums (`q4k_mins`), as the caller guarantees.
        unsafe {
            let blk = row.add(b * 144);
            let (d, dmin, scales, mins) = q4k_header(blk);
            let sc16 = _mm256_broadcastsi128_si256(scales);
            let qs = blk.add(16);
            let mut sumi = [_mm256_setzero_si256(); N];
            for c in 0..4 {
                let q = _mm256_loadu_si256(qs.add(32 * c).cast());
                let lo = _mm256_and_si256(q, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
                let s_lo = _mm256_shuffle_epi8(sc16, pick[2 * c]);
                let s_hi = _mm256_shuffle_epi8(sc16, pick[2 * c + 1]);
                for t in 0..N {
                    let x = a[t].qs.add(b * 256 + 64 * c);
                    let x_lo = _mm256_loadu_si256(x.cast());
                    let x_hi = _mm256_loadu_si256(x.add(32).cast());
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x_lo), s_lo);
                    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x_hi), s_hi);
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p_lo, p_hi));
                }
            }
            for t in 0..N {
                let da = *a[t].d.add(b);
                acc[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(d * da), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
                acc_min[t] = q4k_mins(acc_min[t], a[t].bsums.add(b * 16), mins, dmin * da);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]) - hsum_ps(acc_min[t]);
    }
    out
}

/// [`q4_k`] on AVX-512: a chunk of 64 values (two sub-blocks) is one register, multiplied by
/// `vpmaddubsw` and scaled and summed by `vpdpwssd`.
///
/// # Safety
/// As [`q4_k`], and the CPU has AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn q4_k_avx512<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8KPtr; N],
) -> [f32; N] {
    let mask = _mm512_set1_epi8(0x0F);
    // i16 lane 2c of the 8 scales in the low half, 2c + 1 in the high half (each 128-bit lane
    // holds a copy of the scales; `vpshufb` picks within it).
    let pick: [__m512i; 4] = std::array::from_fn(|c| {
        let lo = (((4 * c + 1) << 8) | (4 * c)) as i16;
        let hi = (((4 * c + 3) << 8) | (4 * c + 2)) as i16;
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
            _mm256_set1_epi16(hi),
        )
    });
    let mut acc = [_mm512_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY: `b < blocks`: block `b`'s 144 bytes (`blk`; `q4k_header` reads its first 16, the
        // values are the 128 after them) lie inside `row`, and each activation row holds block
        // `b`'s 256 values, its scale and its 16 sums (`q4k_mins`), as the caller guarantees.
        // Prefetches never fault.
        unsafe {
            let blk = row.add(b * 144);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 128).cast());
            let (d, dmin, scales, mins) = q4k_header(blk);
            let sc16 = _mm512_broadcast_i32x4(scales);
            let qs = blk.add(16);
            let mut sumi = [_mm512_setzero_si512(); N];
            for (c, pick) in pick.iter().enumerate() {
                let raw = _mm256_loadu_si256(qs.add(32 * c).cast());
                let w = _mm512_and_si512(
                    _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(raw),
                        _mm256_srli_epi16::<4>(raw),
                    ),
                    mask,
                );
                let scale = _mm512_shuffle_epi8(sc16, *pick);
                for t in 0..N {
                    let x = _mm512_loadu_si512(a[t].qs.add(b * 256 + 64 * c).cast());
                    let p = _mm512_maddubs_epi16(w, x);
                    sumi[t] = _mm512_dpwssd_epi32(sumi[t], p, scale);
                }
            }
            for t in 0..N {
                let da = *a[t].d.add(b);
                acc[t] =
                    _mm512_fmadd_ps(_mm512_set1_ps(d * da), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
                acc_min[t] = q4k_mins(acc_min[t], a[t].bsums.add(b * 16), mins, dmin * da);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum512(acc[t]) - hsum_ps(acc_min[t]);
    }
    out
}

/// Q6_K row (`blocks` × 210 bytes, as stored) · `N` Q8_K rows.
///
/// A block: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed 8-bit scales (one per
/// 16 values), f16 `d`; value `i` is `d · sc[i / 16] · (q − 32)` with `q` in `0..64`.
///
/// # Safety
/// As [`q4_k`], with 210-byte blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q6_k<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8KPtr; N],
) -> [f32; N] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x03);
    // Scales 2i (low half) and 2i+1 (high half) as i16 lanes, from the 16 scales widened.
    let pick: [__m256i; 4] = std::array::from_fn(|i| {
        let lo = (((4 * i + 1) << 8) | (4 * i)) as i16;
        let hi = (((4 * i + 3) << 8) | (4 * i + 2)) as i16;
        _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
    });
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY: `b < blocks`: block `b`'s 210 bytes (`blk`: low nibbles at 0, high bits at 128,
        // scales at 192, `d` at 208) lie inside `row`, and each activation row holds block `b`'s
        // 256 values, its scale and its 16 sums, as the caller guarantees.
        unsafe {
            let blk = row.add(b * 210);
            let scales = blk.add(192);
            let d = f16_to_f32(u16_at(blk.add(208)));
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales.cast()));
            let mut sumi = [_mm256_setzero_si256(); N];
            for half in 0..2 {
                let ql = blk.add(64 * half);
                let qh = _mm256_loadu_si256(blk.add(128 + 32 * half).cast());
                let ql0 = _mm256_loadu_si256(ql.cast());
                let ql1 = _mm256_loadu_si256(ql.add(32).cast());
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(qh), m2)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(qh), m2)),
                    ),
                ];
                // This half's 8 scales sit in i16 lanes 8·half .. 8·half + 8 of `sc16`.
                let sc_half = if half == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc16, sc16)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc16, sc16)
                };
                for (i, q) in q.iter().enumerate() {
                    let s = _mm256_shuffle_epi8(sc_half, pick[i]);
                    for t in 0..N {
                        let x =
                            _mm256_loadu_si256(a[t].qs.add(b * 256 + 128 * half + 32 * i).cast());
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*q, x), s);
                        sumi[t] = _mm256_add_epi32(sumi[t], p);
                    }
                }
            }
            // The stored q is the value + 32: subtract 32 · Σ sc[g] · sum16[g].
            for t in 0..N {
                let bs = _mm256_loadu_si256(a[t].bsums.add(b * 16).cast());
                let fix = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, sc16));
                let s = _mm256_sub_epi32(sumi[t], fix);
                let scale = _mm256_set1_ps(d * *a[t].d.add(b));
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[t]);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]);
    }
    out
}

/// [`q6_k`] on AVX-512: 64 values per register (`ql` low or high nibbles of 64 bytes, with
/// their two high bits), multiplied by `vpmaddubsw`, scaled per 16 values and summed by
/// `vpdpwssd`.
///
/// # Safety
/// As [`q6_k`], and the CPU has AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn q6_k_avx512<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8KPtr; N],
) -> [f32; N] {
    let m4 = _mm512_set1_epi8(0x0F);
    let m2 = _mm512_set1_epi8(0x03);
    // Scale `first + k` in 128-bit lane `k` (as i16 lanes), from the 16 scales widened.
    let spread = |first: i16| {
        let f = first;
        _mm512_set_epi16(
            f + 3,
            f + 3,
            f + 3,
            f + 3,
            f + 3,
            f + 3,
            f + 3,
            f + 3,
            f + 2,
            f + 2,
            f + 2,
            f + 2,
            f + 2,
            f + 2,
            f + 2,
            f + 2,
            f + 1,
            f + 1,
            f + 1,
            f + 1,
            f + 1,
            f + 1,
            f + 1,
            f + 1,
            f,
            f,
            f,
            f,
            f,
            f,
            f,
            f,
        )
    };
    let idx = [spread(0), spread(4), spread(8), spread(12)];
    let mut acc = [_mm512_setzero_ps(); N];
    let mut acc_fix = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY: `b < blocks`: block `b`'s 210 bytes (`blk`: low nibbles at 0, high bits at 128,
        // scales at 192, `d` at 208) lie inside `row`, and each activation row holds block `b`'s
        // 256 values, its scale and its 16 sums, as the caller guarantees. Prefetches never fault.
        unsafe {
            let blk = row.add(b * 210);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 128).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 192).cast());
            let scales = blk.add(192);
            let d = f16_to_f32(u16_at(blk.add(208)));
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales.cast()));
            let sc512 = _mm512_castsi256_si512(sc16);
            let mut sumi = [_mm512_setzero_si512(); N];
            for half in 0..2 {
                let ql = _mm512_loadu_si512(blk.add(64 * half).cast());
                let qh = _mm256_loadu_si256(blk.add(128 + 32 * half).cast());
                let qhz =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
                let q = [
                    _mm512_or_si512(
                        _mm512_and_si512(ql, m4),
                        _mm512_slli_epi16::<4>(_mm512_and_si512(qhz, m2)),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                        _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<4>(qhz), m2)),
                    ),
                ];
                for (i, q) in q.iter().enumerate() {
                    let scale = _mm512_permutexvar_epi16(idx[2 * half + i], sc512);
                    for t in 0..N {
                        let x =
                            _mm512_loadu_si512(a[t].qs.add(b * 256 + 128 * half + 64 * i).cast());
                        sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(*q, x), scale);
                    }
                }
            }
            for t in 0..N {
                let dd = _mm512_set1_ps(d * *a[t].d.add(b));
                acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(sumi[t]), acc[t]);
                // The stored q is the value + 32: take 32 · Σ sc[g] · sum16[g] off.
                let bs = _mm256_loadu_si256(a[t].bsums.add(b * 16).cast());
                let fix = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, sc16));
                acc_fix[t] = _mm256_fmadd_ps(_mm512_castps512_ps256(dd), fix, acc_fix[t]);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum512(acc[t]) - 32.0 * hsum_ps(acc_fix[t]);
    }
    out
}

/// F16 row · `N` f32 rows of `n` values.
///
/// # Safety
/// AVX2/FMA/F16C present; `row` valid for `n` halves and each activation for `n` floats.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16<const N: usize>(row: *const u8, n: usize, a: [*const f32; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let w16 = row.cast::<u16>();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`: 8 halves of `row` and 8 floats of each activation row at `i`,
        // inside the `n` values the caller guarantees.
        unsafe {
            let w = _mm256_cvtph_ps(_mm_loadu_si128(w16.add(i).cast()));
            for t in 0..N {
                acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(a[t].add(i)), acc[t]);
            }
        }
        i += 8;
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]);
    }
    for j in i..n {
        // SAFETY: `j < n`: half `j` of `row`, which the caller guarantees holds `n`.
        let w = f16_to_f32(unsafe { u16_at(row.add(2 * j)) });
        for t in 0..N {
            // SAFETY: `j < n`: value `j` of activation row `t`, which the caller guarantees holds
            // `n`.
            out[t] += w * unsafe { *a[t].add(j) };
        }
    }
    out
}

/// BF16 row · `N` f32 rows of `n` values: a bfloat16 is the top half of an f32, widened by a
/// shift.
///
/// # Safety
/// AVX2/FMA present; `row` valid for `n` bfloat16 values and each activation for `n` floats.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bf16<const N: usize>(
    row: *const u8,
    n: usize,
    a: [*const f32; N],
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let w16 = row.cast::<u16>();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`: 8 values of `row` and 8 floats of each activation row at `i`,
        // inside the `n` values the caller guarantees.
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(w16.add(i).cast()));
            let w = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide));
            for t in 0..N {
                acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(a[t].add(i)), acc[t]);
            }
        }
        i += 8;
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]);
    }
    for j in i..n {
        // SAFETY: `j < n`: value `j` of `row`, which the caller guarantees holds `n`.
        let w = f32::from_bits(u32::from(unsafe { u16_at(row.add(2 * j)) }) << 16);
        for t in 0..N {
            // SAFETY: `j < n`: value `j` of activation row `t`, which the caller guarantees holds
            // `n`.
            out[t] += w * unsafe { *a[t].add(j) };
        }
    }
    out
}

/// F32 row · `N` f32 rows of `n` values.
///
/// # Safety
/// AVX2/FMA present; `row` valid for `n` floats (any alignment) and each activation too.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32<const N: usize>(row: *const u8, n: usize, a: [*const f32; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let w32 = row.cast::<f32>();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`: 8 floats of `row` (unaligned load) and of each activation row at
        // `i`, inside the `n` values the caller guarantees.
        unsafe {
            let w = _mm256_loadu_ps(w32.add(i));
            for t in 0..N {
                acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(a[t].add(i)), acc[t]);
            }
        }
        i += 8;
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]);
    }
    for j in i..n {
        // SAFETY: `j < n`: float `j` of `row` (unaligned read), which the caller guarantees holds
        // `n`.
        let w = unsafe { w32.add(j).read_unaligned() };
        for t in 0..N {
            // SAFETY: `j < n`: value `j` of activation row `t`, which the caller guarantees holds
            // `n`.
            out[t] += w * unsafe { *a[t].add(j) };
        }
    }
    out
}

/// F32, F16 and BF16 rows · `N` f32 rows of `n` values on AVX-512: 16 weights per
/// multiply-add, widened by `$load` from the weights at `$p`; the last `n % 16` values on the
/// AVX2 kernel of the same format.
macro_rules! wide_kernels {
    ($($name:ident, $tail:ident, $bytes:literal, |$p:ident| $load:expr, $what:literal;)*) => {$(
        #[doc = concat!("[`", stringify!($tail), "`] on AVX-512: ", $what, ".")]
        ///
        /// # Safety
        #[doc = concat!("As [`", stringify!($tail), "`], and the CPU has AVX-512F/BW.")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
        pub(crate) unsafe fn $name<const N: usize>(
            row: *const u8,
            n: usize,
            a: [*const f32; N],
        ) -> [f32; N] {
            let mut acc = [_mm512_setzero_ps(); N];
            let mut i = 0;
            while i + 16 <= n {
                // SAFETY: `i + 16 <= n`: 16 weights of `row` (`$bytes` each) and 16 floats of
                // each activation row at `i`, inside the `n` values the caller guarantees.
                unsafe {
                    let $p = row.add($bytes * i);
                    let w = $load;
                    for t in 0..N {
                        acc[t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(a[t].add(i)), acc[t]);
                    }
                }
                i += 16;
            }
            let rest = a.map(|p| p.wrapping_add(i));
            // SAFETY: the values `i..n` (`i <= n`) of the same row and activation rows, in the
            // same format, on a CPU with AVX2/FMA/F16C.
            let mut out = unsafe { $tail::<N>(row.add($bytes * i), n - i, rest) };
            for t in 0..N {
                out[t] += _mm512_reduce_add_ps(acc[t]);
            }
            out
        }
    )*};
}

wide_kernels! {
    f32_avx512, f32, 4, |p| _mm512_loadu_ps(p.cast()), "16 floats per load";
    f16_avx512, f16, 2, |p| _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
        "16 halves converted per instruction";
    bf16_avx512, bf16, 2,
        |p| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
            _mm256_loadu_si256(p.cast()),
        ))),
        "16 values widened per shift";
}

/// `Σ a[i] · b[i]` (attention scores).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, both slices hold n values.
        unsafe {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                acc1,
            );
        }
        i += 16;
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    for j in i..n {
        sum += a[j] * b[j];
    }
    sum
}

/// `y += s · x` (attention's weighted sum of values).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn axpy_avx2(y: &mut [f32], s: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, both slices hold n values.
        unsafe {
            let p = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                p,
                _mm256_fmadd_ps(sv, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)),
            );
        }
        i += 8;
    }
    for j in i..n {
        y[j] += s * x[j];
    }
}

/// `e^x` for 8 lanes: `2^n · p(r)` with `x = n·ln2 + r`, `|r| ≤ ln2/2`, a degree-6 polynomial
/// (relative error below 2e-7 over the range softmax and SiLU use; `x < -87` gives 0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp_ps(x: __m256) -> __m256 {
    let x = _mm256_max_ps(
        _mm256_min_ps(x, _mm256_set1_ps(88.0)),
        _mm256_set1_ps(-87.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // r = x - n·ln2, in two parts for precision.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 120.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 24.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 6.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow2))
}

/// `x[i] = e^(x[i] − max)` in place; returns the sum (softmax's numerator and denominator).
#[target_feature(enable = "avx2,fma,f16c")]
fn exp_sub_sum_avx2(x: &mut [f32], max: f32) -> f32 {
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= x.len() {
        // SAFETY: i + 8 <= len.
        unsafe {
            let p = x.as_mut_ptr().add(i);
            let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p), m));
            _mm256_storeu_ps(p, e);
            acc = _mm256_add_ps(acc, e);
        }
        i += 8;
    }
    let mut sum = hsum_ps(acc);
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

/// `gate[i] = silu(gate[i]) · up[i]` (the SwiGLU feed-forward's activation).
#[target_feature(enable = "avx2,fma,f16c")]
fn silu_mul_avx2(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, both slices hold n values.
        unsafe {
            let p = gate.as_mut_ptr().add(i);
            let g = _mm256_loadu_ps(p);
            let e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(p, _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))));
        }
        i += 8;
    }
    for j in i..n {
        let g = gate[j];
        gate[j] = g / (1.0 + (-g).exp()) * up[j];
    }
}

/// [`silu_mul_avx2`] behind the CPU proof.
pub(crate) fn silu_mul(_: Isa, gate: &mut [f32], up: &[f32]) {
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { silu_mul_avx2(gate, up) }
}

/// `out[i · stride + t] = row i · acts[t0 + t]` for `t < N` and every row of `data`: rows of
/// `cols` values in `qtype`'s blocks, one after the other.
///
/// # Panics
/// When `data` is not whole rows, `acts` is not `cols` wide, lacks the form `qtype` multiplies
/// with or has fewer than `t0 + N` rows, or `out` is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows<const N: usize>(
    isa: Isa,
    qtype: QType,
    data: &[u8],
    cols: usize,
    acts: &Acts,
    t0: usize,
    out: &mut [f32],
    stride: usize,
) {
    let blocks = cols / qtype.block();
    let row_bytes = blocks * qtype.block_bytes();
    assert!(cols % qtype.block() == 0 && data.len() % row_bytes == 0);
    assert!(acts.k == cols && t0 + N <= acts.m && acts.has_form_of(qtype));
    let n = data.len() / row_bytes;
    assert!(n == 0 || out.len() >= (n - 1) * stride + N);
    macro_rules! each_row {
        ($kernel:ident, $ptrs:expr, $len:expr) => {{
            let ptrs = $ptrs;
            for (i, row) in data.chunks_exact(row_bytes).enumerate() {
                // SAFETY: `Isa` proves the CPU features (the AVX-512 ones are checked by the caller
                // of this arm); `row` holds exactly `blocks` blocks; the activation pointers come
                // from `Acts`, whose buffers hold `m` rows of `k == cols` values (with one scale
                // per block and the sums) in the form `qtype` needs, and `t0 + N <= m` (all
                // asserted above).
                let r = unsafe { $kernel::<N>(row.as_ptr(), $len, ptrs) };
                out[i * stride..i * stride + N].copy_from_slice(&r);
            }
        }};
    }
    match qtype {
        QType::Q4_0 if isa.avx512 => each_row!(q4_0_avx512, acts.q8_lane_ptrs::<N>(t0), blocks),
        QType::Q4_0 => each_row!(q4_0, acts.q8_lane_ptrs::<N>(t0), blocks),
        QType::Q4_1 if isa.avx512 => each_row!(q4_1_avx512, acts.q8_ptrs::<N>(t0), blocks),
        QType::Q4_1 => each_row!(q4_1, acts.q8_ptrs::<N>(t0), blocks),
        QType::Q5_0 if isa.avx512 => each_row!(q5_0_avx512, acts.q8_lane_ptrs::<N>(t0), blocks),
        QType::Q5_0 => each_row!(q5_0, acts.q8_lane_ptrs::<N>(t0), blocks),
        QType::Q5_1 if isa.avx512 => each_row!(q5_1_avx512, acts.q8_ptrs::<N>(t0), blocks),
        QType::Q5_1 => each_row!(q5_1, acts.q8_ptrs::<N>(t0), blocks),
        QType::Q8_0 if isa.avx512 => each_row!(q8_0_avx512, acts.q8_ptrs::<N>(t0), blocks),
        QType::Q8_0 => each_row!(q8_0, acts.q8_ptrs::<N>(t0), blocks),
        QType::Q4K if isa.avx512 => each_row!(q4_k_avx512, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q4K => each_row!(q4_k, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q2K if isa.avx512 => each_row!(q2_k_avx512, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q2K => each_row!(q2_k, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q3K if isa.avx512 => each_row!(q3_k_avx512, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q3K => each_row!(q3_k, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q5K if isa.avx512 => each_row!(q5_k_avx512, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q5K => each_row!(q5_k, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q6K if isa.avx512 => each_row!(q6_k_avx512, acts.q8k_ptrs::<N>(t0), blocks),
        QType::Q6K => each_row!(q6_k, acts.q8k_ptrs::<N>(t0), blocks),
        QType::F16 if isa.avx512 => each_row!(f16_avx512, acts.f32_ptrs::<N>(t0), cols),
        QType::F16 => each_row!(f16, acts.f32_ptrs::<N>(t0), cols),
        QType::BF16 if isa.avx512 => each_row!(bf16_avx512, acts.f32_ptrs::<N>(t0), cols),
        QType::BF16 => each_row!(bf16, acts.f32_ptrs::<N>(t0), cols),
        QType::F32 if isa.avx512 => each_row!(f32_avx512, acts.f32_ptrs::<N>(t0), cols),
        QType::F32 => each_row!(f32, acts.f32_ptrs::<N>(t0), cols),
    }
}

/// How a head's raw scores `q·k` become attention logits: times `scale`, then, where `cap` is
/// set (Gemma 2), soft-capped to `cap · tanh(s / cap)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scoring {
    pub(crate) scale: f32,
    pub(crate) cap: Option<f32>,
}

// === impl Scoring ===

impl Scoring {
    /// `scale` alone.
    #[cfg(test)]
    pub(crate) fn scale(scale: f32) -> Self {
        Self { scale, cap: None }
    }

    #[inline]
    fn apply(self, s: f32) -> f32 {
        let s = s * self.scale;
        match self.cap {
            Some(cap) => cap * (s / cap).tanh(),
            None => s,
        }
    }
}

/// One head's attention over `len` cached positions: `out = softmax(scale · q·kₚ) · vₚ`, where
/// `kₚ`/`vₚ` are `q.len()` values at `p · stride` in `keys`/`values`; `scores` is scratch.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
fn attend_avx2(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    len: usize,
    scoring: Scoring,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(len == 0 || (len - 1) * stride + hd <= keys.len().min(values.len()));
    assert!(out.len() == hd);
    scores.clear();
    scores.resize(len, 0.0);
    let mut max = f32::NEG_INFINITY;
    for (p, score) in scores.iter_mut().enumerate() {
        let s = scoring.apply(dot_avx2(q, &keys[p * stride..p * stride + hd]));
        max = max.max(s);
        *score = s;
    }
    let inv = 1.0 / exp_sub_sum_avx2(scores, max);
    out.fill(0.0);
    for (p, &w) in scores.iter().enumerate() {
        axpy_avx2(out, w * inv, &values[p * stride..p * stride + hd]);
    }
}

/// [`attend_avx2`] behind the CPU proof.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    _: Isa,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    len: usize,
    scoring: Scoring,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { attend_avx2(q, keys, values, stride, len, scoring, scores, out) }
}

/// Writes `src` into the cache `dst` as halves.
///
/// # Panics
/// When the lengths differ.
pub(crate) fn to_f16(_: Isa, src: &[f32], dst: &mut [u16]) {
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { to_f16_avx2(src, dst) }
}

/// One head's attention over `len` cached positions of an F16 cache (`attention`):
/// `out = softmax(scale · q·kₚ) · vₚ`, where
/// `kₚ`/`vₚ` are `q.len()` halves at `p · stride` in `keys`/`values`; `scores` is scratch. The
/// scores are the F16 weight kernel ([`f16`]) over the key rows; the softmax weights are rounded
/// to F16 before they multiply the values, as llama.cpp's F16 product does.
macro_rules! attend_fn {
    ($name:ident, $features:literal, $dot:ident, $axpy:ident) => {
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        fn $name(
            q: &[f32],
            keys: &[u16],
            values: &[u16],
            stride: usize,
            len: usize,
            scoring: Scoring,
            scores: &mut Vec<f32>,
            out: &mut [f32],
        ) {
            let hd = q.len();
            assert!(len == 0 || (len - 1) * stride + hd <= keys.len().min(values.len()));
            assert!(out.len() == hd);
            scores.clear();
            scores.resize(len, 0.0);
            let mut max = f32::NEG_INFINITY;
            for (p, score) in scores.iter_mut().enumerate() {
                let key = keys[p * stride..p * stride + hd].as_ptr().cast();
                // SAFETY: the CPU features are this function's; `key` points at `hd` halves
                // (sliced above) and `q` holds `hd` floats.
                let [s] = unsafe { $dot::<1>(key, hd, [q.as_ptr()]) };
                let s = scoring.apply(s);
                max = max.max(s);
                *score = s;
            }
            let inv = 1.0 / exp_sub_sum_avx2(scores, max);
            out.fill(0.0);
            for (p, &w) in scores.iter().enumerate() {
                let w = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
                    _mm_set_ss(w * inv),
                )));
                // SAFETY: as above for value `p`; `out` holds `hd` floats.
                unsafe { $axpy(out.as_mut_ptr(), w, values.as_ptr().add(p * stride), hd) };
            }
        }
    };
}

attend_fn!(attend_f16_avx2, "avx2,fma,f16c", f16, axpy_f16);
attend_fn!(
    attend_f16_avx512,
    "avx512f,avx512bw,avx512vnni,avx2,fma,f16c",
    f16_avx512,
    axpy_f16_avx512
);

/// One head's attention over the F16 cache, on AVX-512 where the CPU has it.
///
/// # Panics
/// When a position's key or value lies outside `keys`/`values`, or `out` is not `q.len()` long.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_f16(
    isa: Isa,
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    stride: usize,
    len: usize,
    scoring: Scoring,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    if isa.avx512 {
        // SAFETY: `Isa` proves AVX-512F/BW/VNNI as well as AVX2, FMA and F16C.
        unsafe { attend_f16_avx512(q, keys, values, stride, len, scoring, scores, out) }
    } else {
        // SAFETY: `Isa` proves AVX2, FMA and F16C.
        unsafe { attend_f16_avx2(q, keys, values, stride, len, scoring, scores, out) }
    }
}

/// Writes `src` into the cache `dst` as Q8_0 blocks.
///
/// # Panics
/// When `src` is not whole blocks or `dst` is not as many blocks.
pub(crate) fn to_q8_0(_: Isa, src: &[f32], dst: &mut [u8]) {
    assert!(src.len() % 32 == 0 && dst.len() == src.len() / 32 * Q8_0_BLOCK_BYTES);
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { to_q8_0_avx2(src, dst) }
}

/// One head's attention over `len` cached positions of a Q8_0 cache: keys and values are
/// `q.len() / 32` blocks every `stride` blocks from the start of `keys`/`values`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
fn attend_q8_0_avx2(
    q: &[f32],
    keys: &[u8],
    values: &[u8],
    stride: usize,
    len: usize,
    scoring: Scoring,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let blocks = q.len() / 32;
    let last = len.saturating_sub(1) * stride + blocks;
    assert!(q.len() % 32 == 0 && out.len() == q.len());
    assert!(len == 0 || last * Q8_0_BLOCK_BYTES <= keys.len().min(values.len()));
    let (qs, ds) = quantize_query(q);
    scores.clear();
    scores.resize(len, 0.0);
    let mut max = f32::NEG_INFINITY;
    for (p, s) in scores.iter_mut().enumerate() {
        // SAFETY: position `p < len`: its `blocks` blocks lie inside `keys` (asserted above).
        let raw = unsafe { score(keys.as_ptr().add(p * stride * Q8_0_BLOCK_BYTES), &qs, &ds) };
        *s = scoring.apply(raw);
        max = max.max(*s);
    }
    let inv = 1.0 / exp_sub_sum_avx2(scores, max);
    out.fill(0.0);
    for (p, &w) in scores.iter().enumerate() {
        // SAFETY: as above, in `values`; `out` holds `32 · blocks` floats.
        unsafe {
            add_value(
                out,
                w * inv,
                values.as_ptr().add(p * stride * Q8_0_BLOCK_BYTES),
            )
        };
    }
}

/// [`attend_q8_0_avx2`] behind the CPU proof (AVX2 on every CPU: a head is a few blocks).
///
/// # Panics
/// When `q` is not whole blocks, a position's key or value lies outside `keys`/`values`, or
/// `out` is not `q.len()` long.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_q8_0(
    _: Isa,
    q: &[f32],
    keys: &[u8],
    values: &[u8],
    stride: usize,
    len: usize,
    scoring: Scoring,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { attend_q8_0_avx2(q, keys, values, stride, len, scoring, scores, out) }
}
