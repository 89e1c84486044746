//! A BERT encoder forward pass on `f32` slices, for sentence embeddings.
//!
//! Written for throughput on a few CPU cores rather than for generality:
//!
//! * **No padding.** The tokens of every sequence in a batch are laid end to end in one
//!   `[tokens, hidden]` matrix, so the linear layers (nearly all the work) run as one matrix
//!   product over exactly the real tokens, and attention runs per sequence and head on its own
//!   `[len, len]` scores. A batch of mixed lengths costs what its tokens cost, where a padded
//!   batch costs `batch × longest`.
//! * **Fused projections.** Query, key and value are one `[hidden, 3·hidden]` product; biases are
//!   the product's initial value; GELU (erf form, as BERT uses) is a rational approximation
//!   applied in place.
//! * **Packed weights.** On x86_64 with AVX2 and FMA, the linear layers' weights are packed at
//!   load for the kernels of `embed/packed.rs`, which do not copy them again on every product (as a
//!   general `gemm` does); elsewhere the products run on `gemm`.
//! * **Precision.** [`Precision::Int8`] runs the linear layers in 8 bits (`embed/packed_i8.rs`,
//!   AVX-512 VNNI: weights and activations in Q8_0's blocks of 32 with one scale each); layer
//!   norms, attention, GELU and pooling stay `f32`. Where the CPU lacks VNNI (or a layer's width
//!   is not whole blocks of 32) the layer stays `f32`.
//! * **Threads.** The products run on rayon's pool (shared with candle); attention and the
//!   element-wise passes split across the same pool by sequence × head and by rows.

// Unsafe: `gemm`'s raw-pointer matrix product, with rayon tasks writing disjoint parts of
// one buffer.
#![allow(unsafe_code)]

use std::collections::HashMap;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::{Error, Result};

/// `config.json` fields the encoder needs (Hugging Face `BertConfig`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BertConfig {
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest sequence the position table covers.
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Token type (segment) vocabulary size.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Activation; only `gelu` (erf) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// `absolute` only.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".to_owned()
}
fn default_position_type() -> String {
    "absolute".to_owned()
}

/// How the encoder's linear layers compute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    /// `f32` weights and products (the reference: sentence-transformers' vectors).
    #[default]
    F32,
    /// 8-bit weights and activations in blocks of 32 (Q8_0), on AVX-512 VNNI; `f32` where the
    /// CPU lacks it. A third of the linear layers' memory; on all-MiniLM-L6-v2, vectors within
    /// a cosine of 0.998 of `f32`'s.
    Int8,
}

impl Precision {
    /// `f32` or `int8`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
        }
    }
}

struct Linear {
    weights: LinearWeights,
    inputs: usize,
    outputs: usize,
}

/// A linear layer's weight and bias, as its product reads them.
enum LinearWeights {
    /// Packed for this CPU's kernels (`embed/packed.rs`).
    #[cfg(target_arch = "x86_64")]
    Packed(super::packed::Packed),
    /// In 8 bits for the AVX-512 VNNI kernels (`embed/packed_i8.rs`).
    #[cfg(target_arch = "x86_64")]
    Int8(super::packed_i8::PackedI8),
    /// For `gemm`: the weight `[out, in]`, as PyTorch stores it.
    Plain { weight: Vec<f32>, bias: Vec<f32> },
}

impl Linear {
    /// In 8 bits for [`Precision::Int8`] where the CPU and shape allow, else packed where the
    /// CPU runs the packed kernels, else plain.
    fn with_precision(
        weight: Vec<f32>,
        bias: Vec<f32>,
        outputs: usize,
        inputs: usize,
        precision: Precision,
    ) -> Self {
        #[cfg(target_arch = "x86_64")]
        if precision == Precision::Int8 {
            if let Some(int8) = super::packed_i8::PackedI8::new(&weight, &bias, outputs, inputs) {
                return Self {
                    weights: LinearWeights::Int8(int8),
                    inputs,
                    outputs,
                };
            }
        }
        let _ = precision;
        Self::new(weight, bias, outputs, inputs)
    }

