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
//! cache is F32: `2 × layers × kv_heads × head_dim × context × 4` bytes per sequence.
//! Not counted: the lazily built x86 repack of Q4K/Q6K matmul weights (up to +33 % of those
//! tensors after the first forward) and attention transients.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

use crate::error::{Error, ErrorKind, Result};
#[cfg(doc)]
use crate::model::Engine;
use crate::model::{Chosen, LoadOptions};

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
}

// === impl Architecture ===

impl Architecture {
    /// The `general.architecture` string, also the metadata key prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }

    fn parse(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            other => Err(ErrorKind::UnsupportedArchitecture(other.to_owned()).into()),
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
    /// `embedding_length / head_count`.
    pub head_dim: usize,
    /// `{arch}.context_length` as written in the file.
    pub context_length: usize,
    /// Rows of `token_embd.weight`.
    pub vocab_size: usize,
    /// Whether the output projection reuses `token_embd.weight` (no `output.weight`).
    pub tied_embeddings: bool,
}

/// Bytes a loaded model holds, or is predicted to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUsage {
    /// Weights as held in memory (all sequence slots together).
    pub weights_bytes: u64,
    /// The KV caches of all sequence slots at full context.
    pub kv_cache_bytes: u64,
}

// === impl MemoryUsage ===

impl MemoryUsage {
    /// Weights plus KV cache.
    pub fn total(&self) -> u64 {
        self.weights_bytes.saturating_add(self.kv_cache_bytes)
    }
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
            // candle's qwen2 sizes its rope table from this key: required.
            Architecture::Qwen2 => strict_u32(md, &key("context_length"))?,
            Architecture::Llama => match md.get(&key("context_length")) {
                Some(value) => lenient_u64(value)
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::invalid_metadata(&key("context_length"), "expected an integer")
                    })?,
                None => LLAMA_MAX_POSITIONS,
            },
        };
        if architecture == Architecture::Llama {
            strict_u32(md, &key("rope.dimension_count"))?;
        }
        if block_count == 0 || head_count == 0 || head_count_kv == 0 || embedding_length == 0 {
            return Err(Error::invalid_metadata(
                prefix,
                "zero layers, heads or embedding length",
            ));
        }
        if !embedding_length.is_multiple_of(head_count) || !head_count.is_multiple_of(head_count_kv)
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
        let head_dim = embedding_length / head_count;

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
        let mut names = vec![
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_output.weight",
            "attn_norm.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ];
        if architecture == Architecture::Qwen2 {
            names.extend(["attn_q.bias", "attn_k.bias", "attn_v.bias"]);
        }
        for layer in 0..block_count {
            for name in &names {
                tensor(content, &format!("blk.{layer}.{name}"))?;
            }
        }
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

    /// F32 KV cache bytes for `parallel` sequences of `context` positions.
    pub fn kv_cache_bytes(&self, context: usize, parallel: usize) -> u64 {
        2 * self.block_count as u64
            * self.head_count_kv as u64
            * self.head_dim as u64
            * context as u64
            * parallel as u64
            * 4
    }

    /// How many copies of the weights `parallel` slots hold: llama slots share one (its
    /// `ModelWeights` is `Clone` with `Arc`'d tensors), qwen2 slots each load their own.
    pub(crate) fn weight_copies(&self, parallel: usize) -> u64 {
        match self.architecture {
            Architecture::Llama => 1,
            Architecture::Qwen2 => parallel.max(1) as u64,
        }
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

fn stored_bytes(dtype: GgmlDType, elements: u64) -> u64 {
    elements / dtype.block_size() as u64 * dtype.type_size() as u64
}

/// Predicts the memory a model will hold if loaded with `parallel` sequence slots and `context`
/// positions (`None`: the file's context length) on the engine [`Engine::Auto`] picks, from the
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
///   caches.
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
            kv_cache_bytes: info.kv_cache_bytes(context, parallel),
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
        kv_cache_bytes: info.kv_cache_bytes(context, parallel),
    })
}

/// Reads a GGUF header (metadata and tensor infos), returning it with the file's size.
pub fn read_model_info(path: &Path) -> Result<ModelInfo> {
    let (content, _) = read_header(path)?;
    ModelInfo::from_content(&content)
}

pub(crate) fn read_header(path: &Path) -> Result<(Content, u64)> {
    let mut file = open(path)?;
    let size = file
        .get_ref()
        .metadata()
        .map_err(|source| ErrorKind::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let content = read_content(path, &mut file)?;
    Ok((content, size))
}

pub(crate) fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|source| ErrorKind::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(std::io::BufReader::new(file))
}

pub(crate) fn read_content<R: Read + Seek>(path: &Path, reader: &mut R) -> Result<Content> {
    let content = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(reader)))
        .map_err(|payload| crate::error::panic_error("GGUF header reader", payload.as_ref()))?
        .map_err(|e| Error::invalid_file(path, e))?;
    // The reader checks sizes against the file length for strings and arrays but not for
    // tensor data: check that every tensor lies inside the file.
    let end = reader
        .seek(std::io::SeekFrom::End(0))
        .map_err(|source| ErrorKind::Io {
            path: path.to_path_buf(),
            source,
        })?;
    for (name, info) in &content.tensor_infos {
        let bytes = stored_bytes(info.ggml_dtype, info.shape.elem_count() as u64);
        let tensor_end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|start| start.checked_add(bytes));
        if tensor_end.is_none_or(|tensor_end| tensor_end > end) {
            return Err(Error::invalid_file(
                path,
                format!(
                    "tensor `{name}` extends past the end of the file ({end} bytes): truncated?"
                ),
            ));
        }
    }
    Ok(content)
}

// --- metadata helpers ---

pub(crate) fn string<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a str> {
    match md.get(key) {
        None => Err(ErrorKind::MissingMetadata(key.to_owned()).into()),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::invalid_metadata(
            key,
            format!("expected a string, found {:?}", other.value_type()),
        )),
    }
}

/// A `u32` key read by candle, whose accessors accept only `Value::U32`.
fn strict_u32(md: &HashMap<String, Value>, key: &str) -> Result<usize> {
    match md.get(key) {
        None => Err(ErrorKind::MissingMetadata(key.to_owned()).into()),
        Some(Value::U32(v)) => Ok(*v as usize),
        Some(other) => Err(Error::invalid_metadata(
            key,
            format!("expected a u32, found {:?}", other.value_type()),
        )),
    }
}

/// Any non-negative integer value.
pub(crate) fn lenient_u64(value: &Value) -> Option<u64> {
    match *value {
        Value::U8(v) => Some(v.into()),
        Value::U16(v) => Some(v.into()),
        Value::U32(v) => Some(v.into()),
        Value::U64(v) => Some(v),
        Value::I8(v) => u64::try_from(v).ok(),
        Value::I16(v) => u64::try_from(v).ok(),
        Value::I32(v) => u64::try_from(v).ok(),
        Value::I64(v) => u64::try_from(v).ok(),
        _ => None,
    }
}

fn tensor<'a>(
    content: &'a Content,
    name: &str,
) -> Result<&'a candle_core::quantized::gguf_file::TensorInfo> {
    content
        .tensor_infos
        .get(name)
        .ok_or_else(|| Error::invalid_metadata(name, "tensor missing from the file"))
}
