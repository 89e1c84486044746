//! The semantic index's scan kernels over vectors stored contiguously: the dot product of
//! normalised `f32` vectors (cosine), and 1-bit sign codes compared by Hamming distance, the
//! cheap first pass over a large context before its best candidates are scored in `f32`.
//!
//! Plain safe Rust written so that the compiler vectorises it: fixed-width chunks summed
//! into independent lanes (no dependency chain between additions), `u64` words for codes.

/// `f32` lanes summed independently by [`dot`] (a multiple of every SIMD width in use).
const LANES: usize = 16;

/// The dot product of two vectors of one length (cosine, for normalised vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `u64` words of a `dim`-dimension vector's sign code.
pub fn code_words(dim: usize) -> usize {
    dim.div_ceil(64)
}

/// Appends the sign code of `v` (bit `i` set when `v[i] > 0`) to `out`.
pub fn push_code(v: &[f32], out: &mut Vec<u64>) {
    for chunk in v.chunks(64) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, x)| w | (u64::from(*x > 0.0) << i));
        out.push(word);
    }
}

/// The Hamming distance from `query` (one code) to every code of `codes` (codes of
/// `query.len()` words laid end to end), written to `out`.
pub fn hamming_all(query: &[u64], codes: &[u64], out: &mut Vec<u32>) {
    out.clear();
    let words = query.len();
    if words == 0 {
        return;
    }
    out.extend(codes.chunks_exact(words).map(|code| {
        code.iter()
            .zip(query)
            .map(|(c, q)| (c ^ q).count_ones())
            .sum::<u32>()
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for len in [0, 1, 15, 16, 17, 384, 385] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "{len}");
        }
        assert_eq!(dot(&[1.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn codes_hold_signs_and_hamming_counts_differences() {
        let a: Vec<f32> = (0..130)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        let mut b = a.clone();
        b[0] = -1.0;
        b[64] = -b[64];
        b[129] = -b[129];
        let (mut ca, mut cb) = (Vec::new(), Vec::new());
        push_code(&a, &mut ca);
        push_code(&b, &mut cb);
        assert_eq!(ca.len(), code_words(130));
        let mut both = ca.clone();
        both.extend(&cb);
        let mut out = Vec::new();
        hamming_all(&ca, &both, &mut out);
        assert_eq!(out, vec![0, 3]);
    }
}
