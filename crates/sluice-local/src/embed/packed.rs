//! `f32` matrix products against a weight matrix packed once, at load, for the encoder's
//! linear layers on x86_64 with AVX2 and FMA (AVX-512 where the CPU has it).
//!
//! A general `gemm` copies (packs) both operands into cache-friendly panels on every call. For
//! the products of a lone sentence (30 rows against a `384 × 1536` weight) that copy of the
//! weight costs more than the multiply. Here the weight is packed when the model loads: panel
//! `p` holds outputs `p·NR .. p·NR+NR` as `[inputs][NR]`, so a register tile of `MR` rows × `NR`
//! outputs reads one contiguous stream of the weight and broadcasts one activation per row and
//! step. The activations are read in place (row-major, `inputs` wide).
//!
//! | ISA | tile (rows × outputs) | accumulators |
//! | --- | --- | --- |
//! | AVX-512F | 12 × 32 | 24 `zmm` |
//! | AVX2 + FMA | 6 × 16 | 12 `ymm` |
//!
//! Rows go in blocks of [`BLOCK_ROWS`] and inputs in passes of [`DEPTH`], so a pass of a
//! panel stays in L1 while the tiles of a block go over it. Many rows: a task is one block of
//! rows across all panels; few rows: a task is a group of panels (disjoint output columns).
//! Either way there are more tasks than threads.
//!
//! On MiniLM's shapes (`packed_speed` below, 2 cores with AVX-512), 30 rows ran 1.6-6x faster
//! than `gemm` and 940 rows (a batch of 32 sentences) at 0.9-1.1x of it.

// Unsafe: the register tiles read and write through raw pointers with AVX2/AVX-512
// intrinsics, and rayon tasks write disjoint parts of one output buffer.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use rayon::prelude::*;

/// Which kernel a packed matrix was laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The best kernel this CPU runs, if any.
    pub(crate) fn detect() -> Option<Self> {
        if is_x86_feature_detected!("avx512f") {
            Some(Self::Avx512)
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Some(Self::Avx2)
        } else {
            None
        }
    }

    /// Outputs per panel.
    fn nr(self) -> usize {
        match self {
            Self::Avx512 => 32,
            Self::Avx2 => 16,
        }
    }

    /// Rows per register tile.
    fn mr(self) -> usize {
        match self {
            Self::Avx512 => MR_AVX512,
            Self::Avx2 => MR_AVX2,
        }
    }
}

