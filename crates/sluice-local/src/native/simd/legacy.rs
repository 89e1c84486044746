//! Kernels of the 32-value formats with a min (Q4_1, Q5_1), held repacked
//! ([`super::super::quant::Packing`]): every block's f16 `d`, then every block's f16 `m`, then
//! (Q5_1) every block's 32 fifth bits (a little-endian `u32`, bit `j` for value `j`), then the
//! nibbles in pairs of blocks (32 bytes, block `2p` in the low nibbles, `2p + 1` in the high
//! ones; an odd last block as GGUF stores it). [`tail`] also takes the last blocks (fewer than
//! 4) of the lane-order formats ([`super::lane_order`]: Q4_0 and Q5_0), which are held the same
//! way.
//!
//! One generic body per ISA: the integer products are Q4_0's (weights `0..32` are far from
//! `maddubs` saturation), and the offset is folded into the activations' block sums, as ggml
//! folds them: Q4_1 and Q5_1 add `m · d_x · Σx` (per group of 8 blocks, one multiply-add),
//! Q5_0 takes `16 · d · d_x · Σx` off, Q4_0 `8 · d · d_x · Σx`.

use std::arch::x86_64::*;

use super::super::acts::Q8Ptr;
use super::super::format::f16_to_f32;
use super::lanes::*;

/// Where the fields of a repacked row of `blocks` start: mins, fifth bits, nibbles.
///
/// # Safety
/// `row` valid for the repacked row (`blocks` blocks of the format `MIN`/`HIGH` say).
#[inline(always)]
unsafe fn fields<const MIN: bool, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
) -> (*const u8, *const u8, *const u8) {
    let halves = if MIN { 2 } else { 1 };
    let high = if HIGH { 4 } else { 0 };
    // SAFETY: the caller guarantees `row` holds the repacked row, whose fields start at these
    // offsets (`2 · blocks` per f16 field, then `high · blocks` bytes of fifth bits).
    unsafe {
        (
            row.add(2 * blocks),
            row.add(2 * halves * blocks),
            row.add((2 * halves + high) * blocks),
        )
    }
}

/// The block sums' share of the result: `+ Σ m · d_x · Σx` with a min, `− off · Σ d · d_x · Σx`
/// without (`fix` holds those sums).
#[inline(always)]
fn offset<const MIN: bool, const HIGH: bool>(fix: f32) -> f32 {
    match (MIN, HIGH) {
        (true, _) => fix,
        (false, true) => -16.0 * fix,
        (false, false) => -8.0 * fix,
    }
}

/// A repacked Q4_1 (`MIN`), Q5_0 (`HIGH`) or Q5_1 (both) row · `N` Q8 rows.
///
/// # Safety
/// AVX2/FMA/F16C present; `row` valid for `blocks` repacked blocks of the format and each
/// activation for `blocks × 32` values, `blocks` scales and sums.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<const N: usize, const MIN: bool, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
    a: [Q8Ptr; N],
) -> [f32; N] {
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    let mut fix = [_mm256_setzero_ps(); N];
    // SAFETY: the caller guarantees `row` holds the repacked row.
    let (mins, qh, qs) = unsafe { fields::<MIN, HIGH>(row, blocks) };
    let groups = blocks / 8;
    for g in 0..groups {
        // SAFETY: group `g < blocks / 8`: its 8 scales (and mins), 32 bytes of fifth bits and
        // 128 bytes of nibbles lie inside `row`, and each activation row holds blocks
        // `8g .. 8g + 8` (values, scales, sums), as the caller guarantees. Prefetches never fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(128 * g + PREFETCH).cast());
            let ds = if MIN {
                group_scales(mins, g, &a, Some(&mut fix));
                group_scales(row, g, &a, None)
            } else {
                group_scales(row, g, &a, Some(&mut fix))
            };
            for j in 0..4 {
                let b = 8 * g + 2 * j;
                let raw = _mm256_loadu_si256(qs.add(16 * b).cast());
                let mut w0 = _mm256_and_si256(raw, mask);
                let mut w1 = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
                if HIGH {
                    w0 = _mm256_or_si256(w0, fifth_bits(u32_at(qh.add(4 * b))));
                    w1 = _mm256_or_si256(w1, fifth_bits(u32_at(qh.add(4 * b + 4))));
                }
                let s0 = _mm256_set1_epi32(2 * j as i32);
                let s1 = _mm256_set1_epi32(2 * j as i32 + 1);
                let k = if N == 1 { 1 } else { 0 };
                for t in 0..N {
                    let x0 = _mm256_loadu_si256(a[t].qs.add(32 * b).cast());
                    let x1 = _mm256_loadu_si256(a[t].qs.add(32 * b + 32).cast());
                    let p0 = _mm256_cvtepi32_ps(dot_u8i8(w0, x0));
                    let p1 = _mm256_cvtepi32_ps(dot_u8i8(w1, x1));
                    let d0 = _mm256_permutevar8x32_ps(ds[t], s0);
                    let d1 = _mm256_permutevar8x32_ps(ds[t], s1);
                    acc[t][0] = _mm256_fmadd_ps(d0, p0, acc[t][0]);
                    acc[t][k] = _mm256_fmadd_ps(d1, p1, acc[t][k]);
                }
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        let sum = hsum_ps(_mm256_add_ps(acc[t][0], acc[t][1]));
        out[t] = sum + offset::<MIN, HIGH>(hsum_ps(fix[t]));
    }
    // SAFETY: the same row and activations as this call's; blocks `8 · groups .. blocks` are
    // inside them.
    unsafe { tail::<N, MIN, HIGH>(row, blocks, 8 * groups, &a, &mut out) };
    out
}

/// Blocks `from..blocks` of a repacked row (fewer than 8), one block at a time.
///
/// # Safety
/// As [`dot`] for the same `row`, `blocks` and activations, and `from <= blocks`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tail<const N: usize, const MIN: bool, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
    from: usize,
    a: &[Q8Ptr; N],
    out: &mut [f32; N],
) {
    let mask = _mm256_set1_epi8(0x0F);
    // SAFETY: the caller guarantees `row` holds the repacked row.
    let (mins, qh, qs) = unsafe { fields::<MIN, HIGH>(row, blocks) };
    let mut b = from;
    while b < blocks {
        // SAFETY: `b < blocks`: a pair (`b + 1 < blocks`) reads its 32 bytes of nibbles at
        // `qs + 16 · b`, a last odd block its own 16; the scale, min and fifth bits of each block
        // `blk < blocks` and each activation row's values, scale and sum of `blk` are inside the
        // buffers the caller guarantees.
        unsafe {
            let paired = b + 1 < blocks;
            let (w0, w1) = if paired {
                let raw = _mm256_loadu_si256(qs.add(16 * b).cast());
                (
                    _mm256_and_si256(raw, mask),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask),
                )
            } else {
                let raw = _mm_loadu_si128(qs.add(16 * b).cast());
                let w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), mask);
                (w, w)
            };
            for (i, w) in [w0, w1]
                .into_iter()
                .enumerate()
                .take(if paired { 2 } else { 1 })
            {
                let blk = b + i;
                let w = if HIGH {
                    _mm256_or_si256(w, fifth_bits(u32_at(qh.add(4 * blk))))
                } else {
                    w
                };
                let d = f16_to_f32(u16_at(row.add(2 * blk)));
                let m = if MIN {
                    f16_to_f32(u16_at(mins.add(2 * blk)))
                } else {
                    d
                };
                for t in 0..N {
                    let x = _mm256_loadu_si256(a[t].qs.add(32 * blk).cast());
                    let p = hsum_epi32(dot_u8i8(w, x)) as f32;
                    let dx = *a[t].d.add(blk);
                    out[t] += d * dx * p + offset::<MIN, HIGH>(m * dx * *a[t].sums.add(blk));
                }
            }
            b += if paired { 2 } else { 1 };
        }
    }
}

