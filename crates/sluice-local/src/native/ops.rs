//! The small vector operations of a forward pass: rotary embedding, RMS norm, additions,
//! Gemma's GELU gate.

/// `cos`/`sin` of every rotary pair for each of `positions` (one row each).
pub(super) fn rope_table(
    inv_freq: &[f32],
    positions: impl ExactSizeIterator<Item = usize>,
) -> Vec<(f32, f32)> {
    let mut table = Vec::with_capacity(positions.len() * inv_freq.len());
    for pos in positions {
        let pos = pos as f32;
        for &f in inv_freq {
            let (s, c) = f64::from(pos * f).sin_cos();
            table.push((c as f32, s as f32));
        }
    }
    table
}

/// Rotates each head of each row: pairs `(2i, 2i+1)` (llama's GGUF layout) or `(i, i + d/2)`
/// (neox, qwen2).
pub(super) fn apply_rope(x: &mut [f32], table: &[(f32, f32)], hd: usize, neox: bool) {
    let half = hd / 2;
    let rows = table.len() / half;
    let per_row = x.len() / rows;
    for (t, row) in x.chunks_exact_mut(per_row).enumerate() {
        let cs = &table[t * half..(t + 1) * half];
        for head in row.chunks_exact_mut(hd) {
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (a, b) = if neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

pub(super) fn rms_norm(x: &[f32], w: &[f32], h: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(h) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, w)| v * inv * w));
    }
    out
}

pub(super) fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

pub(super) fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `gate ← gelu(gate) · up`, GELU's tanh approximation (as ggml's `gelu` and Gemma's
/// `gelu_pytorch_tanh`).
pub(super) fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        let inner = SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
        *g = 0.5 * x * (1.0 + inner.tanh()) * u;
    }
}
