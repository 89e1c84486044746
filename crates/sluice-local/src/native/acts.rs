//! Activations: `m` rows of `k` values, with the 8-bit forms the weight formats multiply with
//! (quantized the way ggml does), and the raw row pointers the kernels read them through.

use super::format::{lane_groups, lane_source, ActForm, QType};

/// One activation row quantized in blocks of 32: values, per-block scales and per-block sums
/// (as `f32`).
#[derive(Clone, Copy)]
pub(crate) struct Q8Ptr {
    pub qs: *const i8,
    pub d: *const f32,
    pub sums: *const f32,
}

/// One activation row quantized in blocks of 256: values, per-block scales, per-16 sums.
#[derive(Clone, Copy)]
pub(crate) struct Q8KPtr {
    pub qs: *const i8,
    pub d: *const f32,
    pub bsums: *const i16,
}

/// `m` activation rows of `k` values, with the quantized forms the weights ask for.
#[derive(Debug, Default)]
pub(crate) struct Acts {
    pub(crate) m: usize,
    pub(crate) k: usize,
    /// `m × k` values.
    pub(crate) x: Vec<f32>,
    q8: Option<Quantized>,
    /// `q8`'s values in lane order ([`lane_groups`]), for Q4_0 and Q5_0.
    lanes: Option<Vec<i8>>,
    q8k: Option<Quantized>,
}

/// Activations in 8 bits: `m × k` values, one scale per block, and per-block (Q8, as `f32`)
/// or per-16 (Q8K, as `i16`) sums.
#[derive(Debug, Default)]
struct Quantized {
    qs: Vec<i8>,
    d: Vec<f32>,
    sums32: Vec<f32>,
    sums16: Vec<i16>,
}

// === impl Acts ===

impl Acts {
    /// Takes `m` rows of `k` values (`x.len() == m · k`).
    pub(crate) fn new(x: Vec<f32>, m: usize, k: usize) -> Self {
        assert_eq!(x.len(), m * k);
        Self {
            m,
            k,
            x,
            q8: None,
            lanes: None,
            q8k: None,
        }
    }

    /// Makes sure the form `qtype` multiplies with is there.
    pub(crate) fn prepare(&mut self, qtype: QType) {
        match qtype.acts() {
            ActForm::F32 => {}
            ActForm::Q8 if self.q8.is_none() => self.q8 = Some(quantize(&self.x, 32, 32)),
            ActForm::Q8Lanes if self.lanes.is_none() => {
                let q8 = self.q8.get_or_insert_with(|| quantize(&self.x, 32, 32));
                self.lanes = Some(lane_order(&q8.qs, self.k));
            }
            ActForm::Q8K if self.q8k.is_none() => self.q8k = Some(quantize(&self.x, 256, 16)),
            _ => {}
        }
    }

    pub(super) fn has_form_of(&self, qtype: QType) -> bool {
        self.has(qtype.acts())
    }

    fn has(&self, form: ActForm) -> bool {
        match form {
            ActForm::F32 => true,
            ActForm::Q8 => self.q8.as_ref().is_some_and(|q| q.qs.len() == self.x.len()),
            ActForm::Q8Lanes => {
                self.has(ActForm::Q8) && self.lanes.as_ref().map(Vec::len) == Some(self.x.len())
            }
            ActForm::Q8K => self
                .q8k
                .as_ref()
                .is_some_and(|q| q.qs.len() == self.x.len()),
        }
    }

    pub(super) fn q8_ptrs<const N: usize>(&self, t0: usize) -> [Q8Ptr; N] {
        self.q8_rows(t0, false)
    }

    /// [`Acts::q8_ptrs`] with the values in lane order ([`lane_groups`]).
    pub(super) fn q8_lane_ptrs<const N: usize>(&self, t0: usize) -> [Q8Ptr; N] {
        self.q8_rows(t0, true)
    }

    fn q8_rows<const N: usize>(&self, t0: usize, lanes: bool) -> [Q8Ptr; N] {
        let q = self.q8.as_ref().expect("checked by dot_rows");
        let qs = if lanes {
            self.lanes.as_ref().expect("checked by dot_rows")
        } else {
            &q.qs
        };
        let blocks = self.k / 32;
        std::array::from_fn(|i| {
            let t = t0 + i;
            Q8Ptr {
                qs: qs[t * self.k..].as_ptr(),
                d: q.d[t * blocks..].as_ptr(),
                sums: q.sums32[t * blocks..].as_ptr(),
            }
        })
    }

    pub(super) fn q8k_ptrs<const N: usize>(&self, t0: usize) -> [Q8KPtr; N] {
        let q = self.q8k.as_ref().expect("checked by dot_rows");
        let blocks = self.k / 256;
        std::array::from_fn(|i| {
            let t = t0 + i;
            Q8KPtr {
                qs: q.qs[t * self.k..].as_ptr(),
                d: q.d[t * blocks..].as_ptr(),
                bsums: q.sums16[t * self.k / 16..].as_ptr(),
            }
        })
    }

    pub(super) fn f32_ptrs<const N: usize>(&self, t0: usize) -> [*const f32; N] {
        std::array::from_fn(|i| self.x[(t0 + i) * self.k..].as_ptr())
    }

    /// The values as the kernels see them (dequantized `qtype` form), for tests.
    #[cfg(test)]
    pub(crate) fn seen(&self, qtype: QType) -> Vec<f32> {
        let (q, block) = match qtype.acts() {
            ActForm::F32 => return self.x.clone(),
            ActForm::Q8 | ActForm::Q8Lanes => (self.q8.as_ref().expect("prepared"), 32),
            ActForm::Q8K => (self.q8k.as_ref().expect("prepared"), 256),
        };
        q.qs.iter()
            .enumerate()
            .map(|(i, &v)| f32::from(v) * q.d[i / block])
            .collect()
    }
}

/// Rows of `k` quantized values with their blocks in lane groups ([`lane_groups`]).
fn lane_order(qs: &[i8], k: usize) -> Vec<i8> {
    let mut out = qs.to_vec();
    for (row, src) in out.chunks_exact_mut(k).zip(qs.chunks_exact(k)) {
        for (first, g) in lane_groups(k / 32) {
            let (o, s) = (&mut row[32 * first..32 * (first + g)], &src[32 * first..]);
            for (p, v) in o.iter_mut().enumerate() {
                *v = s[lane_source(p, g)];
            }
        }
    }
    out
}

/// Symmetric 8-bit quantization in blocks of `block` (`scale = max|x| / 127`), with sums over
/// runs of `sum_every` values (`f32` per block when `sum_every == block`, else `i16`).
fn quantize(x: &[f32], block: usize, sum_every: usize) -> Quantized {
    let mut out = Quantized {
        qs: vec![0; x.len()],
        d: Vec::with_capacity(x.len() / block),
        ..Quantized::default()
    };
    for (xs, qs) in x.chunks_exact(block).zip(out.qs.chunks_exact_mut(block)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in qs.iter_mut().zip(xs) {
            // Round half away from zero (as `roundf`, without the call); |v · id| ≤ 127.
            let r = v * id;
            *q = (r + 0.5f32.copysign(r)) as i8;
        }
        out.d.push(d);
        for run in qs.chunks_exact(sum_every) {
            let s: i32 = run.iter().map(|&v| i32::from(v)).sum();
            if sum_every == block {
                out.sums32.push(s as f32);
            } else {
                // |s| ≤ 16 · 127 fits.
                out.sums16.push(s as i16);
            }
        }
    }
    out
}
