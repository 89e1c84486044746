//! The F16 KV cache's kernels: keys and values stored as IEEE halves (half the memory of F32, as
//! llama.cpp's default cache), converted with F16C (`vcvtps2ph` on the way in, `vcvtph2ps` on
//! the way out: 8 per instruction on AVX2, 16 on AVX-512). The attention over them is
//! [`super::attend_f16`].

use std::arch::x86_64::*;

use super::super::format::f16_to_f32;

/// `dst[i] = f16(src[i])`, rounded to nearest even, 8 at a time.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn to_f16_avx2(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    let n = src.len();
    let mut i = 0;
    while i < n {
        let take = (n - i).min(8);
        let mut lanes = [0.0f32; 8];
        lanes[..take].copy_from_slice(&src[i..i + take]);
        let mut halves = [0u16; 8];
        // SAFETY: `lanes` holds 8 floats and `halves` 8 halves (16 bytes).
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(lanes.as_ptr()));
            _mm_storeu_si128(halves.as_mut_ptr().cast(), h);
        }
        dst[i..i + take].copy_from_slice(&halves[..take]);
        i += take;
    }
}

/// `y[i] += s · x[i]` over `n` values, `x` in halves.
///
/// # Safety
/// AVX2/FMA/F16C present; `y` valid for `n` floats and `x` for `n` halves.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn axpy_f16(y: *mut f32, s: f32, x: *const u16, n: usize) {
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`: 8 floats of `y` and 8 halves of `x` at `i`.
        unsafe {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(x.add(i).cast()));
            _mm256_storeu_ps(y.add(i), _mm256_fmadd_ps(sv, v, _mm256_loadu_ps(y.add(i))));
        }
        i += 8;
    }
    for j in i..n {
        // SAFETY: `j < n`.
        unsafe { *y.add(j) += s * f16_to_f32(*x.add(j)) };
    }
}

/// [`axpy_f16`] 16 values at a time; the last `n % 16` on AVX2.
///
/// # Safety
/// As [`axpy_f16`], and the CPU has AVX-512F.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn axpy_f16_avx512(y: *mut f32, s: f32, x: *const u16, n: usize) {
    let sv = _mm512_set1_ps(s);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`: 16 floats of `y` and 16 halves of `x` at `i`.
        unsafe {
            let v = _mm512_cvtph_ps(_mm256_loadu_si256(x.add(i).cast()));
            _mm512_storeu_ps(y.add(i), _mm512_fmadd_ps(sv, v, _mm512_loadu_ps(y.add(i))));
        }
        i += 16;
    }
    // SAFETY: the values `i..n` of the same buffers.
    unsafe { axpy_f16(y.add(i), s, x.add(i), n - i) }
}
