//! A sequence slot's KV cache: per layer, `context × kv_dim` keys, then as many values, in F32
//! or F16.

use super::simd::{self, Isa, Scoring};
use crate::gguf::info::KvCacheType;

/// A slot's KV cache: per layer, `context × kv_dim` keys, then as many values.
pub(super) enum Cache {
    F32(Vec<[Vec<f32>; 2]>),
    /// F16 bits.
    F16(Vec<[Vec<u16>; 2]>),
}

// === impl Cache ===

impl Cache {
    pub(super) fn new(kind: KvCacheType, layers: usize, len: usize) -> Self {
        match kind {
            KvCacheType::F32 => Self::F32(
                (0..layers)
                    .map(|_| [vec![0.0; len], vec![0.0; len]])
                    .collect(),
            ),
            KvCacheType::F16 => {
                Self::F16((0..layers).map(|_| [vec![0; len], vec![0; len]]).collect())
            }
        }
    }

    /// Writes keys `k` and values `v` of layer `l` from value `at` on.
    pub(super) fn store(&mut self, isa: Isa, l: usize, at: usize, k: &[f32], v: &[f32]) {
        match self {
            Self::F32(layers) => {
                layers[l][0][at..at + k.len()].copy_from_slice(k);
                layers[l][1][at..at + v.len()].copy_from_slice(v);
            }
            Self::F16(layers) => {
                simd::to_f16(isa, k, &mut layers[l][0][at..at + k.len()]);
                simd::to_f16(isa, v, &mut layers[l][1][at..at + v.len()]);
            }
        }
    }

    /// One head's attention over layer `l`, its keys and values from value `at` on, every
    /// `stride` values ([`simd::attend`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attend(
        &self,
        isa: Isa,
        (l, at, stride): (usize, usize, usize),
        q: &[f32],
        len: usize,
        scoring: Scoring,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        match self {
            Self::F32(layers) => {
                let [k, v] = &layers[l];
                simd::attend(
                    isa,
                    q,
                    &k[at..],
                    &v[at..],
                    stride,
                    len,
                    scoring,
                    scores,
                    out,
                );
            }
            Self::F16(layers) => {
                let [k, v] = &layers[l];
                simd::attend_f16(
                    isa,
                    q,
                    &k[at..],
                    &v[at..],
                    stride,
                    len,
                    scoring,
                    scores,
                    out,
                );
            }
        }
    }
}
