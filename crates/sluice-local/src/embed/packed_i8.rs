//! 8-bit matrix products for the encoder's linear layers on x86_64 with AVX-512 VNNI
//! (`vpdpbusd`: 64 byte products summed into 16 `i32` lanes per instruction, four times the
//! multiply-adds of an `f32` FMA).
//!
//! Both operands are held as Q8_0 holds them (ggml's format of 32 signed bytes and one scale
//! per block of 32 inputs, `scale = max|x| / 127`, values rounded to the nearest integer):
//! the weight per output row and block, at load; the activations per token row and block, on
//! every product. A block's integer products are summed exactly in `i32` and scaled once
//! (weight scale × activation scale) into `f32` accumulators. Blocks of 32 keep an outlier
//! feature (BERT's hidden states have a few) from flattening the other 31 values' resolution
//! across the whole row, as one scale per token would.
//!
//! Why not the native engine's Q8_0 kernels (`native/simd`): they multiply one weight row with
//! four activation rows at a time (a matrix-vector design for decoding), converting and
//! scaling every pair of blocks in `f32` (about four instructions per `vpdpbusd`) and running
//! any last group of fewer than 8 blocks (a third of a 384-wide row) on a scalar-reduction
//! path. On a 100-token sentence's shapes that is slower than the `f32` register tiles of
//! `embed/packed.rs` (one thread: 7-14 GFLOP/s against 24-50; `q8_0_prefill_speed` in
//! `native/tests.rs` and `packed_speed`, 2026-12-05, a loaded machine). Here the
//! weight is packed like `packed.rs`'s panels, so a register tile of [`MR`] rows × 32 outputs
//! runs 2·`MR` `vpdpbusd` per load of 4 inputs' weights and converts once per block of 32.
//!
//! Layout: panel `p` holds outputs `32p .. 32p + 32`; per block of 32 inputs, 8 steps of 4
//! inputs, each step 32 outputs × 4 bytes (one `zmm` per 16 outputs, lane `j` the 4 weights of
//! output `j`). Activations go in as `q + 128` (unsigned, as `vpdpbusd` multiplies unsigned
//! bytes with signed ones); the `128 · Σw` this adds is taken off by starting each block's
//! integer sums from `−128 · Σw` of the block (kept per output and block).

// Unsafe: the register tiles read and write through raw pointers with AVX-512 intrinsics, and
// rayon tasks write disjoint parts of one output buffer.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use rayon::prelude::*;

/// Outputs per panel (two `zmm` of 16 `i32` lanes).
const NR: usize = 32;
/// Rows per register tile: 2·`MR` integer and 2·`MR` `f32` accumulators of the 32 `zmm`.
const MR: usize = 6;
/// Inputs per block (one scale each).
const BLOCK: usize = 32;
/// Bytes of one block of one panel: 32 inputs × 32 outputs.
const PANEL_BLOCK: usize = BLOCK * NR;

