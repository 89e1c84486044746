//! [`ModelInfo`]: the shape of a GGUF chat model, read and validated from its header.

use candle_core::quantized::gguf_file::{Content, Value};

use super::metadata::{lenient_u64, strict_u32, string, tensor};
use crate::error::{Error, ErrorKind, Result};

/// candle's llama implementation sizes its rope tables for this many positions.
pub(crate) const LLAMA_MAX_POSITIONS: usize =
    candle_transformers::models::quantized_llama::MAX_SEQ_LEN;

/// A model family this runtime can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `general.architecture = "llama"` (Llama 2/3, Mistral-style GGUFs written as llama).
    Llama,
    /// `general.architecture = "qwen2"` (Qwen2, Qwen2.5).
    Qwen2,
    /// `general.architecture = "phi3"` (Phi-3, Phi-3.5 mini: fused `attn_qkv` and gate/up
    /// `ffn_up`; the 128k-context files' LongRoPE is refused).
    Phi3,
    /// `general.architecture = "gemma2"` (Gemma 2; native engine only).
    Gemma2,
    /// `general.architecture = "gemma3"` (Gemma 3 text; native engine only).
    Gemma3,
}

// === impl Architecture ===

impl Architecture {
    /// The `general.architecture` string, also the metadata key prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Phi3 => "phi3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3",
        }
    }

    /// Whether candle (the fallback engine) has an implementation: not for Gemma (candle has no
    /// quantized Gemma 2, and its Gemma 3 slides its window differently from llama.cpp).
    pub fn runs_on_candle(self) -> bool {
        !matches!(self, Self::Gemma2 | Self::Gemma3)
    }

    /// The architecture of a `general.architecture` string; unknown names are
    /// [`ErrorKind::UnsupportedArchitecture`].
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "phi3" => Ok(Self::Phi3),
            "gemma2" => Ok(Self::Gemma2),
            "gemma3" => Ok(Self::Gemma3),
            other => Err(ErrorKind::UnsupportedArchitecture(other.to_owned()).into()),
        }
    }
}

/// What the native engine's KV cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvCacheType {
    /// F32: 4 bytes a value.
    #[default]
    F32,
    /// F16, as llama.cpp's default cache: 2 bytes a value (the softmax weights are rounded to
    /// F16 too, as llama.cpp's product does).
    F16,
    /// Q8_0, as llama.cpp's `q8_0` cache: blocks of 32 values in 34 bytes (a scale each), 1.0625
    /// bytes a value. A block spans part of one head: files whose head size is not a multiple of
    /// 32 get F16 instead ([`KvCacheType::for_head`]).
    Q8_0,
}

// === impl KvCacheType ===

impl KvCacheType {
    /// Parses `f32`, `f16` or `q8_0`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(Self::F32),
            "f16" => Some(Self::F16),
            "q8_0" => Some(Self::Q8_0),
            _ => None,
        }
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
        }
    }

    /// The type a model with heads of `head_dim` values holds: Q8_0 needs whole blocks per
    /// head, else F16.
    pub fn for_head(self, head_dim: usize) -> Self {
        match self {
            Self::Q8_0 if head_dim % 32 != 0 => Self::F16,
            other => other,
        }
    }

    /// Bytes `values` cached values take (a multiple of 32 for Q8_0).
    pub fn bytes(self, values: u64) -> u64 {
        match self {
            Self::F32 => 4 * values,
            Self::F16 => 2 * values,
            Self::Q8_0 => values.div_ceil(32) * 34,
        }
    }
}

/// The shape of a GGUF chat model, read from its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model family.
    pub architecture: Architecture,
    /// `general.name`, if present.
    pub name: Option<String>,
    /// `general.file_type` (llama.cpp's `LlamaFileType`: 0 F32, 1 F16, 2 Q4_0, 7 Q8_0, 15 Q4_K_M …).
    pub file_type: Option<u32>,
    /// Transformer blocks.
    pub block_count: usize,
    /// Hidden size.
    pub embedding_length: usize,
    /// Attention heads.
    pub head_count: usize,
    /// Key/value heads (grouped-query attention).
    pub head_count_kv: usize,
    /// `{arch}.attention.key_length` where present (Gemma), else `embedding_length / head_count`.
    pub head_dim: usize,
    /// `{arch}.context_length` as written in the file.
    pub context_length: usize,
    /// Rows of `token_embd.weight`.
    pub vocab_size: usize,
    /// Whether the output projection reuses `token_embd.weight` (no `output.weight`).
    pub tied_embeddings: bool,
}

