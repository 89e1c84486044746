//! The pieces the kernels of [`super`] share: horizontal sums, byte products, the scale and
//! fifth-bit loads of repacked 32-value blocks and the Q4_K/Q5_K block header.

use std::arch::x86_64::*;

use super::super::acts::Q8Ptr;
use super::super::format::f16_to_f32;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// How far ahead of the values being multiplied the kernels prefetch (bytes). A prefetch past
/// the end of a row touches the next row or nothing: prefetches never fault.
pub(super) const PREFETCH: usize = 1024;

/// `sum(u8 × i8)` over each group of 4 bytes, as 8 `i32` lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// The `u16` at `p` (native byte order, little-endian on x86-64 as in GGUF), any alignment.
///
/// # Safety
/// `p` valid for reading 2 bytes.
#[inline(always)]
pub(super) unsafe fn u16_at(p: *const u8) -> u16 {
    // SAFETY: the caller guarantees `p` is valid for 2 bytes; `read_unaligned` needs no alignment.
    unsafe { p.cast::<u16>().read_unaligned() }
}

/// For the 8 blocks of group `g` of a repacked Q4_0/Q8_0 row: the weight scales times each
/// activation row's, and `fix[t] += those · row t's block sums` when asked.
///
/// # Safety
/// `row` valid for the group's 8 scales; each activation for the group's scales and sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn group_scales<const N: usize>(
    row: *const u8,
    g: usize,
    a: &[Q8Ptr; N],
    mut fix: Option<&mut [__m256; N]>,
) -> [__m256; N] {
    // SAFETY: the caller guarantees `row` holds group `g`'s 8 f16 scales (16 bytes at `16 · g`).
    let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(row.add(16 * g).cast())) };
    let mut ds = [_mm256_setzero_ps(); N];
    for t in 0..N {
        // SAFETY: the caller guarantees each activation row's scales and block sums cover group `g`
        // (8 floats at `8 · g`).
        unsafe {
            ds[t] = _mm256_mul_ps(dw, _mm256_loadu_ps(a[t].d.add(8 * g)));
            if let Some(fix) = fix.as_deref_mut() {
                fix[t] = _mm256_fmadd_ps(ds[t], _mm256_loadu_ps(a[t].sums.add(8 * g)), fix[t]);
            }
        }
    }
    ds
}

/// `0x10` in byte `i` where bit `i` of `bits` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn fifth_bits(bits: u32) -> __m256i {
    // Byte `i` gets byte `i / 8` of `bits` (the shuffle works in 128-bit lanes, each holding
    // all four bytes), then is tested against bit `i % 8`.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The `u32` at `p`, any alignment.
///
/// # Safety
/// `p` valid for 4 bytes.
#[inline(always)]
pub(super) unsafe fn u32_at(p: *const u8) -> u32 {
    // SAFETY: the caller guarantees 4 readable bytes; `read_unaligned` needs no alignment.
    unsafe { p.cast::<u32>().read_unaligned() }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) fn hsum512(v: __m512) -> f32 {
    _mm512_reduce_add_ps(v)
}

/// Lanes `2j` (low 8) and `2j + 1` (high 8) of an 8-lane vector spread over 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) fn pair_scales(ds: __m256, j: usize) -> __m512 {
    let lo = 2 * j as i32;
    let idx = _mm512_set_epi32(
        lo + 1,
        lo + 1,
        lo + 1,
        lo + 1,
        lo + 1,
        lo + 1,
        lo + 1,
        lo + 1,
        lo,
        lo,
        lo,
        lo,
        lo,
        lo,
        lo,
        lo,
    );
    _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(ds))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// The 8 scales and 8 mins of a Q4_K block from its 12 packed bytes (ggml's
/// `get_scale_min_k4` for all sub-blocks at once, on 32-bit words).
#[inline(always)]
pub(super) fn q4k_scales_fast(s: [u32; 3]) -> [u32; 4] {
    const M1: u32 = 0x3F3F_3F3F;
    const M2: u32 = 0x0F0F_0F0F;
    const M3: u32 = 0x0303_0303;
    let sc_hi = (s[2] & M2) | (((s[0] >> 6) & M3) << 4);
    let mn_hi = ((s[2] >> 4) & M2) | (((s[1] >> 6) & M3) << 4);
    [s[0] & M1, sc_hi, s[1] & M1, mn_hi]
}

/// A Q4_K block's `d`, `dmin`, its 8 scales as `i16` lanes and its 8 mins as `i32` lanes.
///
/// # Safety
/// `blk` valid for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k_header(blk: *const u8) -> (f32, f32, __m128i, __m256i) {
    // SAFETY: the caller guarantees `blk` is valid for 16 bytes: `d` at 0, `dmin` at 2, the 12
    // scale bytes at 4 (unaligned reads).
    let (d, dmin, words) = unsafe {
        (
            f16_to_f32(u16_at(blk)),
            f16_to_f32(u16_at(blk.add(2))),
            blk.add(4).cast::<[u32; 3]>().read_unaligned(),
        )
    };
    let [s0, s1, m0, m1] = q4k_scales_fast(words.map(u32::from_le));
    let scales = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, s1 as i32, s0 as i32));
    let mins = _mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, m1 as i32, m0 as i32));
    (d, dmin, scales, mins)
}

/// `acc + dmin_da · Σⱼ mins[j] · (sum16[2j] + sum16[2j+1])`: a Q4_K block's min term for one
/// activation row, whose 16 per-16 sums are at `bsums`.
///
/// # Safety
/// `bsums` valid for 16 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k_mins(
    acc: __m256,
    bsums: *const i16,
    mins: __m256i,
    dmin_da: f32,
) -> __m256 {
    // SAFETY: the caller guarantees `bsums` is valid for 16 `i16` values (32 bytes).
    let bs = unsafe { _mm256_loadu_si256(bsums.cast()) };
    let m = _mm256_mullo_epi32(_mm256_madd_epi16(bs, _mm256_set1_epi16(1)), mins);
    _mm256_fmadd_ps(_mm256_set1_ps(dmin_da), _mm256_cvtepi32_ps(m), acc)
}
