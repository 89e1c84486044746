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

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::quant::{q4k_scales, Acts, QType};

/// Proof that the CPU runs the kernels of this module (AVX2, FMA, F16C).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Isa(());

// === impl Isa ===

impl Isa {
    /// `Some` when the CPU has AVX2, FMA and F16C.
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Self(()))
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = i32::from(unsafe { p.cast::<u16>().read_unaligned() });
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

/// `sum(u8 × i8)` over each group of 4 bytes, as 8 `i32` lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// One activation row quantized in blocks of 32: values, per-block scales and per-block sums.
#[derive(Clone, Copy)]
pub(crate) struct Q8Ptr {
    pub qs: *const i8,
    pub d: *const f32,
    pub sums: *const i32,
}

/// One activation row quantized in blocks of 256: values, per-block scales, per-16 sums.
#[derive(Clone, Copy)]
pub(crate) struct Q8KPtr {
    pub qs: *const i8,
    pub d: *const f32,
    pub bsums: *const i16,
}

/// Q4_0 row (`blocks` × 18 bytes: f16 scale, 16 bytes of nibbles) · `N` Q8 rows.
///
/// # Safety
/// AVX2/FMA/F16C present; `row` valid for `blocks × 18` bytes and each activation for
/// `blocks × 32` values, `blocks` scales and sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_0<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8Ptr; N],
) -> [f32; N] {
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        unsafe {
            let blk = row.add(b * 18);
            let dw = f16_at(blk);
            let raw = _mm_loadu_si128(blk.add(2).cast());
            // Elements 0..16 are the low nibbles, 16..32 the high ones.
            let w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), mask);
            for t in 0..N {
                let x = _mm256_loadu_si256(a[t].qs.add(b * 32).cast());
                // The nibbles are q + 8: subtract 8 · sum(x) in lane 0.
                let fix = _mm256_setr_epi32(-8 * *a[t].sums.add(b), 0, 0, 0, 0, 0, 0, 0);
                let p = _mm256_add_epi32(dot_u8i8(w, x), fix);
                let scale = _mm256_set1_ps(dw * *a[t].d.add(b));
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[t]);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]);
    }
    out
}

/// Q8_0 row (`blocks` × 34 bytes: f16 scale, 32 signed bytes) · `N` Q8 rows.
///
/// # Safety
/// As [`q4_0`], with 34-byte blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_0<const N: usize>(
    row: *const u8,
    blocks: usize,
    a: [Q8Ptr; N],
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        unsafe {
            let blk = row.add(b * 34);
            let dw = f16_at(blk);
            let w = _mm256_loadu_si256(blk.add(2).cast());
            let abs = _mm256_sign_epi8(w, w);
            for t in 0..N {
                let x = _mm256_loadu_si256(a[t].qs.add(b * 32).cast());
                let p = dot_u8i8(abs, _mm256_sign_epi8(x, w));
                let scale = _mm256_set1_ps(dw * *a[t].d.add(b));
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[t]);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]);
    }
    out
}

/// Q4_K row (`blocks` × 144 bytes) · `N` Q8_K rows.
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
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        unsafe {
            let blk = row.add(b * 144);
            let d = f16_at(blk);
            let dmin = f16_at(blk.add(2));
            let (sc, mn) = q4k_scales(&*blk.add(4).cast::<[u8; 12]>());
            let mins = _mm256_cvtepu8_epi32(_mm_loadl_epi64(mn.as_ptr().cast()));
            let qs = blk.add(16);
            let mut sumi = [_mm256_setzero_si256(); N];
            for c in 0..4 {
                let q = _mm256_loadu_si256(qs.add(32 * c).cast());
                let lo = _mm256_and_si256(q, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
                let s_lo = _mm256_set1_epi16(i16::from(sc[2 * c]));
                let s_hi = _mm256_set1_epi16(i16::from(sc[2 * c + 1]));
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
                // Sub-block j sums activations 2j and 2j+1 of the per-16 sums.
                let bs = _mm256_loadu_si256(a[t].bsums.add(b * 16).cast());
                let pair = _mm256_madd_epi16(bs, ones);
                let m = _mm256_mullo_epi32(pair, mins);
                acc_min[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(dmin * da), _mm256_cvtepi32_ps(m), acc_min[t]);
            }
        }
    }
    let mut out = [0.0; N];
    for t in 0..N {
        out[t] = hsum_ps(acc[t]) - hsum_ps(acc_min[t]);
    }
    out
}