/// A `[outputs, inputs]` weight (PyTorch's layout) with its bias, packed for [`Isa`].
pub(crate) struct Packed {
    isa: Isa,
    /// `panels × inputs × nr`; outputs past `outputs` in the last panel are zero.
    panels: Vec<f32>,
    /// `panels × nr`, zero-padded like the panels.
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Packed {
    /// Packs `weight` (`outputs × inputs`, row-major) and `bias` (`outputs`) for `isa`, which
    /// must be one [`Isa::detect`] returned on this machine.
    pub(crate) fn new(
        isa: Isa,
        weight: &[f32],
        bias: &[f32],
        outputs: usize,
        inputs: usize,
    ) -> Self {
        assert_eq!(weight.len(), outputs * inputs);
        assert_eq!(bias.len(), outputs);
        let nr = isa.nr();
        let count = outputs.div_ceil(nr);
        let mut panels = vec![0f32; count * inputs * nr];
        let mut padded = vec![0f32; count * nr];
        for (o, row) in weight.chunks_exact(inputs.max(1)).enumerate().take(outputs) {
            let (p, j) = (o / nr, o % nr);
            let panel = &mut panels[p * inputs * nr..(p + 1) * inputs * nr];
            for (i, &w) in row.iter().enumerate() {
                panel[i * nr + j] = w;
            }
        }
        padded[..outputs].copy_from_slice(bias);
        Self {
            isa,
            panels,
            bias: padded,
            inputs,
            outputs,
        }
    }

    /// Floats held (weights and bias, with the padding).
    pub(crate) fn floats(&self) -> usize {
        self.panels.len() + self.bias.len()
    }

    /// `out[rows × outputs] = x[rows × inputs] · Wᵀ + b`, on rayon's pool when the product is
    /// large enough to pay for it.
    pub(crate) fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n, nr) = (self.inputs, self.outputs, self.isa.nr());
        assert!(
            x.len() >= rows * k,
            "activations shorter than rows × inputs"
        );
        assert!(out.len() >= rows * n, "output shorter than rows × outputs");
        if rows == 0 || n == 0 {
            return;
        }
        let panels = n.div_ceil(nr);
        let threads = if rows * n * k >= 1 << 18 {
            rayon::current_num_threads().min(panels)
        } else {
            1
        };
        let c = SendPtr(out.as_mut_ptr());
        // SAFETY: `x` holds `rows × k` floats and `out` `rows × n` (checked above); each call
        // writes only its own panels' columns, so concurrent calls never write the same element,
        // and nothing reads `out` until they all return.
        let by_panels =
            |range: std::ops::Range<usize>| unsafe { self.panels_range(x, rows, c.get(), range) };
        // SAFETY: `range` is a block of rows inside `0..rows`: its `range.len() × k` activations
        // and the `range.len() × n` outputs from row `range.start` are inside `x` and `out`;
        // each call writes only its own rows, and nothing reads `out` until they all return.
        let by_rows = |range: std::ops::Range<usize>| unsafe {
            let x = &x[range.start * k..range.end * k];
            self.panels_range(x, range.len(), c.get().add(range.start * n), 0..panels)
        };
        // More tasks than threads, taken as threads come free: a core that something else
        // holds for a while (a tokenizer, the server) delays its share, not the whole product.
        if threads <= 1 {
            by_panels(0..panels);
        } else if rows >= threads * BLOCK_ROWS {
            // Many rows: a task is one block of rows across all panels (the weight is read by
            // every task, a block of activations by one).
            let blocks = rows.div_ceil(BLOCK_ROWS);
            (0..blocks).into_par_iter().for_each(|b| {
                by_rows(b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(rows));
            });
        } else {
            let share = panels.div_ceil(2 * threads);
            (0..panels.div_ceil(share)).into_par_iter().for_each(|t| {
                by_panels(t * share..((t + 1) * share).min(panels));
            });
        }
    }

    /// Panels `range` of the product, all rows.
    ///
    /// # Safety
    /// `x` must hold `rows × inputs` floats, `c` point at `rows × outputs` writable floats, and
    /// `range` lie inside the panels (`0..outputs.div_ceil(nr)`).
    unsafe fn panels_range(
        &self,
        x: &[f32],
        rows: usize,
        c: *mut f32,
        range: std::ops::Range<usize>,
    ) {
        let (k, n, nr, mr) = (self.inputs, self.outputs, self.isa.nr(), self.isa.mr());
        let mut start = 0;
        while start < rows {
            let end = (start + BLOCK_ROWS).min(rows);
            let mut k0 = 0;
            while k0 < k {
                // A block of rows × `DEPTH` inputs stays in L2 while the panels pass over it,
                // and each panel's `DEPTH` inputs (32 KiB) stay in L1 while its tiles pass
                // over them.
                let depth = DEPTH.min(k - k0);
                for p in range.clone() {
                    // SAFETY: `p` is a panel (the caller's contract) and `k0 < k`: inside
                    // `self.panels` (`panels × k × nr`) and `self.bias` (`panels × nr`).
                    let (b, bias) = unsafe {
                        (
                            self.panels.as_ptr().add((p * k + k0) * nr),
                            self.bias.as_ptr().add(p * nr),
                        )
                    };
                    let cols = nr.min(n - p * nr);
                    for r in (start..end).step_by(mr) {
                        // SAFETY: `r < rows`, `k0 < k` and `p · nr < n`: inside `x`
                        // (`rows × k`) and `c` (`rows × n`), as the caller guarantees.
                        let (a, c) = unsafe { (x.as_ptr().add(r * k + k0), c.add(r * n + p * nr)) };
                        let tile = Tile {
                            k: depth,
                            a,
                            lda: k,
                            b,
                            bias: (k0 == 0).then_some(bias),
                            c,
                            ldc: n,
                            cols,
                        };
                        let m = mr.min(end - r);
                        // SAFETY: `self.isa` came from `Isa::detect` on this machine (see
                        // `Packed::new`); the tile's `m` rows (`r + m <= end <= rows`), `depth`
                        // inputs and `cols` outputs are inside `x`, `c` and panel `p`.
                        unsafe {
                            match self.isa {
                                Isa::Avx512 => avx512(m, &tile),
                                Isa::Avx2 => avx2(m, &tile),
                            }
                        }
                    }
                }
                k0 += depth;
            }
            start = end;
        }
    }
}

