//! A GGUF chat model's weights as the native engine holds them: the file's tensor data mapped
//! or read into one buffer ([`Blob`]; 32-value formats repacked in place), matrices as views
//! into it, norms and biases as F32 vectors.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, TensorInfo};

use super::blob::Blob;
use super::format::QType;
use super::hparams::HParams;
use super::quant::{self, QMatrix};
use super::simd::Isa;
use crate::error::{Error, Result};
use crate::gguf::file::Weights;
use crate::gguf::info::{Architecture, ModelInfo};

pub(super) fn stored_bytes(t: &TensorInfo) -> usize {
    let elements = t.shape.elem_count();
    elements / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()
}

/// One transformer block's weights.
pub(super) struct Layer {
    pub(super) attn_norm: Vec<f32>,
    pub(super) wq: QMatrix,
    pub(super) wk: QMatrix,
    pub(super) wv: QMatrix,
    pub(super) bias: Option<[Vec<f32>; 3]>,
    /// Gemma 3's per-head RMS norms of q and k (before rope).
    pub(super) qk_norm: Option<[Vec<f32>; 2]>,
    pub(super) wo: QMatrix,
    /// Gemma's norms of the attention and feed-forward outputs (before the residual add).
    pub(super) post_norms: Option<[Vec<f32>; 2]>,
    pub(super) ffn_norm: Vec<f32>,
    pub(super) gate: QMatrix,
    pub(super) up: QMatrix,
    pub(super) down: QMatrix,
}

/// A loaded model's weights, shared by its slots.
pub(crate) struct Model {
    pub(super) isa: Isa,
    pub(super) hidden: usize,
    pub(super) heads: usize,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
    pub(super) hp: HParams,
    pub(super) embed: QMatrix,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Vec<f32>,
    /// `None`: tied to `embed`.
    pub(super) output: Option<QMatrix>,
    pub(super) vocab: usize,
}

/// A GGUF file's tensor data in one buffer (one mapping or allocation per model, freed as
/// one), with the 32-value formats' tensors repacked in place; tensors are views into it.
struct Reader<'a> {
    path: &'a Path,
    content: &'a Content,
    blob: Arc<Blob>,
}

impl<'a> Reader<'a> {
    fn open(path: &'a Path, content: &'a Content, how: Weights) -> Result<Self> {
        let mut blob = Blob::open(path, content.tensor_data_offset, how)?;
        for (name, info) in &content.tensor_infos {
            let (at, len) = Self::span(path, name, info, blob.len())?;
            if let Some(qtype) = QType::from_ggml(info.ggml_dtype) {
                let cols = info.shape.dims().last().copied().unwrap_or(0);
                quant::repack(qtype, cols, &mut blob[at..at + len]);
            }
        }
        blob.prefetch();
        Ok(Self {
            path,
            content,
            blob: Arc::new(blob),
        })
    }

    /// Where a tensor's bytes lie in the data; an error when they run past the end.
    fn span(path: &Path, name: &str, info: &TensorInfo, data: usize) -> Result<(usize, usize)> {
        let len = stored_bytes(info);
        let at = usize::try_from(info.offset).unwrap_or(usize::MAX);
        if at.checked_add(len).is_none_or(|end| end > data) {
            return Err(Error::invalid_file(
                path,
                format!("tensor `{name}` runs past the end of the file (truncated?)"),
            ));
        }
        Ok((at, len))
    }

    fn tensor(&self, name: &str) -> Result<(QType, Vec<usize>, usize)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::invalid_file(self.path, format!("no tensor `{name}`")))?;
        let qtype = QType::from_ggml(info.ggml_dtype).ok_or_else(|| {
            Error::invalid_file(self.path, format!("`{name}`: {:?}", info.ggml_dtype))
        })?;
        let (at, _) = Self::span(self.path, name, info, self.blob.len())?;
        Ok((qtype, info.shape.dims().to_vec(), at))
    }

    fn dims(&self, name: &str) -> Result<Vec<usize>> {
        self.tensor(name).map(|(_, dims, _)| dims)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<QMatrix> {
        let (qtype, dims, at) = self.tensor(name)?;
        if dims != [rows, cols] {
            return Err(Error::invalid_file(
                self.path,
                format!("`{name}` has shape {dims:?}, expected [{rows}, {cols}]"),
            ));
        }
        QMatrix::view(qtype, rows, cols, &self.blob, at).ok_or_else(|| {
            Error::invalid_file(self.path, format!("`{name}`: bad size for {qtype:?}"))
        })
    }

    /// Consecutive row ranges of `parts` rows each of one `[sum(parts), cols]` matrix, as
    /// views (Phi-3's fused `attn_qkv` and gate/up `ffn_up`).
    fn split<const N: usize>(
        &self,
        name: &str,
        parts: [usize; N],
        cols: usize,
    ) -> Result<[QMatrix; N]> {
        let whole = self.matrix(name, parts.iter().sum(), cols)?;
        let bad = || Error::invalid_file(self.path, format!("`{name}`: bad split"));
        let mut at = 0;
        let mut out = Vec::with_capacity(N);
        for n in parts {
            out.push(whole.rows_view(at, n).ok_or_else(bad)?);
            at += n;
        }
        out.try_into().map_err(|_| bad())
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (qtype, dims, at) = self.tensor(name)?;
        if dims.iter().product::<usize>() != len || dims.last() != Some(&len) {
            return Err(Error::invalid_file(
                self.path,
                format!("`{name}` has shape {dims:?}, expected {len} values"),
            ));
        }
        let m = QMatrix::view(qtype, 1, len, &self.blob, at).ok_or_else(|| {
            Error::invalid_file(self.path, format!("`{name}`: bad size for {qtype:?}"))
        })?;
        let mut out = vec![0.0; len];
        m.dequantize_row(0, &mut out);
        Ok(out)
    }
}

