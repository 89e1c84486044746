//! Kernels of the K-quant formats beyond Q4_K and Q6_K, against Q8_K activations (blocks of
//! 256 values with per-16 sums), rows as GGUF stores them.

use std::arch::x86_64::*;

use super::super::acts::Q8KPtr;
use super::super::format::{f16_to_f32, q3k_scales};
use super::lanes::*;

/// Q5_K row (`blocks` × 176 bytes, as stored) · `N` Q8_K rows.
///
/// A block: f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales and mins (Q4_K's), 32 bytes of fifth
/// bits, 128 bytes of nibbles. Chunk `c` of 64 values is sub-blocks `2c` (the low nibbles of
/// bytes `32c .. 32c + 32`, fifth bit `2c` of `qh[l]`) and `2c + 1` (the high nibbles, bit
/// `2c + 1`); value `i` of sub-block `j` is `d · sc[j] · q − dmin · mn[j]`, `q` in `0..32`.
///
/// # Safety
/// AVX2/FMA/F16C present; `row` valid for `blocks × 176` bytes and each activation for
/// `blocks × 256` values, `blocks` scales and `blocks × 16` sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_k<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8KPtr; N],
) -> [f32; N] {
    let mask = _mm256_set1_epi8(0x0F);
    let sixteen = _mm256_set1_epi8(0x10);
    // Byte pairs (2j, 2j+1) everywhere: broadcasts i16 lane j of a register.
    let pick: [__m256i; 8] =
        std::array::from_fn(|j| _mm256_set1_epi16((((2 * j + 1) << 8) | (2 * j)) as i16));
    let fifth = |qh: __m256i, bit: usize| {
        let m = _mm256_set1_epi8((1u8 << bit) as i8);
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m), sixteen)
    };
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY: `b < blocks`: block `b`'s 176 bytes (`blk`; `q4k_header` reads its first 16,
        // the fifth bits are the 32 after them, the nibbles the 128 after those) lie inside
        // `row`, and each activation row holds block `b`'s 256 values, its scale and its 16 sums
        // (`q4k_mins`), as the caller guarantees. Prefetches never fault.
        unsafe {
            let blk = row.add(b * 176);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 128).cast());
            let (d, dmin, scales, mins) = q4k_header(blk);
            let sc16 = _mm256_broadcastsi128_si256(scales);
            let qh = _mm256_loadu_si256(blk.add(16).cast());
            let qs = blk.add(48);
            let mut sumi = [_mm256_setzero_si256(); N];
            for c in 0..4 {
                let q = _mm256_loadu_si256(qs.add(32 * c).cast());
                let lo = _mm256_or_si256(_mm256_and_si256(q, mask), fifth(qh, 2 * c));
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask),
                    fifth(qh, 2 * c + 1),
                );
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

/// [`q5_k`] on AVX-512: a chunk of 64 values (two sub-blocks) is one register, its fifth bits
/// one mask test, multiplied by `vpmaddubsw` and scaled and summed by `vpdpwssd`.
///
/// # Safety
/// As [`q5_k`], and the CPU has AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q5_k_avx512<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8KPtr; N],
) -> [f32; N] {
    let mask = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(0x10);
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
    // Fifth bit 2c in the low half, 2c + 1 in the high half.
    let bit: [__m512i; 4] = std::array::from_fn(|c| {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi8((1u8 << (2 * c)) as i8)),
            _mm256_set1_epi8((1u8 << (2 * c + 1)) as i8),
        )
    });
    let mut acc = [_mm512_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY: `b < blocks`: block `b`'s 176 bytes (`blk`: header 16, fifth bits 32, nibbles
        // 128) lie inside `row`, and each activation row holds block `b`'s 256 values, its scale
        // and its 16 sums (`q4k_mins`), as the caller guarantees. Prefetches never fault.
        unsafe {
            let blk = row.add(b * 176);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 128).cast());
            let (d, dmin, scales, mins) = q4k_header(blk);
            let sc16 = _mm512_broadcast_i32x4(scales);
            let qh = _mm256_loadu_si256(blk.add(16).cast());
            let qhz = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), qh);
            let qs = blk.add(48);
            let mut sumi = [_mm512_setzero_si512(); N];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(qs.add(32 * c).cast());
                let w = _mm512_and_si512(
                    _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(raw),
                        _mm256_srli_epi16::<4>(raw),
                    ),
                    mask,
                );
                let high = _mm512_test_epi8_mask(qhz, bit[c]);
                let w = _mm512_or_si512(w, _mm512_maskz_mov_epi8(high, sixteen));
                let scale = _mm512_shuffle_epi8(sc16, pick[c]);
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