/// Whether this CPU runs the kernels (AVX-512F/BW and VNNI).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// A `[outputs, inputs]` weight (PyTorch's layout) in 8 bits with its `f32` bias, packed in
/// panels. Built only where [`available`] is true and `inputs` is whole blocks of 32.
pub(crate) struct PackedI8 {
    /// `panels × blocks × 8 steps × 32 outputs × 4` signed bytes; outputs past `outputs` are 0.
    panels: Vec<i8>,
    /// `panels × blocks × 32`: each output's weight scale in each block.
    scales: Vec<f32>,
    /// `panels × blocks × 32`: `−128 · Σ` of each output's 32 weights in each block.
    zero: Vec<i32>,
    /// `panels × 32`, zero-padded.
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl PackedI8 {
    /// Quantizes and packs `weight` (`outputs × inputs`, row-major) and `bias`; `None` when the
    /// CPU lacks the kernels or `inputs` is not a multiple of 32.
    pub(crate) fn new(weight: &[f32], bias: &[f32], outputs: usize, inputs: usize) -> Option<Self> {
        if !available() || inputs == 0 || inputs % BLOCK != 0 {
            return None;
        }
        assert_eq!(weight.len(), outputs * inputs);
        assert_eq!(bias.len(), outputs);
        let (count, blocks) = (outputs.div_ceil(NR), inputs / BLOCK);
        let mut panels = vec![0i8; count * blocks * PANEL_BLOCK];
        let mut scales = vec![0f32; count * blocks * NR];
        let mut zero = vec![0i32; count * blocks * NR];
        let mut q = [0i8; BLOCK];
        for (o, row) in weight.chunks_exact(inputs).enumerate() {
            let (p, j) = (o / NR, o % NR);
            for (b, xs) in row.chunks_exact(BLOCK).enumerate() {
                let d = quantize_block(xs, &mut q);
                let at = (p * blocks + b) * NR + j;
                scales[at] = d;
                zero[at] = -128 * q.iter().map(|&v| i32::from(v)).sum::<i32>();
                let panel = &mut panels[(p * blocks + b) * PANEL_BLOCK..][..PANEL_BLOCK];
                for (i, &v) in q.iter().enumerate() {
                    panel[(i / 4) * NR * 4 + j * 4 + i % 4] = v;
                }
            }
        }
        let mut padded = vec![0f32; count * NR];
        padded[..outputs].copy_from_slice(bias);
        Some(Self {
            panels,
            scales,
            zero,
            bias: padded,
            inputs,
            outputs,
        })
    }

    /// Bytes held (weights, scales, sums and bias, with the padding).
    pub(crate) fn bytes(&self) -> usize {
        self.panels.len() + 4 * (self.scales.len() + self.zero.len() + self.bias.len())
    }

    /// `out[rows × outputs] = x[rows × inputs] · Wᵀ + b`, the activations quantized first;
    /// on rayon's pool when the product is large enough to pay for it.
    pub(crate) fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n) = (self.inputs, self.outputs);
        assert!(
            x.len() >= rows * k,
            "activations shorter than rows × inputs"
        );
        assert!(out.len() >= rows * n, "output shorter than rows × outputs");
        if rows == 0 || n == 0 {
            return;
        }
        let acts = Quantized::new(&x[..rows * k], k);
        let panels = n.div_ceil(NR);
        let threads = if rows * n * k >= 1 << 18 {
            rayon::current_num_threads().min(panels)
        } else {
            1
        };
        let c = SendPtr(out.as_mut_ptr());
        // SAFETY: `acts` holds `rows × k` values and `out` `rows × n` floats (checked above);
        // each call writes only its own panels' columns, so concurrent calls never write the
        // same element, and nothing reads `out` until they all return.
        let by_panels = |range: std::ops::Range<usize>| unsafe {
            self.panels_range(&acts, rows, c.get(), range)
        };
        if threads <= 1 {
            by_panels(0..panels);
        } else {
            // More tasks than threads, taken as threads come free (as in `packed.rs`).
            let share = panels.div_ceil(2 * threads);
            (0..panels.div_ceil(share)).into_par_iter().for_each(|t| {
                by_panels(t * share..((t + 1) * share).min(panels));
            });
        }
    }

    /// Panels `range` of the product, all rows.
    ///
    /// # Safety
    /// `acts` must hold `rows` rows of `inputs` values, `c` point at `rows × outputs` writable
    /// floats, `range` lie inside the panels, and the CPU run the kernels ([`available`], true
    /// since `new` returned `Some`).
    unsafe fn panels_range(
        &self,
        acts: &Quantized,
        rows: usize,
        c: *mut f32,
        range: std::ops::Range<usize>,
    ) {
        let (k, n, blocks) = (self.inputs, self.outputs, self.inputs / BLOCK);
        for p in range {
            let at = p * blocks;
            for r in (0..rows).step_by(MR) {
                let tile = Tile {
                    blocks,
                    a: acts.q[r * k..].as_ptr(),
                    lda: k,
                    sa: acts.scales[r * blocks..].as_ptr(),
                    b: self.panels[at * PANEL_BLOCK..].as_ptr(),
                    sb: self.scales[at * NR..].as_ptr(),
                    zero: self.zero[at * NR..].as_ptr(),
                    bias: self.bias[p * NR..].as_ptr(),
                    // SAFETY: `r < rows` and `p · 32 < n`: inside `c` (`rows × n`).
                    c: unsafe { c.add(r * n + p * NR) },
                    ldc: n,
                    cols: NR.min(n - p * NR),
                };
                // SAFETY: the tile's rows (`r + m <= rows`), blocks and outputs are inside
                // the buffers, as the caller guarantees; the CPU has the features.
                unsafe { tile_rows(MR.min(rows - r), &tile) };
            }
        }
    }
}

/// Activation rows in 8 bits: `q + 128` per value, one scale per row and block.
struct Quantized {
    q: Vec<u8>,
    scales: Vec<f32>,
}

