//! A typed view of a GGUF file's header: architecture, shapes, context length, and the memory
//! a loaded model holds.
//!
//! Only the header is read here (metadata and tensor infos, not tensor data), so
//! [`estimate_memory`] is cheap enough for a pool to call before deciding to load.
//!
//! Memory model of the native engine: every tensor as stored (the file's size), one copy for all
//! slots, plus the KV caches. Memory model of candle 0.11 CPU (see
//! `quantized_llama`/`quantized_qwen2`): quantized tensors are
//! held at their storage size; F32/F16/BF16 weights, norms and biases are dequantized to F32
//! (so an F16 file costs about twice its size); `token_embd.weight` is always expanded to an F32
//! lookup table, and kept quantized as well when the output projection is tied to it. The KV
//! cache is `2 × layers × kv_heads × head_dim × context × 4` bytes per sequence on candle (F32),
//! and on the native engine as well unless its cache is F16 (`LoadOptions::kv_cache`): half.
//! Not counted: the lazily built x86 repack of Q4K/Q6K matmul weights (up to +33 % of those
//! tensors after the first forward) and attention transients.
//!
//! The header itself is read in `file`, its keys in `metadata`, and the model's shape in
//! `info` ([`ModelInfo`]).

pub(crate) mod file;
pub(crate) mod info;
pub(crate) mod metadata;
pub(crate) mod raw;

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;

#[cfg(doc)]
use crate::engine::Engine;
use crate::engine::{Chosen, LoadOptions};
use crate::error::Result;
use file::{read_header, stored_bytes};
pub use info::{Architecture, KvCacheType, ModelInfo};

/// Bytes a loaded model holds, or is predicted to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUsage {
    /// Weights as held in memory (all sequence slots together).
    pub weights_bytes: u64,
    /// The KV caches of all sequence slots at full context.
    pub kv_cache_bytes: u64,
    /// The context length (positions per sequence) the KV caches are sized for.
    pub context_length: usize,
}

// === impl MemoryUsage ===

impl MemoryUsage {
    /// Weights plus KV cache.
    pub fn total(&self) -> u64 {
        self.weights_bytes.saturating_add(self.kv_cache_bytes)
    }
}

/// Bytes one copy of the weights takes once candle has loaded them (see the module docs).
pub(crate) fn held_weight_bytes(content: &Content, info: &ModelInfo) -> u64 {
    let mut total = 0u64;
    for (name, tensor) in &content.tensor_infos {
        let elements = tensor.shape.elem_count() as u64;
        let held = held_bytes(tensor.ggml_dtype, elements);
        if name == "token_embd.weight" {
            // Always expanded to an F32 lookup table; the quantized tensor survives only as the
            // tied output projection.
            total += elements * 4;
            if info.tied_embeddings {
                total += held;
            }
        } else {
            total += held;
        }
    }
    total
}

fn held_bytes(dtype: GgmlDType, elements: u64) -> u64 {
    match dtype {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => elements * 4,
        quantized => elements / quantized.block_size() as u64 * quantized.type_size() as u64,
    }
}

/// Predicts the memory a model will hold if loaded with `parallel` sequence slots and `context`
/// positions (`None`: [`crate::DEFAULT_CONTEXT_LENGTH`], or the file's if smaller) on the engine [`Engine::Auto`] picks, from the
/// file size and its header alone. See [`estimate_memory_with`].
pub fn estimate_memory(
    path: &Path,
    parallel: usize,
    context: Option<usize>,
) -> Result<MemoryUsage> {
    estimate_memory_with(
        path,
        &LoadOptions {
            parallel,
            context_length: context,
            ..LoadOptions::default()
        },
    )
}

/// Predicts the memory a model will hold when loaded with `options`, from the file size and
/// its header alone.
///
/// - Native engine: the file size (the tensors as stored, plus the header the tokenizer is
///   built from) and F32 copies of the norms and biases, one copy for all slots, plus the KV
///   caches (the running sequences' and [`LoadOptions::prompt_cache_slots`]).
/// - candle: `file size` + F16/BF16→F32 expansion + the F32 embedding table − the quantized
///   embedding when it is not tied, times the weight copies (qwen2: one per slot), plus the KV
///   caches.
pub fn estimate_memory_with(path: &Path, options: &LoadOptions) -> Result<MemoryUsage> {
    let (content, file_size) = read_header(path)?;
    let info = ModelInfo::from_content(&content)?;
    let chosen = Chosen::decide(options.engine, options.device, path, &content, &info)?;
    let parallel = options.parallel.max(1);
    let context = chosen.context(&info, options.context_length);
    #[cfg(target_arch = "x86_64")]
    if !matches!(chosen, Chosen::Candle) {
        return Ok(MemoryUsage {
            weights_bytes: file_size + crate::native::vector_bytes(&content),
            kv_cache_bytes: info.kv_cache_bytes(
                context,
                chosen.kv_slots(options),
                chosen.kv_type(options.kv_cache, &info),
            ),
            context_length: context,
        });
    }
    let mut weights = file_size;
    for (name, tensor) in &content.tensor_infos {
        let elements = tensor.shape.elem_count() as u64;
        if matches!(tensor.ggml_dtype, GgmlDType::F16 | GgmlDType::BF16) {
            weights += elements * 2;
        }
        if name == "token_embd.weight" {
            weights += elements * 4;
            if !info.tied_embeddings {
                weights = weights.saturating_sub(stored_bytes(tensor.ggml_dtype, elements));
            }
        }
    }
    Ok(MemoryUsage {
        weights_bytes: weights * info.weight_copies(parallel),
        kv_cache_bytes: info.kv_cache_bytes(
            context,
            parallel,
            chosen.kv_type(options.kv_cache, &info),
        ),
        context_length: context,
    })
}

/// Reads a GGUF file's header (metadata and tensor infos) into its [`ModelInfo`].
pub fn read_model_info(path: &Path) -> Result<ModelInfo> {
    let (content, _) = read_header(path)?;
    ModelInfo::from_content(&content)
}