    /// Packed where the CPU runs the packed kernels, else plain.
    fn new(weight: Vec<f32>, bias: Vec<f32>, outputs: usize, inputs: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = super::packed::Isa::detect() {
            let packed = super::packed::Packed::new(isa, &weight, &bias, outputs, inputs);
            return Self {
                weights: LinearWeights::Packed(packed),
                inputs,
                outputs,
            };
        }
        Self {
            weights: LinearWeights::Plain { weight, bias },
            inputs,
            outputs,
        }
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        match &self.weights {
            #[cfg(target_arch = "x86_64")]
            LinearWeights::Packed(packed) => 4 * packed.floats(),
            #[cfg(target_arch = "x86_64")]
            LinearWeights::Int8(int8) => int8.bytes(),
            LinearWeights::Plain { weight, bias } => 4 * (weight.len() + bias.len()),
        }
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: Norm,
}

/// A loaded BERT encoder.
pub struct Bert {
    config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    eps: f32,
}

/// Where a sequence starts in the batch's token rows, and its length.
type Span = (usize, usize);

/// Named `f32` tensors (flattened) with their shapes.
pub type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// One sequence to encode: its token ids (special tokens included) and where its second
/// segment starts; tokens from there on get token type 1. For a single text that is its
/// length.
#[derive(Debug, Clone, Copy)]
pub struct Segments<'a> {
    /// Token ids.
    pub ids: &'a [u32],
    /// Index of the first token of type 1.
    pub second: usize,
}

impl<'a> Segments<'a> {
    /// A sequence of one segment.
    pub fn one(ids: &'a [u32]) -> Self {
        Self {
            ids,
            second: ids.len(),
        }
    }
}

impl Bert {
    /// Builds the encoder from `config` and tensors named as in Hugging Face checkpoints (with
    /// or without a `bert.` prefix), in `f32`.
    pub fn new(config: BertConfig, weights: Weights) -> Result<Self> {
        Self::with_precision(config, weights, Precision::F32)
    }