impl Quantized {
    /// `x` (rows of `k` values, `k` a multiple of 32) quantized, split across rayon's pool for
    /// many rows.
    fn new(x: &[f32], k: usize) -> Self {
        let mut q = vec![0u8; x.len()];
        let mut scales = vec![0f32; x.len() / BLOCK];
        let one = |((xs, qs), ds): ((&[f32], &mut [u8]), &mut [f32])| {
            // SAFETY: `PackedI8` exists only where the CPU has AVX-512F/BW (`available`); the
            // three slices are the same rows' values, bytes and block scales.
            unsafe { quantize_rows(xs, qs, ds) }
        };
        // About 16 K values a task.
        let chunk = ((1 << 14) / k.max(1)).max(1) * k;
        if x.len() >= 1 << 15 {
            x.par_chunks(chunk)
                .zip(q.par_chunks_mut(chunk))
                .zip(scales.par_chunks_mut(chunk / BLOCK))
                .for_each(one);
        } else {
            one(((x, &mut q), &mut scales));
        }
        Self { q, scales }
    }
}

/// One block of 32 weights in 8 bits (Q8_0's rounding); returns the scale.
fn quantize_block(xs: &[f32], q: &mut [i8; BLOCK]) -> f32 {
    let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in q.iter_mut().zip(xs) {
        // Round half away from zero; |v · id| ≤ 127.
        let r = v * id;
        *q = (r + 0.5f32.copysign(r)) as i8;
    }
    d
}