// === impl ModelInfo ===

impl ModelInfo {
    /// Reads and validates the metadata keys and tensors the runtime needs.
    pub(crate) fn from_content(content: &Content) -> Result<Self> {
        let md = &content.metadata;
        let arch_name = string(md, "general.architecture")?;
        let architecture = Architecture::parse(arch_name)?;
        let prefix = architecture.as_str();
        let key = |name: &str| format!("{prefix}.{name}");

        let block_count = strict_u32(md, &key("block_count"))?;
        let embedding_length = strict_u32(md, &key("embedding_length"))?;
        let head_count = strict_u32(md, &key("attention.head_count"))?;
        let head_count_kv = strict_u32(md, &key("attention.head_count_kv"))?;
        let eps_key = key("attention.layer_norm_rms_epsilon");
        match md.get(&eps_key) {
            None => return Err(ErrorKind::MissingMetadata(eps_key).into()),
            Some(Value::F32(_)) => {}
            Some(other) => {
                return Err(Error::invalid_metadata(
                    &eps_key,
                    format!("expected an f32, found {:?}", other.value_type()),
                ))
            }
        }
        if let Some(value) = md.get(&key("rope.freq_base")) {
            if !matches!(value, Value::F32(_)) {
                return Err(Error::invalid_metadata(
                    &key("rope.freq_base"),
                    "expected an f32",
                ));
            }
        }
        let context_length = match architecture {
            // candle's qwen2 and phi3 size their rope tables from this key: required.
            Architecture::Qwen2 | Architecture::Phi3 => strict_u32(md, &key("context_length"))?,
            Architecture::Gemma2 | Architecture::Gemma3 => strict_u32(md, &key("context_length"))?,
            Architecture::Llama => match md.get(&key("context_length")) {
                Some(value) => lenient_u64(value)
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::invalid_metadata(&key("context_length"), "expected an integer")
                    })?,
                None => LLAMA_MAX_POSITIONS,
            },
        };
        if matches!(architecture, Architecture::Llama | Architecture::Phi3) {
            strict_u32(md, &key("rope.dimension_count"))?;
        }
        if architecture == Architecture::Phi3 {
            strict_u32(md, &key("feed_forward_length"))?;
        }
        if block_count == 0 || head_count == 0 || head_count_kv == 0 || embedding_length == 0 {
            return Err(Error::invalid_metadata(
                prefix,
                "zero layers, heads or embedding length",
            ));
        }
        // Gemma's head size is its own key (`attention.key_length`), not hidden / heads.
        let key_length = match md.get(&key("attention.key_length")) {
            Some(_) => Some(strict_u32(md, &key("attention.key_length"))?),
            None => None,
        };
        if (key_length.is_none() && !embedding_length.is_multiple_of(head_count))
            || !head_count.is_multiple_of(head_count_kv)
            || key_length == Some(0)
        {
            return Err(Error::invalid_metadata(
                &key("attention.head_count"),
                format!(
                    "embedding length {embedding_length} / {head_count} heads / {head_count_kv} kv heads do not divide"
                ),
            ));
        }
        if context_length == 0 {
            return Err(Error::invalid_metadata(
                &key("context_length"),
                "must be positive",
            ));
        }
        let head_dim = key_length.unwrap_or(embedding_length / head_count);

        let embd = tensor(content, "token_embd.weight")?;
        let dims = embd.shape.dims();
        let vocab_size = match dims {
            [rows, cols] if *cols == embedding_length => *rows,
            _ => {
                return Err(Error::invalid_metadata(
                    "token_embd.weight",
                    format!("shape {dims:?} does not match embedding length {embedding_length}"),
                ))
            }
        };
        tensor(content, "output_norm.weight")?;
        for layer in 0..block_count {
            for name in required_tensors(content, architecture, layer) {
                tensor(content, &name)?;
            }
        }
        refuse_features(content, architecture)?;
        let tied_embeddings = !content.tensor_infos.contains_key("output.weight");

        Ok(Self {
            architecture,
            name: md
                .get("general.name")
                .and_then(|v| v.to_string().ok())
                .cloned(),
            file_type: md
                .get("general.file_type")
                .and_then(lenient_u64)
                .and_then(|v| u32::try_from(v).ok()),
            block_count,
            embedding_length,
            head_count,
            head_count_kv,
            head_dim,
            context_length,
            vocab_size,
            tied_embeddings,
        })
    }

    /// The context length a model loads with: the requested one, else the file's, capped by what
    /// candle's implementation supports (4096 positions for llama).
    pub fn effective_context(&self, requested: Option<usize>) -> usize {
        let mut context = self.context_length;
        if self.architecture == Architecture::Llama {
            context = context.min(LLAMA_MAX_POSITIONS);
        }
        match requested {
            Some(requested) if requested > 0 => context.min(requested),
            _ => context,
        }
    }

    /// KV cache bytes for `parallel` sequences of `context` positions in a `kv` cache (candle's
    /// is F32).
    pub fn kv_cache_bytes(&self, context: usize, parallel: usize, kv: KvCacheType) -> u64 {
        let per_position = kv.bytes((self.head_count_kv * self.head_dim) as u64);
        2 * self.block_count as u64 * per_position * context as u64 * parallel as u64
    }

    /// How many copies of the weights `parallel` slots hold on candle: llama and phi3 slots
    /// share one (their `ModelWeights` are `Clone` with `Arc`'d tensors), qwen2 slots each load
    /// their own.
    pub(crate) fn weight_copies(&self, parallel: usize) -> u64 {
        match self.architecture {
            Architecture::Llama | Architecture::Phi3 => 1,
            Architecture::Gemma2 | Architecture::Gemma3 => 1,
            Architecture::Qwen2 => parallel.max(1) as u64,
        }
    }
}

