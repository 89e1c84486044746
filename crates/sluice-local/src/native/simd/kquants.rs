//! Kernels of the K-quant formats beyond Q4_K and Q6_K, against Q8_K activations (blocks of
//! 256 values with per-16 sums), rows as GGUF stores them.

use std::arch::x86_64::*;

use super::super::acts::Q8KPtr;
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
