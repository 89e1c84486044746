//! Kernels of the 32-value formats held in lane order (Q4_0, and Q5_0 with its fifth bits):
//! a group of 8 blocks (and a row's last group of 4) is summed with each block in its own
//! 32-bit lane, so one multiply-add scales the whole group, where a block at a time would take
//! a horizontal sum or a scale broadcast per block.
//!
//! A row, repacked ([`super::super::quant::Packing`]): `blocks` f16 scales; for Q5_0 (`HIGH`)
//! `blocks` × 4 bytes of fifth bits, each group's in lane order (bit `p` of the group's bytes,
//! read as one little-endian bit string, is position `p`'s); then the nibbles: each whole group
//! of 8 blocks as 128 bytes in lane order ([`super::super::format::lane_source`]; byte `32q + i`
//! holds position `64q + i` in its low nibble and `64q + 32 + i` in its high one), then, where
//! 4 or more blocks are left, a group of 4 the same way (64 bytes), then the last blocks (fewer
//! than 4) in pairs as the other 32-value formats hold them ([`super::legacy`]). The
//! activations are Q8 rows in the same lane order.
//!
//! Q4_0's value is `(q − 8) · d`, Q5_0's `(q − 16) · d` with `q` its nibble plus 16 where its
//! fifth bit is set: the kernels multiply the unsigned `q` (below 32, far from `maddubs`
//! saturation) and fold the offset into one multiply-add per group over the activations'
//! block sums, as ggml folds Q4_1's min.

use std::arch::x86_64::*;

use super::super::acts::Q8Ptr;
use super::super::format::f16_to_f32;
use super::lanes::*;
use super::legacy::tail;

/// Where the fifth bits (Q5_0) and the nibbles of a repacked row of `blocks` start.
///
/// # Safety
/// `row` valid for the repacked row.
#[inline(always)]
unsafe fn fields<const HIGH: bool>(row: *const u8, blocks: usize) -> (*const u8, *const u8) {
    let high = if HIGH { 4 } else { 0 };
    // SAFETY: the caller guarantees `row` holds the repacked row: `2 · blocks` bytes of scales,
    // then `high · blocks` of fifth bits, then the nibbles.
    unsafe { (row.add(2 * blocks), row.add((2 + high) * blocks)) }
}

/// The value offset the activations' block sums carry: `q − 8` (Q4_0) or `q − 16` (Q5_0).
#[inline(always)]
fn offset<const HIGH: bool>() -> f32 {
    if HIGH {
        16.0
    } else {
        8.0
    }
}

/// `Σ maddubs(w[r], x[32r .. 32r + 32])` as `i16` pairs; the caller keeps the sum below
/// saturation (8 runs of nibbles: `8 · 2 · 15 · 127 < 2¹⁵`; 4 runs of 5-bit values:
/// `4 · 2 · 31 · 127 < 2¹⁵`).
///
/// # Safety
/// `x` valid for `32 · w.len()` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_sums(w: &[__m256i], x: *const i8) -> __m256i {
    let mut sum = _mm256_setzero_si256();
    for (r, &wr) in w.iter().enumerate() {
        // SAFETY: run `r < w.len()` lies inside `x` (the caller's contract).
        let xr = unsafe { _mm256_loadu_si256(x.add(32 * r).cast()) };
        sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(wr, xr));
    }
    sum
}

/// The 8 lanes' `i32` sums of `w · x` over `w.len()` runs (8 or 4) for one activation row:
/// one `i16` chain where it cannot saturate, two halves widened apart where it could (Q5_0's
/// 8 runs).
///
/// # Safety
/// `x` valid for `32 · w.len()` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lane_sums<const HIGH: bool>(w: &[__m256i], x: *const i8) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    // SAFETY: the runs read lie inside `x` (the caller's contract).
    unsafe {
        if HIGH && w.len() > 4 {
            let (lo, hi) = w.split_at(4);
            let lo = _mm256_madd_epi16(pair_sums(lo, x), ones);
            _mm256_add_epi32(lo, _mm256_madd_epi16(pair_sums(hi, x.add(128)), ones))
        } else {
            _mm256_madd_epi16(pair_sums(w, x), ones)
        }
    }
}