/// Q6_K row (`blocks` × 210 bytes) · `N` Q8_K rows.
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
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        unsafe {
            let blk = row.add(b * 210);
            let scales = blk.add(192).cast::<i8>();
            let d = f16_at(blk.add(208));
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
                let sc = scales.add(8 * half);
                for (i, q) in q.iter().enumerate() {
                    let s = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(*sc.add(2 * i + 1))),
                        _mm_set1_epi16(i16::from(*sc.add(2 * i))),
                    );
                    for t in 0..N {
                        let x =
                            _mm256_loadu_si256(a[t].qs.add(b * 256 + 128 * half + 32 * i).cast());
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*q, x), s);
                        sumi[t] = _mm256_add_epi32(sumi[t], p);
                    }
                }
            }
            // The stored q is the value + 32: subtract 32 · Σ sc[g] · sum16[g].
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales.cast()));
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
        let w = unsafe { f16_at(row.add(2 * j)) };
        for t in 0..N {
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
        let w = unsafe { w32.add(j).read_unaligned() };
        for t in 0..N {
            out[t] += w * unsafe { *a[t].add(j) };
        }
    }
    out
}

/// `Σ a[i] · b[i]` (attention scores).
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

/// [`dot_avx2`] behind the CPU proof.
pub(crate) fn dot(_: Isa, a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { dot_avx2(a, b) }
}

/// [`axpy_avx2`] behind the CPU proof.
pub(crate) fn axpy(_: Isa, y: &mut [f32], s: f32, x: &[f32]) {
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { axpy_avx2(y, s, x) }
}

/// [`exp_sub_sum_avx2`] behind the CPU proof.
pub(crate) fn exp_sub_sum(_: Isa, x: &mut [f32], max: f32) -> f32 {
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { exp_sub_sum_avx2(x, max) }
}

/// [`silu_mul_avx2`] behind the CPU proof.
pub(crate) fn silu_mul(_: Isa, gate: &mut [f32], up: &[f32]) {
    // SAFETY: `Isa` proves AVX2, FMA and F16C.
    unsafe { silu_mul_avx2(gate, up) }
}

/// `row · acts[t0 + i]` for `i < N`: one weight row of `cols` values in `qtype`'s blocks.
///
/// # Panics
/// When `row` is not one row of `cols` values, `acts` is not `cols` wide, lacks the form
/// `qtype` multiplies with, or has fewer than `t0 + N` rows.
#[inline]
pub(crate) fn tile<const N: usize>(
    _: Isa,
    qtype: QType,
    row: &[u8],
    cols: usize,
    acts: &Acts,
    t0: usize,
) -> [f32; N] {
    let blocks = cols / qtype.block();
    assert!(cols % qtype.block() == 0 && row.len() == blocks * qtype.block_bytes());
    assert!(acts.k == cols && t0 + N <= acts.m && acts.has_form_of(qtype));
    let p = row.as_ptr();
    // SAFETY: `Isa` proves the CPU features; `row` holds exactly `blocks` blocks (asserted);
    // the activation pointers come from `Acts`, whose buffers hold `m` rows of `k == cols`
    // values (with one scale per block and the sums) in the form `qtype` needs (asserted), and
    // `t0 + N <= m`.
    unsafe {
        match qtype {
            QType::Q4_0 => q4_0::<N>(p, blocks, acts.q8_ptrs::<N>(t0)),
            QType::Q8_0 => q8_0::<N>(p, blocks, acts.q8_ptrs::<N>(t0)),
            QType::Q4K => q4_k::<N>(p, blocks, acts.q8k_ptrs::<N>(t0)),
            QType::Q6K => q6_k::<N>(p, blocks, acts.q8k_ptrs::<N>(t0)),
            QType::F16 => f16::<N>(p, cols, acts.f32_ptrs::<N>(t0)),
            QType::F32 => f32::<N>(p, cols, acts.f32_ptrs::<N>(t0)),
        }
    }
}