/// Rows per block of activations (a multiple of both tile heights).
const BLOCK_ROWS: usize = 96;

/// Inputs per pass of the tiles over a panel.
const DEPTH: usize = 256;

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: hands disjoint rows or columns of one output buffer to rayon tasks (see
// `Packed::forward`); the buffer outlives them and only they write it while they run.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`: the tasks share the pointer only to write disjoint elements.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One register tile: `M` rows of activations `a` (`lda` apart) against `k` inputs of one
/// panel `b` (`[k][nr]`), into `c`.
struct Tile {
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    /// `Some`: the first pass, which starts from the bias; `None`: add to what `c` holds.
    bias: Option<*const f32>,
    c: *mut f32,
    ldc: usize,
    /// Outputs of this panel that exist (the rest are padding and are not stored).
    cols: usize,
}

/// Tile height of the AVX-512 kernel: 12 × 2 accumulators of the 32 `zmm` registers.
const MR_AVX512: usize = 12;
/// Tile height of the AVX2 kernel: 6 × 2 accumulators of the 16 `ymm` registers.
const MR_AVX2: usize = 6;

/// # Safety
/// The CPU has AVX-512F; `t` describes valid buffers for `m ≤ 12` rows.
unsafe fn avx512(m: usize, t: &Tile) {
    // SAFETY: the caller's contract (AVX-512F, `t` valid for `m` rows), and each arm runs the
    // kernel of exactly `m` rows.
    unsafe {
        match m {
            12 => tile_avx512::<12>(t),
            11 => tile_avx512::<11>(t),
            10 => tile_avx512::<10>(t),
            9 => tile_avx512::<9>(t),
            8 => tile_avx512::<8>(t),
            7 => tile_avx512::<7>(t),
            6 => tile_avx512::<6>(t),
            5 => tile_avx512::<5>(t),
            4 => tile_avx512::<4>(t),
            3 => tile_avx512::<3>(t),
            2 => tile_avx512::<2>(t),
            1 => tile_avx512::<1>(t),
            _ => unreachable!("tile of {m} rows"),
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA; `t` describes valid buffers for `m ≤ 6` rows.
unsafe fn avx2(m: usize, t: &Tile) {
    // SAFETY: the caller's contract (AVX2 and FMA, `t` valid for `m` rows), and each arm runs the
    // kernel of exactly `m` rows.
    unsafe {
        match m {
            6 => tile_avx2::<6>(t),
            5 => tile_avx2::<5>(t),
            4 => tile_avx2::<4>(t),
            3 => tile_avx2::<3>(t),
            2 => tile_avx2::<2>(t),
            1 => tile_avx2::<1>(t),
            _ => unreachable!("tile of {m} rows"),
        }
    }
}

/// One tile of `M` rows on AVX-512F.
///
/// # Safety
/// The CPU has AVX-512F; `t.a` is valid for `M` rows (`lda` apart) of `k` floats, `t.b` for
/// `k × 32` floats, `t.bias` (when set) for 32, and `t.c` for `M` rows (`ldc` apart) of `cols`
/// writable floats.
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const M: usize>(t: &Tile) {
    // SAFETY: the caller's contract: every load and store below is inside `t`'s buffers (rows
    // `i < M` of `a` and `c`, steps `< k` of the panel). Outputs past `cols` are masked off,
    // neither read nor written; their address may pass the end of `c`'s buffer, so it is
    // computed with `wrapping_add`.
    unsafe {
        let mask = |from: usize| -> __mmask16 {
            let n = t.cols.saturating_sub(from).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        match t.bias {
            Some(bias) => {
                let lo = _mm512_loadu_ps(bias);
                let hi = _mm512_loadu_ps(bias.add(16));
                acc = [[lo, hi]; M];
            }
            None => {
                for (i, [v0, v1]) in acc.iter_mut().enumerate() {
                    let c = t.c.add(i * t.ldc);
                    *v0 = _mm512_maskz_loadu_ps(mask(0), c);
                    *v1 = _mm512_maskz_loadu_ps(mask(16), c.wrapping_add(16));
                }
            }
        }
        let mut b = t.b;
        for step in 0..t.k {
            let w0 = _mm512_loadu_ps(b);
            let w1 = _mm512_loadu_ps(b.add(16));
            for (i, [v0, v1]) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*t.a.add(i * t.lda + step));
                *v0 = _mm512_fmadd_ps(v, w0, *v0);
                *v1 = _mm512_fmadd_ps(v, w1, *v1);
            }
            b = b.add(32);
        }
        for (i, [v0, v1]) in acc.iter().enumerate() {
            let c = t.c.add(i * t.ldc);
            if t.cols >= 32 {
                _mm512_storeu_ps(c, *v0);
                _mm512_storeu_ps(c.add(16), *v1);
            } else {
                _mm512_mask_storeu_ps(c, mask(0), *v0);
                _mm512_mask_storeu_ps(c.wrapping_add(16), mask(16), *v1);
            }
        }
    }
}

/// One tile of `M` rows on AVX2 and FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA; `t.a` is valid for `M` rows (`lda` apart) of `k` floats, `t.b`
/// for `k × 16` floats, `t.bias` (when set) for 16, and `t.c` for `M` rows (`ldc` apart) of
/// `cols` writable floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const M: usize>(t: &Tile) {
    // SAFETY: the caller's contract: every load and store below is inside `t`'s buffers (rows
    // `i < M` of `a` and `c`, steps `< k` of the panel); partial rows of `c` (`cols < 16`) go
    // through a scratch copy of `cols` floats.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        match t.bias {
            Some(bias) => {
                let lo = _mm256_loadu_ps(bias);
                let hi = _mm256_loadu_ps(bias.add(8));
                acc = [[lo, hi]; M];
            }
            None => {
                for (i, [v0, v1]) in acc.iter_mut().enumerate() {
                    let mut tmp = [0f32; 16];
                    let cols = t.cols.min(16);
                    std::ptr::copy_nonoverlapping(t.c.add(i * t.ldc), tmp.as_mut_ptr(), cols);
                    *v0 = _mm256_loadu_ps(tmp.as_ptr());
                    *v1 = _mm256_loadu_ps(tmp.as_ptr().add(8));
                }
            }
        }
        let mut b = t.b;
        for step in 0..t.k {
            let w0 = _mm256_loadu_ps(b);
            let w1 = _mm256_loadu_ps(b.add(8));
            for (i, [v0, v1]) in acc.iter_mut().enumerate() {
                let v = _mm256_broadcast_ss(&*t.a.add(i * t.lda + step));
                *v0 = _mm256_fmadd_ps(v, w0, *v0);
                *v1 = _mm256_fmadd_ps(v, w1, *v1);
            }
            b = b.add(16);
        }
        for (i, [v0, v1]) in acc.iter().enumerate() {
            let c = t.c.add(i * t.ldc);
            if t.cols >= 16 {
                _mm256_storeu_ps(c, *v0);
                _mm256_storeu_ps(c.add(8), *v1);
            } else {
                let mut tmp = [0f32; 16];
                _mm256_storeu_ps(tmp.as_mut_ptr(), *v0);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), *v1);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), c, t.cols);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], rows: usize, w: &[f32], bias: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * n];
        for r in 0..rows {
            for o in 0..n {
                out[r * n + o] = bias[o] + (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum::<f32>();
            }
        }
        out
    }

    fn isas() -> Vec<Isa> {
        match Isa::detect() {
            Some(Isa::Avx512) => vec![Isa::Avx512, Isa::Avx2],
            Some(Isa::Avx2) => vec![Isa::Avx2],
            None => vec![],
        }
    }

    /// Every tile height, a partial last panel, an odd inner width, one row and many (more than
    /// one row block), single- and multi-threaded.
    #[test]
    fn matches_a_naive_product_for_every_shape() {
        for isa in isas() {
            for &(rows, n, k) in &[
                (1, 40, 37),
                (5, 16, 8),
                (7, 33, 19),
                (13, 64, 64),
                (30, 384, 384),
                (61, 1536, 96),
                (300, 48, 600),
                (9, 40, 2 * DEPTH + 3),
            ] {
                let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 0.2).collect();
                let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.11).cos()).collect();
                let packed = Packed::new(isa, &w, &bias, n, k);
                // A sentinel past the end shows that nothing writes beyond rows × n.
                let mut out = vec![f32::NAN; rows * n + 1];
                packed.forward(&x, rows, &mut out);
                assert!(out[rows * n].is_nan(), "{isa:?} wrote past the end");
                let want = naive(&x, rows, &w, &bias, n, k);
                for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                    let tol = 1e-4 * (1.0 + want.abs());
                    assert!(
                        (got - want).abs() < tol,
                        "{isa:?} {rows}x{n}x{k} at {i}: {got} against {want}"
                    );
                }
            }
        }
    }
}