/// The weight bytes of `runs` runs of 32 positions in lane order from `raw` (pairs of runs
/// per 32 bytes, low nibbles first), with 16 added where the position's fifth bit is set
/// (`HIGH`; the bits of run `r` are the `u32` at `qh + 4r`).
///
/// # Safety
/// `raw` valid for `16 · runs` bytes; with `HIGH`, `qh` valid for `4 · runs`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack<const HIGH: bool, const RUNS: usize>(
    raw: *const u8,
    qh: *const u8,
) -> [__m256i; RUNS] {
    let mask = _mm256_set1_epi8(0x0F);
    let mut w = [_mm256_setzero_si256(); RUNS];
    for q in 0..RUNS / 2 {
        // SAFETY: `32q + 32 <= 16 · RUNS` bytes of `raw` (the caller's contract).
        let v = unsafe { _mm256_loadu_si256(raw.add(32 * q).cast()) };
        w[2 * q] = _mm256_and_si256(v, mask);
        w[2 * q + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
    }
    if HIGH {
        for (r, wr) in w.iter_mut().enumerate() {
            // SAFETY: `4r + 4 <= 4 · RUNS` bytes of `qh` (the caller's contract).
            *wr = _mm256_or_si256(*wr, fifth_bits(unsafe { u32_at(qh.add(4 * r)) }));
        }
    }
    w
}

/// A repacked Q4_0 (`HIGH` false) or Q5_0 row · `N` Q8 rows in lane order.
///
/// A group's 8 runs of 32 bytes are unpacked once for all `N` rows. Per row, `maddubs` of each
/// run with the row's run adds 4 values of every block into each `i16` pair, `madd` makes the
/// 8 blocks' sums (one for Q4_0, one per 4 runs for Q5_0, whose 5-bit values would saturate 8
/// runs' `i16` sums), and one multiply-add scales all 8 (weight scale × activation scale).
///
/// # Safety
/// AVX2/FMA/F16C present; `row` valid for `blocks` repacked blocks of the format and each
/// activation for `blocks × 32` values, `blocks` scales and sums.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<const N: usize, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
    a: [Q8Ptr; N],
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut fix = [_mm256_setzero_ps(); N];
    // SAFETY: the caller guarantees `row` holds the repacked row.
    let (qh, qs) = unsafe { fields::<HIGH>(row, blocks) };
    let groups = blocks / 8;
    for g in 0..groups {
        // SAFETY: group `g < blocks / 8`: its 8 scales, 32 bytes of fifth bits at `qh + 32 · g`
        // and 128 bytes of nibbles at `qs + 128 · g` lie inside `row`, and each activation row
        // holds blocks `8g .. 8g + 8` (256 values at `256 · g`, scales, sums), as the caller
        // guarantees. The prefetch addresses are only computed (`wrapping_add`), and a prefetch
        // never faults.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(128 * g + PREFETCH).cast());
            if HIGH {
                _mm_prefetch::<_MM_HINT_T0>(qh.wrapping_add(32 * g + PREFETCH / 4).cast());
            }
            let ds = group_scales(row, g, &a, Some(&mut fix));
            let w = unpack::<HIGH, 8>(qs.add(128 * g), qh.wrapping_add(32 * g));
            for t in 0..N {
                let p = lane_sums::<HIGH>(&w, a[t].qs.add(256 * g));
                acc[t] = _mm256_fmadd_ps(ds[t], _mm256_cvtepi32_ps(p), acc[t]);
            }
        }
    }
    let mut from = 8 * groups;
    if blocks - from >= 4 {
        // SAFETY: the same row and activations as this call's; blocks `from .. from + 4` are
        // inside them.
        unsafe { quad::<N, HIGH>(row, blocks, from, &a, &mut acc, &mut fix) };
        from += 4;
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]) - offset::<HIGH>() * hsum_ps(fix[t]);
    }
    // SAFETY: the same row and activations as this call's; blocks `from .. blocks` are inside
    // them, held in pairs as `tail` reads them.
    unsafe { tail::<N, false, HIGH>(row, blocks, from, &a, &mut out) };
    out
}

/// The lane group of 4 blocks `b0 .. b0 + 4` of a repacked row (64 bytes of nibbles, runs of
/// 16 bytes: each `i32` lane `j` of the sum is block `j mod 4`'s), added to the groups'
/// accumulators `acc` and `fix` (its 4 scales twice over `acc`'s 8 lanes, in the low 4 of
/// `fix`'s), so that a row still takes one horizontal sum of each.
///
/// # Safety
/// As [`dot`] for the same `row`, `blocks` and activations, and `b0 + 4 <= blocks`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quad<const N: usize, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
    b0: usize,
    a: &[Q8Ptr; N],
    acc: &mut [__m256; N],
    fix: &mut [__m256; N],
) {
    // SAFETY: blocks `b0 .. b0 + 4 <= blocks`: their 64 bytes of nibbles at `qs + 16 · b0`,
    // 16 bytes of fifth bits at `qh + 4 · b0` and 4 scales (8 bytes at `2 · b0`) are inside
    // `row`; each activation row holds their 128 values at `32 · b0`, 4 scales and 4 sums (the
    // caller's contract).
    unsafe {
        let (qh, qs) = fields::<HIGH>(row, blocks);
        let w = unpack::<HIGH, 4>(qs.add(16 * b0), qh.wrapping_add(4 * b0));
        let dw = _mm_cvtph_ps(_mm_loadl_epi64(row.add(2 * b0).cast()));
        for t in 0..N {
            let p = _mm256_cvtepi32_ps(lane_sums::<HIGH>(&w, a[t].qs.add(32 * b0)));
            let ds = _mm_mul_ps(dw, _mm_loadu_ps(a[t].d.add(b0)));
            let sums = _mm_mul_ps(ds, _mm_loadu_ps(a[t].sums.add(b0)));
            acc[t] = _mm256_fmadd_ps(_mm256_set_m128(ds, ds), p, acc[t]);
            fix[t] = _mm256_add_ps(fix[t], _mm256_set_m128(_mm_setzero_ps(), sums));
        }
    }
}