/// [`dot`] on AVX-512 VNNI: a pair of blocks is one 64-byte register (their fifth bits one
/// 64-bit mask) and one `vpdpbusd`.
///
/// # Safety
/// As [`dot`], and the CPU has AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_avx512<const N: usize, const MIN: bool, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
    a: [Q8Ptr; N],
) -> [f32; N] {
    let mask = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(0x10);
    let mut acc = [[_mm512_setzero_ps(); 2]; N];
    let mut fix = [_mm256_setzero_ps(); N];
    // SAFETY: the caller guarantees `row` holds the repacked row.
    let (mins, qh, qs) = unsafe { fields::<MIN, HIGH>(row, blocks) };
    let groups = blocks / 8;
    for g in 0..groups {
        // SAFETY: as in `dot`: group `g < blocks / 8` lies inside `row` (the 8 bytes of fifth
        // bits at `qh + 4 · b` are blocks `b` and `b + 1`), and the 64 activation bytes read at
        // `32 · b` are blocks `b` and `b + 1`, both below `8g + 8 <= blocks`. Prefetches never
        // fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(128 * g + PREFETCH).cast());
            let ds = if MIN {
                group_scales(mins, g, &a, Some(&mut fix));
                group_scales(row, g, &a, None)
            } else {
                group_scales(row, g, &a, Some(&mut fix))
            };
            for j in 0..4 {
                let b = 8 * g + 2 * j;
                let raw = _mm256_loadu_si256(qs.add(16 * b).cast());
                let mut w = _mm512_and_si512(
                    _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(raw),
                        _mm256_srli_epi16::<4>(raw),
                    ),
                    mask,
                );
                if HIGH {
                    let bits: __mmask64 = qh.add(4 * b).cast::<u64>().read_unaligned();
                    w = _mm512_or_si512(w, _mm512_maskz_mov_epi8(bits, sixteen));
                }
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
        let sum = hsum512(_mm512_add_ps(acc[t][0], acc[t][1]));
        out[t] = sum + offset::<MIN, HIGH>(hsum_ps(fix[t]));
    }
    // SAFETY: the same row and activations as this call's; blocks `8 · groups .. blocks` are
    // inside them.
    unsafe { tail::<N, MIN, HIGH>(row, blocks, 8 * groups, &a, &mut out) };
    out
}

macro_rules! kernels {
    ($($name:ident, $name512:ident, $min:literal, $high:literal, $what:literal;)*) => {$(
        #[doc = concat!("A repacked ", $what, " row · `N` Q8 rows.")]
        ///
        /// # Safety
        /// As [`dot`] for the format.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name<const N: usize>(
            row: *const u8,
            blocks: usize,
            a: [Q8Ptr; N],
        ) -> [f32; N] {
            // SAFETY: the caller's contract is `dot`'s for this format.
            unsafe { dot::<N, $min, $high>(row, blocks, a) }
        }

        #[doc = concat!("[`", stringify!($name), "`] on AVX-512 VNNI.")]
        ///
        /// # Safety
        /// As [`dot_avx512`] for the format.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $name512<const N: usize>(
            row: *const u8,
            blocks: usize,
            a: [Q8Ptr; N],
        ) -> [f32; N] {
            // SAFETY: the caller's contract is `dot_avx512`'s for this format.
            unsafe { dot_avx512::<N, $min, $high>(row, blocks, a) }
        }
    )*};
}

kernels! {
    q4_1, q4_1_avx512, true, false, "Q4_1";
    q5_1, q5_1_avx512, true, true, "Q5_1";
}