/// The tensors layer `layer` must have: q/k/v separate or fused (`attn_qkv`, Phi-3), gate and
/// up separate or fused (Phi-3's `ffn_up` holds both), qwen2's q/k/v biases.
fn required_tensors(content: &Content, architecture: Architecture, layer: usize) -> Vec<String> {
    let name = |n: &str| format!("blk.{layer}.{n}");
    let has = |n: &str| content.tensor_infos.contains_key(&name(n));
    let mut names = vec!["attn_output.weight", "attn_norm.weight", "ffn_norm.weight"];
    names.extend(["ffn_up.weight", "ffn_down.weight"]);
    if architecture != Architecture::Phi3 {
        names.push("ffn_gate.weight");
    }
    if architecture == Architecture::Phi3 && has("attn_qkv.weight") {
        names.push("attn_qkv.weight");
    } else {
        names.extend(["attn_q.weight", "attn_k.weight", "attn_v.weight"]);
    }
    if architecture == Architecture::Qwen2 {
        names.extend(["attn_q.bias", "attn_k.bias", "attn_v.bias"]);
    }
    if matches!(architecture, Architecture::Gemma2 | Architecture::Gemma3) {
        names.extend(["post_attention_norm.weight", "post_ffw_norm.weight"]);
    }
    if architecture == Architecture::Gemma3 {
        names.extend(["attn_q_norm.weight", "attn_k_norm.weight"]);
    }
    names.into_iter().map(name).collect()
}

/// Refuses, by name, features of a supported architecture that no engine here implements.
fn refuse_features(content: &Content, architecture: Architecture) -> Result<()> {
    let has = |n: &str| content.tensor_infos.contains_key(n);
    if architecture == Architecture::Phi3
        && (has("rope_factors_long.weight") || has("rope_factors_short.weight"))
    {
        return Err(ErrorKind::UnsupportedFeature(
            "LongRoPE (`rope_factors_long`/`rope_factors_short`, Phi-3's 128k-context files) is \
             not implemented for `phi3`; the 4k-context files run"
                .into(),
        )
        .into());
    }
    Ok(())
}