/// The 64 weight bytes of the 64 positions at `raw` (32 bytes: their first 32 in the low
/// nibbles, the next 32 in the high ones) on AVX-512, with 16 added where the position's
/// fifth bit is set (`HIGH`; the 64 bits at `qh`).
///
/// # Safety
/// `raw` valid for 32 bytes; with `HIGH`, `qh` valid for 8.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack64<const HIGH: bool>(raw: *const u8, qh: *const u8) -> __m512i {
    // SAFETY: the 32 bytes at `raw`, and with `HIGH` the 8 at `qh` (the caller's contract).
    unsafe {
        let v = _mm256_loadu_si256(raw.cast());
        let w = _mm512_and_si512(
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v)),
            _mm512_set1_epi8(0x0F),
        );
        if HIGH {
            let bits: __mmask64 = qh.cast::<u64>().read_unaligned();
            _mm512_mask_add_epi8(w, bits, w, _mm512_set1_epi8(0x10))
        } else {
            w
        }
    }
}

/// [`dot`] on AVX-512 VNNI: a group's two runs of 32 bytes per 64-byte register (their fifth
/// bits one 64-bit mask), four `vpdpbusd` per row (each lane `j` of the sum is block
/// `j mod 8`'s; `i32` sums, no saturation), one multiply-add.
///
/// # Safety
/// As [`dot`], and the CPU has AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_avx512<const N: usize, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
    a: [Q8Ptr; N],
) -> [f32; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    let mut fix = [_mm256_setzero_ps(); N];
    // SAFETY: the caller guarantees `row` holds the repacked row.
    let (qh, qs) = unsafe { fields::<HIGH>(row, blocks) };
    let groups = blocks / 8;
    for g in 0..groups {
        // SAFETY: as in `dot`: group `g < blocks / 8` lies inside `row` (128 bytes of nibbles
        // at `qs + 128 · g`, 32 of fifth bits at `qh + 32 · g`), and each activation row holds
        // its 256 values at `256 · g`. Prefetches never fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(qs.wrapping_add(128 * g + PREFETCH).cast());
            if HIGH {
                _mm_prefetch::<_MM_HINT_T0>(qh.wrapping_add(32 * g + PREFETCH / 4).cast());
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(row.add(16 * g).cast()));
            let mut w = [_mm512_setzero_si512(); 4];
            for (q, wq) in w.iter_mut().enumerate() {
                *wq = unpack64::<HIGH>(qs.add(128 * g + 32 * q), qh.wrapping_add(32 * g + 8 * q));
            }
            for t in 0..N {
                let x = a[t].qs.add(256 * g);
                let xs = [0, 1, 2, 3].map(|q| _mm512_loadu_si512(x.add(64 * q).cast()));
                let zero = _mm512_setzero_si512();
                let s0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, w[0], xs[0]), w[2], xs[2]);
                let s1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, w[1], xs[1]), w[3], xs[3]);
                let p = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                // The scales per row here, not for all rows before: 8 rows' would not stay in
                // registers.
                let ds = _mm256_mul_ps(dw, _mm256_loadu_ps(a[t].d.add(8 * g)));
                fix[t] = _mm256_fmadd_ps(ds, _mm256_loadu_ps(a[t].sums.add(8 * g)), fix[t]);
                let ds16 = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(ds)));
                acc[t] = _mm512_fmadd_ps(ds16, p, acc[t]);
            }
        }
    }
    let mut from = 8 * groups;
    if blocks - from >= 4 {
        // SAFETY: the same row and activations as this call's; blocks `from .. from + 4` are
        // inside them.
        unsafe { quad_avx512::<N, HIGH>(row, blocks, from, &a, &mut acc, &mut fix) };
        from += 4;
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum512(acc[t]) - offset::<HIGH>() * hsum_ps(fix[t]);
    }
    // SAFETY: the same row and activations as this call's; blocks `from .. blocks` are inside
    // them.
    unsafe { tail_avx512::<N, HIGH>(row, blocks, from, &a, &mut out) };
    out
}