/// Blocks of 32 values → `round(x / d) + 128` and `d = max|x| / 127` per block.
///
/// # Safety
/// The CPU has AVX-512F/BW; `q` is as long as `xs`, a multiple of 32, and `d` `xs.len() / 32`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_rows(xs: &[f32], q: &mut [u8], d: &mut [f32]) {
    let offset = _mm512_set1_epi32(128);
    for ((x, q), d) in xs.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)).zip(d) {
        // SAFETY: `x` holds 32 floats and `q` 32 bytes (the chunks above).
        unsafe {
            let v0 = _mm512_loadu_ps(x.as_ptr());
            let v1 = _mm512_loadu_ps(x.as_ptr().add(16));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            *d = amax / 127.0;
            let inv = _mm512_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
            // Rounded to the nearest (even on ties); |x · inv| ≤ 127, so + 128 is 1..=255.
            let q0 = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), offset);
            let q1 = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, inv)), offset);
            _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(q1));
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: hands disjoint columns of one output buffer to rayon tasks (see `PackedI8::forward`);
// the buffer outlives them and only they write it while they run.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`: the tasks share the pointer only to write disjoint elements.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One register tile: up to [`MR`] rows of quantized activations against one panel.
struct Tile {
    blocks: usize,
    /// Row `i` of the activations at `a + i · lda`, its block scales at `sa + i · blocks`.
    a: *const u8,
    lda: usize,
    sa: *const f32,
    /// The panel's blocks, weight scales and `−128 · Σw` (`blocks × 32` each), bias (32).
    b: *const i8,
    sb: *const f32,
    zero: *const i32,
    bias: *const f32,
    /// Row `i` of the output at `c + i · ldc`; `cols` of the 32 outputs exist.
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

/// # Safety
/// As [`tile`] for `m ≤ MR` rows.
unsafe fn tile_rows(m: usize, t: &Tile) {
    // SAFETY: the caller's contract, and each arm runs the kernel of exactly `m` rows.
    unsafe {
        match m {
            6 => tile::<6>(t),
            5 => tile::<5>(t),
            4 => tile::<4>(t),
            3 => tile::<3>(t),
            2 => tile::<2>(t),
            1 => tile::<1>(t),
            _ => unreachable!("tile of {m} rows"),
        }
    }
}

/// One tile of `M` rows.
///
/// # Safety
/// The CPU has AVX-512F/BW/VNNI; `t.a` is valid for `M` rows (`lda` apart) of `32 · blocks`
/// bytes and `t.sa` for their `blocks` scales each, the panel fields for `blocks` blocks, and
/// `t.c` for `M` rows (`ldc` apart) of `cols` writable floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const M: usize>(t: &Tile) {
    // SAFETY: the caller's contract: every load and store is inside `t`'s buffers. Outputs past
    // `cols` are masked off; their address may pass the end of `c`'s buffer, so it is computed
    // with `wrapping_add`.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        for blk in 0..t.blocks {
            let z0 = _mm512_loadu_si512(t.zero.add(blk * NR).cast());
            let z1 = _mm512_loadu_si512(t.zero.add(blk * NR + 16).cast());
            let mut sums = [[z0, z1]; M];
            let b = t.b.add(blk * PANEL_BLOCK);
            for step in 0..BLOCK / 4 {
                let w0 = _mm512_loadu_si512(b.add(step * 4 * NR).cast());
                let w1 = _mm512_loadu_si512(b.add(step * 4 * NR + 64).cast());
                for (i, [s0, s1]) in sums.iter_mut().enumerate() {
                    let four = t.a.add(i * t.lda + blk * BLOCK + 4 * step);
                    let x = _mm512_set1_epi32(four.cast::<i32>().read_unaligned());
                    *s0 = _mm512_dpbusd_epi32(*s0, x, w0);
                    *s1 = _mm512_dpbusd_epi32(*s1, x, w1);
                }
            }
            let d0 = _mm512_loadu_ps(t.sb.add(blk * NR));
            let d1 = _mm512_loadu_ps(t.sb.add(blk * NR + 16));
            for (i, ([a0, a1], [s0, s1])) in acc.iter_mut().zip(&sums).enumerate() {
                let dx = _mm512_set1_ps(*t.sa.add(i * t.blocks + blk));
                *a0 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(*s0), d0), dx, *a0);
                *a1 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(*s1), d1), dx, *a1);
            }
        }
        let mask = |from: usize| -> __mmask16 {
            let n = t.cols.saturating_sub(from).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        let bias0 = _mm512_loadu_ps(t.bias);
        let bias1 = _mm512_loadu_ps(t.bias.add(16));
        for (i, [a0, a1]) in acc.iter().enumerate() {
            let c = t.c.add(i * t.ldc);
            _mm512_mask_storeu_ps(c, mask(0), _mm512_add_ps(*a0, bias0));
            _mm512_mask_storeu_ps(c.wrapping_add(16), mask(16), _mm512_add_ps(*a1, bias1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product against the same arithmetic in scalar code (each block's integer sum scaled
    /// by both scales), and against the `f32` product within the quantization's error.
    #[test]
    fn matches_the_blockwise_formula_for_every_shape() {
        if !available() {
            return;
        }
        for &(rows, n, k) in &[
            (1, 40, 32),
            (5, 16, 64),
            (7, 33, 96),
            (13, 64, 384),
            (30, 384, 384),
            (100, 1536, 384),
            (100, 384, 1536),
        ] {
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 0.2).collect();
            let x: Vec<f32> = (0..rows * k)
                .map(|i| (i as f32 * 0.11).cos() * if i % 97 == 0 { 8.0 } else { 1.0 })
                .collect();
            let packed = PackedI8::new(&w, &bias, n, k).expect("packs");
            // A sentinel past the end shows that nothing writes beyond rows × n.
            let mut out = vec![f32::NAN; rows * n + 1];
            packed.forward(&x, rows, &mut out);
            assert!(out[rows * n].is_nan(), "wrote past the end");
            let acts = Quantized::new(&x, k);
            for r in 0..rows {
                for o in 0..n {
                    let (mut want, mut exact) = (f64::from(bias[o]), f64::from(bias[o]));
                    for b in 0..k / BLOCK {
                        let mut q = [0i8; BLOCK];
                        let dw = quantize_block(&w[o * k + b * BLOCK..][..BLOCK], &mut q);
                        let dx = acts.scales[r * k / BLOCK + b];
                        let sum: i32 = (0..BLOCK)
                            .map(|i| {
                                let a = i32::from(acts.q[r * k + b * BLOCK + i]) - 128;
                                a * i32::from(q[i])
                            })
                            .sum();
                        want += f64::from(sum) * f64::from(dw) * f64::from(dx);
                    }
                    for i in 0..k {
                        exact += f64::from(x[r * k + i]) * f64::from(w[o * k + i]);
                    }
                    let got = f64::from(out[r * n + o]);
                    let at = format!("{rows}x{n}x{k} ({r},{o})");
                    assert!(
                        (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                        "{at}: {got} {want}"
                    );
                    // Two 8-bit roundings per product: well under 2 % of the row's magnitude.
                    assert!(
                        (got - exact).abs() < 0.02 * (k as f64).sqrt(),
                        "{at}: {got} {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn refuses_widths_that_are_not_whole_blocks() {
        assert!(PackedI8::new(&[0.0; 40], &[0.0; 1], 1, 40).is_none());
    }
}