// === impl Model ===

impl Model {
    /// Loads the weights (the whole tensor data of the file, mapped or read as `how` says).
    pub(crate) fn load(
        path: &Path,
        content: &Content,
        info: &ModelInfo,
        isa: Isa,
        how: Weights,
    ) -> Result<Self> {
        let r = Reader::open(path, content, how)?;
        let (h, hd) = (info.embedding_length, info.head_dim);
        let rope_freqs = if content.tensor_infos.contains_key("rope_freqs.weight") {
            Some(r.vector("rope_freqs.weight", hd / 2)?)
        } else {
            None
        };
        let hp = HParams::read(&content.metadata, info, rope_freqs)?;
        let embed = r.matrix("token_embd.weight", info.vocab_size, h)?;
        let ffn = match info.architecture {
            // Phi-3's `ffn_up` holds the gate rows, then the up rows.
            Architecture::Phi3 => r.dims("blk.0.ffn_up.weight")?.first().copied().unwrap_or(0) / 2,
            _ => r
                .dims("blk.0.ffn_gate.weight")?
                .first()
                .copied()
                .unwrap_or(0),
        };
        let mut layers = Vec::with_capacity(info.block_count);
        for l in 0..info.block_count {
            layers.push(Self::layer(&r, info, l, ffn)?);
        }
        let norm = r.vector("output_norm.weight", h)?;
        let output = if info.tied_embeddings {
            None
        } else {
            Some(r.matrix("output.weight", info.vocab_size, h)?)
        };
        Ok(Self {
            isa,
            hidden: h,
            heads: info.head_count,
            kv_heads: info.head_count_kv,
            head_dim: hd,
            hp,
            embed,
            layers,
            norm,
            output,
            vocab: info.vocab_size,
        })
    }

    /// Layer `l`'s weights; q/k/v and gate/up are views into the fused matrices where the file
    /// has them (Phi-3).
    fn layer(r: &Reader<'_>, info: &ModelInfo, l: usize, ffn: usize) -> Result<Layer> {
        let (h, hd) = (info.embedding_length, info.head_dim);
        let (qd, kvd) = (info.head_count * hd, info.head_count_kv * hd);
        let name = |n: &str| format!("blk.{l}.{n}");
        let fused_qkv = r
            .content
            .tensor_infos
            .contains_key(&name("attn_qkv.weight"));
        let [wq, wk, wv] = if fused_qkv {
            r.split(&name("attn_qkv.weight"), [qd, kvd, kvd], h)?
        } else {
            [
                r.matrix(&name("attn_q.weight"), qd, h)?,
                r.matrix(&name("attn_k.weight"), kvd, h)?,
                r.matrix(&name("attn_v.weight"), kvd, h)?,
            ]
        };
        let [gate, up] = if info.architecture == Architecture::Phi3 {
            r.split(&name("ffn_up.weight"), [ffn, ffn], h)?
        } else {
            [
                r.matrix(&name("ffn_gate.weight"), ffn, h)?,
                r.matrix(&name("ffn_up.weight"), ffn, h)?,
            ]
        };
        let bias = match info.architecture {
            Architecture::Qwen2 => Some([
                r.vector(&name("attn_q.bias"), h)?,
                r.vector(&name("attn_k.bias"), kvd)?,
                r.vector(&name("attn_v.bias"), kvd)?,
            ]),
            _ => None,
        };
        let gemma = matches!(
            info.architecture,
            Architecture::Gemma2 | Architecture::Gemma3
        );
        let qk_norm = if info.architecture == Architecture::Gemma3 {
            Some([
                r.vector(&name("attn_q_norm.weight"), hd)?,
                r.vector(&name("attn_k_norm.weight"), hd)?,
            ])
        } else {
            None
        };
        let post_norms = if gemma {
            Some([
                r.vector(&name("post_attention_norm.weight"), h)?,
                r.vector(&name("post_ffw_norm.weight"), h)?,
            ])
        } else {
            None
        };
        Ok(Layer {
            attn_norm: r.vector(&name("attn_norm.weight"), h)?,
            wq,
            wk,
            wv,
            bias,
            qk_norm,
            wo: r.matrix(&name("attn_output.weight"), h, qd)?,
            post_norms,
            ffn_norm: r.vector(&name("ffn_norm.weight"), h)?,
            gate,
            up,
            down: r.matrix(&name("ffn_down.weight"), h, ffn)?,
        })
    }

    /// Bytes the weights hold.
    pub(crate) fn bytes(&self) -> usize {
        // The file's tensor data, which every matrix is a view into, and the F32 copies of
        // the norms and biases.
        let vec = |v: &Vec<f32>| v.len() * 4;
        let mut total = self.embed.blob_bytes() + vec(&self.norm);
        for l in &self.layers {
            total += vec(&l.attn_norm) + vec(&l.ffn_norm);
            for extra in [&l.qk_norm, &l.post_norms].into_iter().flatten() {
                total += extra.iter().map(vec).sum::<usize>();
            }
            if let Some(b) = &l.bias {
                total += b.iter().map(vec).sum::<usize>();
            }
        }
        total
    }

    /// Query (and attention output) width: heads × head size (Gemma's differs from hidden).
    pub(super) fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub(super) fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}