/// A Q2_K or Q3_K block's integer scales as 16 `i16` lanes (Q2_K's unsigned 4-bit scales,
/// Q3_K's signed 6-bit ones), Q2_K's mins as 16 `i16` lanes (zero for Q3_K), and `d`, `dmin`.
///
/// # Safety
/// `blk` valid for one block of the format.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn planes_header<const Q3: bool>(blk: *const u8) -> (__m256i, __m256i, f32, f32) {
    // SAFETY: the caller guarantees one whole block: Q3_K's scales at 96 and `d` at 108, Q2_K's
    // 16 scale bytes at 0, `d` at 80 and `dmin` at 82.
    unsafe {
        if Q3 {
            let packed = blk.add(96).cast::<[u8; 12]>().read_unaligned();
            let signed = q3k_scales(&packed);
            let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(signed.as_ptr().cast()));
            let d = f16_to_f32(u16_at(blk.add(108)));
            (scales, _mm256_setzero_si256(), d, 0.0)
        } else {
            let raw = _mm_loadu_si128(blk.cast());
            let low = _mm_set1_epi8(0x0F);
            let scales = _mm256_cvtepu8_epi16(_mm_and_si128(raw, low));
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), low));
            let d = f16_to_f32(u16_at(blk.add(80)));
            (scales, mins, d, f16_to_f32(u16_at(blk.add(82))))
        }
    }
}

/// A Q2_K (`Q3 = false`, 84-byte blocks) or Q3_K (`Q3`, 110-byte blocks) row, as stored, · `N`
/// Q8_K rows (layouts at [`super::super::quant::dequantize`]).
///
/// Like [`super::q6_k`]: 32 values (one shift of a half's 32 bytes, with Q3_K's third bit as
/// `+ 4`) per `maddubs`, scaled per 16 by `madd`. The offsets are folded into the per-16 sums:
/// Q3_K's stored `q` is the value `+ 4` where the third bit is clear, so `4 · Σ sc · sum16` is
/// taken off; Q2_K's mins are `dmin · Σ mn · sum16`.
///
/// # Safety
/// AVX2/FMA/F16C present; `row` valid for `blocks` blocks and each activation for
/// `blocks × 256` values, `blocks` scales and `blocks × 16` sums.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn planes<const N: usize, const Q3: bool>(
    row: *const u8,
    blocks: usize,
    a: [Q8KPtr; N],
) -> [f32; N] {
    let (block, qs_at) = if Q3 { (110, 32) } else { (84, 16) };
    let m2 = _mm256_set1_epi8(0x03);
    let four = _mm256_set1_epi8(0x04);
    // Scales 2i (low half) and 2i+1 (high half) as i16 lanes, from 8 scales in each 128-bit lane.
    let pick: [__m256i; 4] = std::array::from_fn(|i| {
        let lo = (((4 * i + 1) << 8) | (4 * i)) as i16;
        let hi = (((4 * i + 3) << 8) | (4 * i + 2)) as i16;
        _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
    });
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY: `b < blocks`: block `b` (`blk`, `block` bytes: Q3_K's third bits at 0 and values
        // at 32, Q2_K's values at 16) lies inside `row`, and each activation row holds block `b`'s
        // 256 values, its scale and its 16 sums, as the caller guarantees. Prefetches never fault.
        unsafe {
            let blk = row.add(b * block);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64).cast());
            let (sc16, mn16, d, dmin) = planes_header::<Q3>(blk);
            let hm = _mm256_loadu_si256(blk.cast());
            let mut sumi = [_mm256_setzero_si256(); N];
            for half in 0..2 {
                let qv = _mm256_loadu_si256(blk.add(qs_at + 32 * half).cast());
                let sc_half = if half == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc16, sc16)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc16, sc16)
                };
                for (i, pick) in pick.iter().enumerate() {
                    let shift = _mm_cvtsi32_si128(2 * i as i32);
                    let mut q = _mm256_and_si256(_mm256_srl_epi16(qv, shift), m2);
                    if Q3 {
                        let bit = _mm256_set1_epi8((1u8 << (4 * half + i)) as i8);
                        let set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                        q = _mm256_or_si256(q, _mm256_and_si256(set, four));
                    }
                    let s = _mm256_shuffle_epi8(sc_half, *pick);
                    for t in 0..N {
                        let x =
                            _mm256_loadu_si256(a[t].qs.add(b * 256 + 128 * half + 32 * i).cast());
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), s);
                        sumi[t] = _mm256_add_epi32(sumi[t], p);
                    }
                }
            }
            for t in 0..N {
                let da = *a[t].d.add(b);
                let bs = _mm256_loadu_si256(a[t].bsums.add(b * 16).cast());
                let s = if Q3 {
                    let fix = _mm256_slli_epi32::<2>(_mm256_madd_epi16(bs, sc16));
                    _mm256_sub_epi32(sumi[t], fix)
                } else {
                    let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mn16));
                    acc_min[t] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * da), m, acc_min[t]);
                    sumi[t]
                };
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da), _mm256_cvtepi32_ps(s), acc[t]);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]) - hsum_ps(acc_min[t]);
    }
    out
}

