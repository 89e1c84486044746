//! sluice's own CPU engine for GGUF chat models (llama, qwen2, phi3, gemma2, gemma3): the transformer forward pass
//! written directly over the file's quantized blocks, without a tensor library.
//!
//! Why: through candle every operation of a decode step is a tensor op with its own allocation
//! and dispatch, and its quantized matmuls lack fast x86 kernels for some formats (Q4_0 fell
//! back to a generic path, 0.30× llama.cpp). Here one token's step is a fixed sequence of
//! row-parallel matrix-vector products on the [`simd`] kernels (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, F16, BF16, F32; activations quantized to 8 bits the way ggml does), with RMS norm, rotary embedding,
//! attention over an F32 KV cache (or F16, [`crate::KvCacheType`]) and SwiGLU in between.
//!
//! - **Weights** stay as the file stores them (no F32 embedding table, no F16 expansion): the
//!   memory a model holds is its tensor bytes plus the KV caches. All slots share one copy,
//!   mapped from the file by default ([`blob`]).
//! - **Continuous batching** ([`Batch`]): one forward pass runs the rows of several sequence
//!   slots at once (each slot's next token, or a chunk of its prompt), so every weight row is
//!   read once per step for all of them; each row attends to its own slot's KV cache.
//! - **Threads**: a model's matrix products run on one pool of `threads` workers (the calling
//!   thread included). Products of one step that read the same input (q, k, v; gate, up) are
//!   split into row ranges and run as one parallel job.
//! - **Rows in fours** (eights on AVX-512, except Q4_0's and Q5_0's): the kernels multiply
//!   each weight row with 4 (8) activation rows at a time (prefill chunks, or several
//!   sequences' tokens), so a row is unpacked once per 4 (8) rows, and a tile of rows small
//!   enough for L1 goes through all the activation rows before the next (each weight byte read
//!   from memory once per pass). Q4_0 and Q5_0 rows are held in lane order
//!   ([`quant::Packing`]): one integer multiply-add sums 4 values of each of 8 blocks into the
//!   block's own lane, so 8 blocks take one scale multiply per row.
//! - **Positions**: no rope table, so no position cap beyond the file's context length;
//!   `rope_freqs.weight` (Llama 3.1's frequency factors) is applied when present.
//!
//! [`plan`] says whether a file can run here (x86-64 with AVX2/FMA/F16C, and only the formats
//! above); otherwise the model runs on candle.

mod acts;
mod batch;
mod blob;
mod cache;
mod format;
mod hparams;
mod ops;
pub(crate) mod quant;
mod simd;
mod weights;
mod workers;

use candle_core::quantized::gguf_file::Content;

use crate::gguf::info::{Architecture, ModelInfo};
#[cfg(test)]
use batch::Session;
pub(crate) use batch::{Batch, Step};
use format::QType;
pub(crate) use simd::Isa;
pub(crate) use weights::Model;

/// Why a file cannot run on this engine (it then runs on candle), or the CPU proof when it can.
pub(crate) fn plan(content: &Content, info: &ModelInfo) -> std::result::Result<Isa, String> {
    let isa = Isa::detect().ok_or("the CPU lacks AVX2, FMA or F16C")?;
    for (name, tensor) in &content.tensor_infos {
        if QType::from_ggml(tensor.ggml_dtype).is_none() {
            return Err(format!("tensor `{name}` is {:?}", tensor.ggml_dtype));
        }
    }
    // Partial rotary embeddings are not implemented: the rope must span the head.
    let key = format!("{}.rope.dimension_count", info.architecture.as_str());
    let rope = content.metadata.get(&key).and_then(|v| v.to_u32().ok());
    let required = matches!(info.architecture, Architecture::Llama | Architecture::Phi3);
    if (required || rope.is_some()) && rope.map(|r| r as usize) != Some(info.head_dim) {
        return Err(format!(
            "`{key}` differs from the head size {}",
            info.head_dim
        ));
    }
    Ok(isa)
}

/// Bytes the weights hold on this engine beyond the tensor data itself: the F32 copies of the
/// norms and biases (every 1-D tensor).
pub(crate) fn vector_bytes(content: &Content) -> u64 {
    content
        .tensor_infos
        .values()
        .filter(|t| t.shape.dims().len() == 1)
        .map(|t| t.shape.elem_count() as u64 * 4)
        .sum()
}

#[cfg(test)]
mod tests;