/// Packed products against `gemm` (which packs on every call) on MiniLM's shapes, alone and
/// for a batch of 32 sentences (~940 rows). A measurement, not a test:
/// `cargo test --release -p sluice-local --lib packed_speed -- --ignored --nocapture`.
#[cfg(test)]
mod speed {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore = "a measurement; run in release"]
    fn packed_speed() {
        let Some(isa) = Isa::detect() else { return };
        for &(rows, n, k) in &[
            (12, 32, 256),
            (96, 64, 512),
            (30, 1152, 384),
            (30, 1536, 384),
            (30, 384, 1536),
            (100, 1152, 384),
            (100, 1536, 384),
            (100, 384, 1536),
            (940, 1152, 384),
            (940, 1536, 384),
            (940, 384, 1536),
        ] {
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let bias = vec![0.1f32; n];
            let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut out = vec![0f32; rows * n];
            let packed = Packed::new(isa, &w, &bias, n, k);
            let reps = (3e10 / (rows * n * k) as f64).ceil() as usize;
            let time = |f: &mut dyn FnMut()| {
                f();
                let start = Instant::now();
                for _ in 0..reps {
                    f();
                }
                start.elapsed().as_secs_f64() / reps as f64
            };
            let ours = time(&mut || packed.forward(&x, rows, &mut out));
            // SAFETY: `out` is `rows × n`, `x` `rows × k` and `w` `n × k` (read as its
            // transpose), all row-major, as the dimensions and strides passed say.
            let theirs = time(&mut || unsafe {
                gemm::gemm(
                    rows,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    k as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(rayon::current_num_threads()),
                )
            });
            let flops = 2.0 * (rows * n * k) as f64;
            println!(
                "{rows}x{n}x{k}: packed {:.1} GFLOP/s, gemm {:.1} GFLOP/s ({:.2}x)",
                flops / ours / 1e9,
                flops / theirs / 1e9,
                theirs / ours
            );
        }
    }
}