/// Scale `first + k` in 128-bit lane `k`, as `i16` lanes (an index vector for
/// `vpermw` over 16 scales).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn spread(first: i16) -> __m512i {
    let lanes: [i16; 32] = std::array::from_fn(|i| first + (i / 8) as i16);
    // SAFETY: `lanes` is 32 `i16` values, the 64 bytes an unaligned load reads.
    unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
}

/// [`planes`] on AVX-512: two shifts of a half's 32 bytes (64 values) per register, the third
/// bits by a mask test, scaled per 16 and summed by `vpdpwssd`.
///
/// # Safety
/// As [`planes`], and the CPU has AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn planes_avx512<const N: usize, const Q3: bool>(
    row: *const u8,
    blocks: usize,
    a: [Q8KPtr; N],
) -> [f32; N] {
    let (block, qs_at) = if Q3 { (110, 32) } else { (84, 16) };
    let m2 = _mm512_set1_epi8(0x03);
    let four = _mm512_set1_epi8(0x04);
    let idx = [spread(0), spread(4), spread(8), spread(12)];
    // Third bit `4 · half + 2p` in the low 256 bits, `4 · half + 2p + 1` in the high ones.
    let bits: [__m512i; 4] = std::array::from_fn(|k| {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi8((1u8 << (2 * k)) as i8)),
            _mm256_set1_epi8((1u8 << (2 * k + 1)) as i8),
        )
    });
    let mut acc = [_mm512_setzero_ps(); N];
    let mut acc_fix = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY: as in `planes`: block `b` lies inside `row`, each activation row holds block
        // `b`'s values, scale and sums. Prefetches never fault.
        unsafe {
            let blk = row.add(b * block);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64).cast());
            let (sc16, mn16, d, dmin) = planes_header::<Q3>(blk);
            let sc512 = _mm512_castsi256_si512(sc16);
            let hm = _mm256_loadu_si256(blk.cast());
            let hmz = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(hm), hm);
            let mut sumi = [_mm512_setzero_si512(); N];
            for half in 0..2 {
                let qv = _mm256_loadu_si256(blk.add(qs_at + 32 * half).cast());
                // Shifts 0 and 1 (low, high 256 bits), then 2 and 3.
                let qz =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qv), _mm256_srli_epi16::<2>(qv));
                let q = [
                    _mm512_and_si512(qz, m2),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(qz), m2),
                ];
                for (p, q) in q.into_iter().enumerate() {
                    let q = if Q3 {
                        let set = _mm512_test_epi8_mask(hmz, bits[2 * half + p]);
                        _mm512_or_si512(q, _mm512_maskz_mov_epi8(set, four))
                    } else {
                        q
                    };
                    let scale = _mm512_permutexvar_epi16(idx[2 * half + p], sc512);
                    for t in 0..N {
                        let x =
                            _mm512_loadu_si512(a[t].qs.add(b * 256 + 128 * half + 64 * p).cast());
                        sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(q, x), scale);
                    }
                }
            }
            for t in 0..N {
                let da = *a[t].d.add(b);
                acc[t] =
                    _mm512_fmadd_ps(_mm512_set1_ps(d * da), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
                let bs = _mm256_loadu_si256(a[t].bsums.add(b * 16).cast());
                let (by, factor) = if Q3 { (sc16, 4.0 * d) } else { (mn16, dmin) };
                let fix = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, by));
                acc_fix[t] = _mm256_fmadd_ps(_mm256_set1_ps(factor * da), fix, acc_fix[t]);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum512(acc[t]) - hsum_ps(acc_fix[t]);
    }
    out
}

macro_rules! plane_kernels {
    ($($name:ident, $name512:ident, $q3:literal, $what:literal;)*) => {$(
        #[doc = concat!("A ", $what, " row · `N` Q8_K rows ([`planes`]).")]
        ///
        /// # Safety
        /// As [`planes`] for the format.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name<const N: usize>(
            row: *const u8,
            blocks: usize,
            a: [Q8KPtr; N],
        ) -> [f32; N] {
            // SAFETY: the caller's contract is `planes`'s for this format.
            unsafe { planes::<N, $q3>(row, blocks, a) }
        }

        #[doc = concat!("[`", stringify!($name), "`] on AVX-512 VNNI ([`planes_avx512`]).")]
        ///
        /// # Safety
        /// As [`planes_avx512`] for the format.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $name512<const N: usize>(
            row: *const u8,
            blocks: usize,
            a: [Q8KPtr; N],
        ) -> [f32; N] {
            // SAFETY: the caller's contract is `planes_avx512`'s for this format.
            unsafe { planes_avx512::<N, $q3>(row, blocks, a) }
        }
    )*};
}

plane_kernels! {
    q2_k, q2_k_avx512, false, "Q2_K";
    q3_k, q3_k_avx512, true, "Q3_K";
}