    /// [`Self::new`] with the linear layers in `precision`.
    pub fn with_precision(
        config: BertConfig,
        mut weights: Weights,
        precision: Precision,
    ) -> Result<Self> {
        if config.hidden_act != "gelu" {
            return Err(Error::invalid_metadata(
                "hidden_act",
                format!("`{}` is not supported (only `gelu`)", config.hidden_act),
            ));
        }
        if config.position_embedding_type != "absolute" {
            return Err(Error::invalid_metadata(
                "position_embedding_type",
                format!(
                    "`{}` is not supported (only `absolute`)",
                    config.position_embedding_type
                ),
            ));
        }
        let h = config.hidden_size;
        if config.num_attention_heads == 0 || h % config.num_attention_heads != 0 {
            return Err(Error::invalid_metadata(
                "num_attention_heads",
                "must divide hidden_size",
            ));
        }
        let prefix = if weights.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let full = format!("{prefix}{name}");
            let (found, data) = weights
                .remove(&full)
                .ok_or_else(|| Error::invalid_metadata(&full, "tensor missing"))?;
            if found != shape {
                return Err(Error::invalid_metadata(
                    &full,
                    format!("shape {found:?}, expected {shape:?}"),
                ));
            }
            Ok(data)
        };
        let i = config.intermediate_size;
        let word = take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = take(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = take(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let embed_norm = Norm {
            gamma: take("embeddings.LayerNorm.weight", &[h])?,
            beta: take("embeddings.LayerNorm.bias", &[h])?,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let mut linear = |name: &str, outputs: usize, inputs: usize| -> Result<_> {
                Ok((
                    take(&format!("{p}.{name}.weight"), &[outputs, inputs])?,
                    take(&format!("{p}.{name}.bias"), &[outputs])?,
                ))
            };
            let q = linear("attention.self.query", h, h)?;
            let k = linear("attention.self.key", h, h)?;
            let v = linear("attention.self.value", h, h)?;
            let (w, b) = linear("attention.output.dense", h, h)?;
            let make =
                |(w, b), outputs, inputs| Linear::with_precision(w, b, outputs, inputs, precision);
            let attn_out = make((w, b), h, h);
            let ffn_in = make(linear("intermediate.dense", i, h)?, i, h);
            let ffn_out = make(linear("output.dense", h, i)?, h, i);
            let qkv = make(
                ([q.0, k.0, v.0].concat(), [q.1, k.1, v.1].concat()),
                3 * h,
                h,
            );
            let attn_norm = Norm {
                gamma: take(&format!("{p}.attention.output.LayerNorm.weight"), &[h])?,
                beta: take(&format!("{p}.attention.output.LayerNorm.bias"), &[h])?,
            };
            let ffn_norm = Norm {
                gamma: take(&format!("{p}.output.LayerNorm.weight"), &[h])?,
                beta: take(&format!("{p}.output.LayerNorm.bias"), &[h])?,
            };
            layers.push(Layer {
                qkv,
                attn_out,
                attn_norm,
                ffn_in,
                ffn_out,
                ffn_norm,
            });
        }
        let eps = config.layer_norm_eps as f32;
        Ok(Self {
            config,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            eps,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Bytes of weights held.
    pub fn weight_bytes(&self) -> u64 {
        let linear = Linear::bytes;
        let norm = |n: &Norm| n.gamma.len() + n.beta.len();
        let floats = self.word.len()
            + self.position.len()
            + self.token_type.len()
            + norm(&self.embed_norm)
            + self
                .layers
                .iter()
                .map(|l| norm(&l.attn_norm) + norm(&l.ffn_norm))
                .sum::<usize>();
        let linears: usize = self
            .layers
            .iter()
            .map(|l| linear(&l.qkv) + linear(&l.attn_out) + linear(&l.ffn_in) + linear(&l.ffn_out))
            .sum();
        (floats * 4 + linears) as u64
    }

    /// Bytes of scratch a forward pass over `tokens` tokens allocates (freed after).
    pub fn scratch_bytes(config: &BertConfig, tokens: usize) -> u64 {
        let h = config.hidden_size;
        // x, qkv, context, attention output, feed-forward input.
        let floats = tokens * (h + 3 * h + h + h + config.intermediate_size);
        (floats * 4) as u64
    }

    /// Encodes sequences of token ids (each already holding its special tokens and at most
    /// `max_position_embeddings` long), all of token type 0, and returns the last hidden states
    /// of all tokens, end to end: `[sum of lengths, hidden]`.
    pub fn forward(&self, sequences: &[&[u32]]) -> Result<Vec<f32>> {
        let segments: Vec<Segments<'_>> = sequences.iter().map(|ids| Segments::one(ids)).collect();
        self.forward_segments(&segments)
    }

    /// [`Self::forward`] for sequences that may hold a second segment (a cross-encoder's
    /// `[CLS] query [SEP] document [SEP]`): its tokens get token type 1.
    pub fn forward_segments(&self, sequences: &[Segments<'_>]) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        let (mut x, starts) = self.embeddings(sequences)?;
        let tokens: usize = starts.iter().map(|&(_, len)| len).sum();
        if tokens == 0 {
            return Ok(x);
        }
        layer_norm(&mut x, h, &self.embed_norm, self.eps);
        let mut qkv = vec![0f32; tokens * 3 * h];
        let mut context = vec![0f32; tokens * h];
        let mut projected = vec![0f32; tokens * h];
        let mut inner = vec![0f32; tokens * self.config.intermediate_size];
        for layer in &self.layers {
            linear(&x, tokens, &layer.qkv, &mut qkv);
            self.attention(&qkv, &starts, &mut context);
            linear(&context, tokens, &layer.attn_out, &mut projected);
            add_assign(&mut x, &projected);
            layer_norm(&mut x, h, &layer.attn_norm, self.eps);
            linear(&x, tokens, &layer.ffn_in, &mut inner);
            gelu_in_place(&mut inner);
            linear(&inner, tokens, &layer.ffn_out, &mut projected);
            add_assign(&mut x, &projected);
            layer_norm(&mut x, h, &layer.ffn_norm, self.eps);
        }
        Ok(x)
    }

    /// The embedding layer's sum (word + position + token type) of every token, end to end,
    /// and where each sequence starts and how long it is.
    fn embeddings(&self, sequences: &[Segments<'_>]) -> Result<(Vec<f32>, Vec<Span>)> {
        let h = self.config.hidden_size;
        let tokens: usize = sequences.iter().map(|s| s.ids.len()).sum();
        let mut starts = Vec::with_capacity(sequences.len());
        let mut x = vec![0f32; tokens * h];
        let mut at = 0;
        for seq in sequences {
            let len = seq.ids.len();
            if len > self.config.max_position_embeddings {
                return Err(Error::invalid_request(format!(
                    "sequence of {len} tokens exceeds the model's {} positions",
                    self.config.max_position_embeddings
                )));
            }
            if seq.second < len && self.config.type_vocab_size < 2 {
                return Err(Error::invalid_request(
                    "the model has one token type: it cannot encode a pair",
                ));
            }
            starts.push((at, len));
            for (pos, &id) in seq.ids.iter().enumerate() {
                let id = id as usize;
                if id >= self.config.vocab_size {
                    return Err(Error::invalid_request(format!(
                        "token id {id} is outside the vocabulary ({})",
                        self.config.vocab_size
                    )));
                }
                let kind = usize::from(pos >= seq.second);
                let row = &mut x[(at + pos) * h..(at + pos + 1) * h];
                let word = &self.word[id * h..(id + 1) * h];
                let position = &self.position[pos * h..(pos + 1) * h];
                let segment = &self.token_type[kind * h..(kind + 1) * h];
                for j in 0..h {
                    row[j] = word[j] + position[j] + segment[j];
                }
            }
            at += len;
        }
        Ok((x, starts))
    }

    /// Self-attention of every sequence and head from the fused `[tokens, 3·hidden]`
    /// projections into `context` (`[tokens, hidden]`).
    fn attention(&self, qkv: &[f32], starts: &[(usize, usize)], context: &mut [f32]) {
        let h = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let out = SendPtr(context.as_mut_ptr());
        let work: Vec<(usize, usize, usize)> = starts
            .iter()
            .flat_map(|&(start, len)| (0..heads).map(move |head| (start, len, head)))
            .collect();
        work.par_iter()
            .for_each_init(Vec::new, |scores, &(start, len, head)| {
                scores.clear();
                scores.resize(len * len, 0.0);
                let row = 3 * h;
                // SAFETY: `qkv` holds `tokens × 3h` floats and every (start, len) lies inside it;
                // each task writes only its own sequence's rows and head's columns of `context`
                // (`tokens × h`), so writes never overlap and nothing else reads `context` now.
                unsafe {
                    let q = qkv.as_ptr().add(start * row + head * d);
                    let k = q.add(h);
                    let v = q.add(2 * h);
                    // scores[len × len] = Q[len × d] · Kᵀ[d × len] · scale
                    gemm::gemm(
                        len,
                        len,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q,
                        1,
                        row as isize,
                        k,
                        row as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                    for r in scores.chunks_exact_mut(len) {
                        softmax_in_place(r);
                    }
                    // context[len × d] = P[len × len] · V[len × d]
                    let dst = out.get().add(start * h + head * d);
                    gemm::gemm(
                        len,
                        d,
                        len,
                        dst,
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        v,
                        1,
                        row as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            });
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint regions of one buffer to rayon tasks (see `attention`);
// the buffer outlives them and only they write it while they run.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`: the tasks share the pointer only to write disjoint regions.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out[rows × outputs] = x[rows × inputs] · Wᵀ + b`.
fn linear(x: &[f32], rows: usize, layer: &Linear, out: &mut [f32]) {
    let (n, k) = (layer.outputs, layer.inputs);
    debug_assert_eq!(x.len(), rows * k);
    let (weight, bias) = match &layer.weights {
        #[cfg(target_arch = "x86_64")]
        LinearWeights::Packed(packed) => return packed.forward(x, rows, out),
        #[cfg(target_arch = "x86_64")]
        LinearWeights::Int8(int8) => return int8.forward(x, rows, out),
        LinearWeights::Plain { weight, bias } => (weight, bias),
    };
    let out = &mut out[..rows * n];
    for row in out.chunks_exact_mut(n) {
        row.copy_from_slice(bias);
    }
    let threads = if rows * n * k >= 1 << 18 {
        rayon::current_num_threads()
    } else {
        1
    };
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: dimensions and strides match the buffers: `out` is `rows × n` row-major, `x` is
    // `rows × k` row-major, and the weight is `n × k` row-major, read as its `k × n` transpose.
    unsafe {
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
            weight.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

fn layer_norm(x: &mut [f32], width: usize, norm: &Norm, eps: f32) {
    let one = |row: &mut [f32]| {
        let n = width as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
            *v = (*v - mean) * inv * g + b;
        }
    };
    if x.len() >= 64 * width {
        x.par_chunks_mut(width).for_each(one);
    } else {
        x.chunks_mut(width).for_each(one);
    }
}

fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `x · ½ · (1 + erf(x / √2))` in place, split across threads for large buffers.
fn gelu_in_place(x: &mut [f32]) {
    let one = |chunk: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked on the line above).
            return unsafe { gelu_avx512(chunk) };
        }
        gelu(chunk);
    };
    if x.len() >= 1 << 16 {
        x.par_chunks_mut(1 << 14).for_each(one);
    } else {
        one(x);
    }
}

#[inline(always)]
fn gelu(chunk: &mut [f32]) {
    for v in chunk.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// [`gelu`] compiled for AVX-512 (16 lanes instead of SSE's 4; the same operations in the
/// same order, so the same values).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(chunk: &mut [f32]) {
    gelu(chunk);
}

/// `erf` for `f32` as a ratio of odd and even polynomials on [-4, 4] (beyond which it is ±1 in
/// single precision); branch-free so the loop above vectorises. Plain multiply-adds, not
/// `mul_add`: without FMA in the target features that is a libm call per step. Absolute error below 1e-6
/// (checked against candle's `erf_f32` in the tests).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_candle_within_1e6() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 / 10_000.0;
            let err = (erf(x) - candle_core::cpu::erf::erf_f32(x)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 1e-6, "worst error {worst}");
    }

    #[test]
    fn linear_matches_a_naive_product() {
        let (rows, k, n) = (5, 7, 3);
        let weight: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bias = vec![0.5, -1.0, 2.0];
        let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.11).cos()).collect();
        // The packed kernels where the CPU has them, and `gemm` on the plain weight.
        let packed = Linear::new(weight.clone(), bias.clone(), n, k);
        let plain = Linear {
            weights: LinearWeights::Plain {
                weight: weight.clone(),
                bias: bias.clone(),
            },
            inputs: k,
            outputs: n,
        };
        for layer in [&packed, &plain] {
            let mut out = vec![0f32; rows * n];
            linear(&x, rows, layer, &mut out);
            check(&out, &x, &weight, &bias, rows, n, k);
        }
    }

    fn check(
        out: &[f32],
        x: &[f32],
        weight: &[f32],
        bias: &[f32],
        rows: usize,
        n: usize,
        k: usize,
    ) {
        for r in 0..rows {
            for o in 0..n {
                let want: f32 = bias[o]
                    + (0..k)
                        .map(|i| x[r * k + i] * weight[o * k + i])
                        .sum::<f32>();
                assert!((out[r * n + o] - want).abs() < 1e-5, "({r},{o})");
            }
        }
    }
}