/// [`quad`] on AVX-512 VNNI: two `vpdpbusd` per row (its 4 scales 4 times over `acc`'s 16
/// lanes).
///
/// # Safety
/// As [`quad`], and the CPU has AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn quad_avx512<const N: usize, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
    b0: usize,
    a: &[Q8Ptr; N],
    acc: &mut [__m512; N],
    fix: &mut [__m256; N],
) {
    // SAFETY: as in `quad`: the 4 blocks' nibbles, fifth bits, scales and activations are
    // inside the buffers the caller guarantees.
    unsafe {
        let (qh, qs) = fields::<HIGH>(row, blocks);
        let (v, h) = (qs.add(16 * b0), qh.wrapping_add(4 * b0));
        let w0 = unpack64::<HIGH>(v, h);
        let w1 = unpack64::<HIGH>(v.add(32), h.wrapping_add(8));
        let dw = _mm_cvtph_ps(_mm_loadl_epi64(row.add(2 * b0).cast()));
        for t in 0..N {
            let x = a[t].qs.add(32 * b0);
            let (x0, x1) = (
                _mm512_loadu_si512(x.cast()),
                _mm512_loadu_si512(x.add(64).cast()),
            );
            let zero = _mm512_setzero_si512();
            let sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, w0, x0), w1, x1);
            let ds = _mm_mul_ps(dw, _mm_loadu_ps(a[t].d.add(b0)));
            let sums = _mm_mul_ps(ds, _mm_loadu_ps(a[t].sums.add(b0)));
            let p = _mm512_cvtepi32_ps(sum);
            acc[t] = _mm512_fmadd_ps(_mm512_broadcast_f32x4(ds), p, acc[t]);
            fix[t] = _mm256_add_ps(fix[t], _mm256_set_m128(_mm_setzero_ps(), sums));
        }
    }
}

/// The last blocks (fewer than 4) on AVX-512 VNNI: a pair a `vpdpbusd`, as in the groups, its
/// two scales spread over its halves; an odd last block goes to [`tail`].
///
/// # Safety
/// As [`dot_avx512`] for the same `row`, `blocks` and activations, and `from <= blocks`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn tail_avx512<const N: usize, const HIGH: bool>(
    row: *const u8,
    blocks: usize,
    from: usize,
    a: &[Q8Ptr; N],
    out: &mut [f32; N],
) {
    // SAFETY: the caller guarantees `row` holds the repacked row.
    let (qh, qs) = unsafe { fields::<HIGH>(row, blocks) };
    let mut acc = [_mm512_setzero_ps(); N];
    let mut b = from;
    while b + 1 < blocks {
        // SAFETY: `b + 1 < blocks`: the pair's 32 bytes of nibbles at `qs + 16 · b`, 8 bytes of
        // fifth bits at `qh + 4 · b` and two scales are inside `row`; each activation row holds
        // blocks `b` and `b + 1` (64 values at `32 · b`, their scales and sums), as the caller
        // guarantees.
        unsafe {
            let w = unpack64::<HIGH>(qs.add(16 * b), qh.wrapping_add(4 * b));
            let d0 = f16_to_f32(u16_at(row.add(2 * b)));
            let d1 = f16_to_f32(u16_at(row.add(2 * b + 2)));
            for t in 0..N {
                let x = _mm512_loadu_si512(a[t].qs.add(32 * b).cast());
                let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x));
                let (s0, s1) = (d0 * *a[t].d.add(b), d1 * *a[t].d.add(b + 1));
                let s = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
                acc[t] = _mm512_fmadd_ps(s, p, acc[t]);
                let sums = s0 * *a[t].sums.add(b) + s1 * *a[t].sums.add(b + 1);
                out[t] -= offset::<HIGH>() * sums;
            }
        }
        b += 2;
    }
    for t in 0..N {
        out[t] += hsum512(acc[t]);
    }
    // SAFETY: the caller's row and activations; `b <= blocks`.
    unsafe { tail::<N, false, HIGH>(row, blocks, b, a, out) };
}

macro_rules! kernels {
    ($($name:ident, $name512:ident, $high:literal, $what:literal;)*) => {$(
        #[doc = concat!("A repacked ", $what, " row · `N` Q8 rows in lane order ([`dot`]).")]
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
            unsafe { dot::<N, $high>(row, blocks, a) }
        }

        #[doc = concat!("[`", stringify!($name), "`] on AVX-512 VNNI ([`dot_avx512`]).")]
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
            unsafe { dot_avx512::<N, $high>(row, blocks, a) }
        }
    )*};
}

kernels! {
    q4_0, q4_0_avx512, false, "Q4_0";
    q5_0, q5_0_avx512, true, "Q5_0";
}
