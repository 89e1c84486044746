//! A sequence slot's KV cache: per layer, `context × kv_dim` keys, then as many values, in F32,
//! F16 or Q8_0 blocks.

use super::simd::{self, Isa, Scoring};
use crate::gguf::info::KvCacheType;

/// A slot's KV cache: per layer, `context × kv_dim` keys, then as many values.
pub(super) enum Cache {
    F32(Vec<[Vec<f32>; 2]>),
    /// F16 bits.
    F16(Vec<[Vec<u16>; 2]>),
    /// Q8_0 blocks of 32 values, 34 bytes each: a position's `kv_dim` values are whole blocks
    /// (the head size is a multiple of 32, [`KvCacheType::for_head`]), so value `at` is the
    /// start of block `at / 32`.
    Q8_0(Vec<[Vec<u8>; 2]>),
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
            KvCacheType::Q8_0 => {
                let bytes = len / 32 * simd::Q8_0_BLOCK_BYTES;
                Self::Q8_0(
                    (0..layers)
                        .map(|_| [vec![0; bytes], vec![0; bytes]])
                        .collect(),
                )
            }
        }
    }

    /// Bytes the keys and values hold.
    pub(super) fn bytes(&self) -> usize {
        fn sum<T>(layers: &[[Vec<T>; 2]]) -> usize {
            let values: usize = layers.iter().map(|[k, v]| k.len() + v.len()).sum();
            values * std::mem::size_of::<T>()
        }
        match self {
            Self::F32(layers) => sum(layers),
            Self::F16(layers) => sum(layers),
            Self::Q8_0(layers) => sum(layers),
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
            Self::Q8_0(layers) => {
                let bytes = |n: usize| n / 32 * simd::Q8_0_BLOCK_BYTES;
                let (at, k_end, v_end) = (bytes(at), bytes(at + k.len()), bytes(at + v.len()));
                simd::to_q8_0(isa, k, &mut layers[l][0][at..k_end]);
                simd::to_q8_0(isa, v, &mut layers[l][1][at..v_end]);
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
            Self::Q8_0(layers) => {
                let [k, v] = &layers[l];
                let at = at / 32 * simd::Q8_0_BLOCK_BYTES;
                simd::attend_q8_0(
                    isa,
                    q,
                    &k[at..],
                    &v[at..],
                    stride / 32,
                    len,
                    scoring,
                    scores,
                    out,
                );
            }
        }
    }
}
