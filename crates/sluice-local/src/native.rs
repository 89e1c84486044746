//! sluice's own CPU engine for GGUF chat models (llama and qwen2): the transformer forward pass
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
//!   memory a model holds is its tensor bytes plus the KV caches. All slots share one copy.
//! - **Threads**: each sequence slot runs its matrix products on its own pool of `threads`
//!   workers (none when 1: the slot thread computes alone). Products of one step that read the
//!   same input (q, k, v; gate, up) are split into row ranges and run as one parallel job.
//! - **Prefill**: a chunk of prompt tokens multiplies each weight row with 4 activation rows at
//!   a time, so a row is unpacked once per 4 tokens.
//! - **Positions**: no rope table, so no position cap beyond the file's context length;
//!   `rope_freqs.weight` (Llama 3.1's frequency factors) is applied when present.
//!
//! [`plan`] says whether a file can run here (x86-64 with AVX2/FMA/F16C, and only the formats
//! above); otherwise the model runs on candle.

mod acts;
mod format;
pub(crate) mod quant;
mod simd;
mod workers;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::gguf::info::{Architecture, KvCacheType, ModelInfo};
use acts::Acts;
use format::QType;
use quant::QMatrix;
pub(crate) use simd::Isa;

/// Why a file cannot run on this engine (it then runs on candle), or the CPU proof when it can.
pub(crate) fn plan(content: &Content, info: &ModelInfo) -> std::result::Result<Isa, String> {
    let isa = Isa::detect().ok_or("the CPU lacks AVX2, FMA or F16C")?;
    for (name, tensor) in &content.tensor_infos {
        if QType::from_ggml(tensor.ggml_dtype).is_none() {
            return Err(format!("tensor `{name}` is {:?}", tensor.ggml_dtype));
        }
    }
    if info.architecture == Architecture::Llama {
        let key = "llama.rope.dimension_count";
        let rope = content.metadata.get(key).and_then(|v| v.to_u32().ok());
        if rope.map(|r| r as usize) != Some(info.head_dim) {
            return Err(format!(
                "`{key}` differs from the head size {}",
                info.head_dim
            ));
        }
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

fn stored_bytes(t: &TensorInfo) -> usize {
    let elements = t.shape.elem_count();
    elements / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()
}

/// One transformer block's weights.
struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    bias: Option<[Vec<f32>; 3]>,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

/// A loaded model's weights, shared by its slots.
pub(crate) struct Model {
    isa: Isa,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    neox: bool,
    /// `θᵢ` of each rotary pair, frequency factors applied.
    inv_freq: Vec<f32>,
    embed: QMatrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `None`: tied to `embed`.
    output: Option<QMatrix>,
    vocab: usize,
}

/// A GGUF file's tensor data, read whole into one buffer (one allocation per model, freed as
/// one), with the 32-value formats' tensors repacked in place; tensors are views into it.
struct Reader<'a> {
    path: &'a Path,
    content: &'a Content,
    blob: Arc<Vec<u8>>,
}

impl<'a> Reader<'a> {
    fn open(path: &'a Path, content: &'a Content) -> Result<Self> {
        let bad = |reason: String| Error::invalid_file(path, reason);
        let mut file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| bad(format!("cannot stat: {e}")))?
            .len();
        let start = content.tensor_data_offset;
        let len = usize::try_from(size.saturating_sub(start))
            .map_err(|_| bad("too large for this machine".into()))?;
        let mut blob = vec![0u8; len];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut blob))
            .map_err(|e| bad(format!("reading the tensor data: {e}")))?;
        for (name, info) in &content.tensor_infos {
            let (at, len) = Self::span(path, name, info, blob.len())?;
            if let Some(qtype) = QType::from_ggml(info.ggml_dtype) {
                let cols = info.shape.dims().last().copied().unwrap_or(0);
                quant::repack(qtype, cols, &mut blob[at..at + len]);
            }
        }
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

fn metadata_f32(md: &HashMap<String, Value>, key: &str) -> Option<f32> {
    md.get(key).and_then(|v| v.to_f32().ok())
}

// === impl Model ===

impl Model {
    /// Loads the weights (the whole tensor data of the file, read once).
    pub(crate) fn load(path: &Path, content: &Content, info: &ModelInfo, isa: Isa) -> Result<Self> {
        let r = Reader::open(path, content)?;
        let md = &content.metadata;
        let arch = info.architecture.as_str();
        let (h, hd) = (info.embedding_length, info.head_dim);
        let kvd = info.head_count_kv * hd;
        let eps = metadata_f32(md, &format!("{arch}.attention.layer_norm_rms_epsilon"))
            .ok_or_else(|| {
                ErrorKind::MissingMetadata(format!("{arch}.attention.layer_norm_rms_epsilon"))
            })?;
        let base = metadata_f32(md, &format!("{arch}.rope.freq_base")).unwrap_or(10_000.0);
        let mut inv_freq: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / hd as f32))
            .collect();
        if content.tensor_infos.contains_key("rope_freqs.weight") {
            let factors = r.vector("rope_freqs.weight", hd / 2)?;
            for (f, factor) in inv_freq.iter_mut().zip(factors) {
                *f /= factor;
            }
        }
        let embed = r.matrix("token_embd.weight", info.vocab_size, h)?;
        let ffn = r
            .dims("blk.0.ffn_gate.weight")?
            .first()
            .copied()
            .unwrap_or(0);
        let mut layers = Vec::with_capacity(info.block_count);
        for l in 0..info.block_count {
            let name = |n: &str| format!("blk.{l}.{n}");
            let bias = match info.architecture {
                Architecture::Qwen2 => Some([
                    r.vector(&name("attn_q.bias"), h)?,
                    r.vector(&name("attn_k.bias"), kvd)?,
                    r.vector(&name("attn_v.bias"), kvd)?,
                ]),
                Architecture::Llama => None,
            };
            layers.push(Layer {
                attn_norm: r.vector(&name("attn_norm.weight"), h)?,
                wq: r.matrix(&name("attn_q.weight"), h, h)?,
                wk: r.matrix(&name("attn_k.weight"), kvd, h)?,
                wv: r.matrix(&name("attn_v.weight"), kvd, h)?,
                bias,
                wo: r.matrix(&name("attn_output.weight"), h, h)?,
                ffn_norm: r.vector(&name("ffn_norm.weight"), h)?,
                gate: r.matrix(&name("ffn_gate.weight"), ffn, h)?,
                up: r.matrix(&name("ffn_up.weight"), ffn, h)?,
                down: r.matrix(&name("ffn_down.weight"), h, ffn)?,
            });
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
            eps,
            neox: info.architecture == Architecture::Qwen2,
            inv_freq,
            embed,
            layers,
            norm,
            output,
            vocab: info.vocab_size,
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
            if let Some(b) = &l.bias {
                total += b.iter().map(vec).sum::<usize>();
            }
        }
        total
    }

    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// One sequence slot: the shared weights, this slot's KV cache and its worker threads.
pub(crate) struct Session {
    model: Arc<Model>,
    context: usize,
    /// Per layer, `context × kv_dim` keys and values.
    cache: Cache,
    workers: workers::Workers,
}

/// A slot's KV cache: per layer, `context × kv_dim` keys, then as many values.
enum Cache {
    F32(Vec<[Vec<f32>; 2]>),
    /// F16 bits.
    F16(Vec<[Vec<u16>; 2]>),
}

// === impl Cache ===

impl Cache {
    fn new(kind: KvCacheType, layers: usize, len: usize) -> Self {
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
    fn store(&mut self, isa: Isa, l: usize, at: usize, k: &[f32], v: &[f32]) {
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
    fn attend(
        &self,
        isa: Isa,
        (l, at, stride): (usize, usize, usize),
        q: &[f32],
        len: usize,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        match self {
            Self::F32(layers) => {
                let [k, v] = &layers[l];
                simd::attend(isa, q, &k[at..], &v[at..], stride, len, scale, scores, out);
            }
            Self::F16(layers) => {
                let [k, v] = &layers[l];
                simd::attend_f16(isa, q, &k[at..], &v[at..], stride, len, scale, scores, out);
            }
        }
    }
}

// === impl Session ===

impl Session {
    /// A slot with room for `context` positions in a `kv` cache, computing on `threads` threads.
    pub(crate) fn new(
        model: Arc<Model>,
        context: usize,
        kv: KvCacheType,
        threads: usize,
        name: &str,
    ) -> Result<Self> {
        let workers = workers::Workers::new(threads, name)
            .map_err(|e| ErrorKind::Internal(format!("cannot start worker threads: {e}")))?;
        let cache = context * model.kv_dim();
        let layers = model.layers.len();
        Ok(Self {
            cache: Cache::new(kv, layers, cache),
            model,
            context,
            workers,
        })
    }

    /// Runs `tokens` at positions `position ..`, appending to the KV cache, and returns the
    /// logits of the last one. Positions before `position` must have been run already.
    pub(crate) fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>> {
        let model = Arc::clone(&self.model);
        let m = tokens.len();
        if m == 0 {
            return Err(Error::invalid_request("no tokens to run"));
        }
        if position + m > self.context {
            return Err(ErrorKind::ContextLengthExceeded {
                prompt_tokens: position + m,
                context_length: self.context,
            }
            .into());
        }
        let (h, hd, kvd) = (model.hidden, model.head_dim, model.kv_dim());
        let mut x = vec![0.0f32; m * h];
        for (row, &t) in x.chunks_exact_mut(h).zip(tokens) {
            let t = t as usize;
            if t >= model.vocab {
                return Err(Error::invalid_request(format!(
                    "token id {t} is out of range"
                )));
            }
            model.embed.dequantize_row(t, row);
        }
        let rope = rope_table(&model.inv_freq, position, m);
        for (l, layer) in model.layers.iter().enumerate() {
            let mut acts = Acts::new(rms_norm(&x, &layer.attn_norm, h, model.eps), m, h);
            for w in [&layer.wq, &layer.wk, &layer.wv] {
                acts.prepare(w.qtype);
            }
            let mut qkv =
                self.matmul(&[(&layer.wq, &acts), (&layer.wk, &acts), (&layer.wv, &acts)]);
            let (mut v, mut k, mut q) = (
                qkv.pop().unwrap_or_default(),
                qkv.pop().unwrap_or_default(),
                qkv.pop().unwrap_or_default(),
            );
            if let Some([bq, bk, bv]) = &layer.bias {
                add_rows(&mut q, bq);
                add_rows(&mut k, bk);
                add_rows(&mut v, bv);
            }
            apply_rope(&mut q, &rope, hd, model.neox);
            apply_rope(&mut k, &rope, hd, model.neox);
            let at = position * kvd;
            self.cache.store(model.isa, l, at, &k, &v);
            let att = self.attention(l, &q, position, m);
            let mut acts = Acts::new(att, m, h);
            acts.prepare(layer.wo.qtype);
            let o = self.matmul(&[(&layer.wo, &acts)]);
            add_into(&mut x, &o[0]);

            let mut acts = Acts::new(rms_norm(&x, &layer.ffn_norm, h, model.eps), m, h);
            acts.prepare(layer.gate.qtype);
            acts.prepare(layer.up.qtype);
            let mut gu = self.matmul(&[(&layer.gate, &acts), (&layer.up, &acts)]);
            let up = gu.pop().unwrap_or_default();
            let mut gate = gu.pop().unwrap_or_default();
            simd::silu_mul(model.isa, &mut gate, &up);
            let ffn = layer.down.cols;
            let mut acts = Acts::new(gate, m, ffn);
            acts.prepare(layer.down.qtype);
            let d = self.matmul(&[(&layer.down, &acts)]);
            add_into(&mut x, &d[0]);
        }
        let last = rms_norm(&x[(m - 1) * h..], &model.norm, h, model.eps);
        let output = model.output.as_ref().unwrap_or(&model.embed);
        let mut acts = Acts::new(last, 1, h);
        acts.prepare(output.qtype);
        Ok(self.matmul(&[(output, &acts)]).pop().unwrap_or_default())
    }

    /// `W · acts` for each pair, as one parallel job over row ranges; each result is
    /// token-major (`m × rows`).
    fn matmul(&self, jobs: &[(&QMatrix, &Acts)]) -> Vec<Vec<f32>> {
        let isa = self.model.isa;
        let threads = self.workers.threads();
        let mut outs: Vec<Vec<f32>> = jobs.iter().map(|(w, a)| vec![0.0; w.rows * a.m]).collect();
        let mut tasks = Vec::new();
        for (&(w, a), out) in jobs.iter().zip(outs.iter_mut()) {
            // Several tasks per thread even out rows of unequal cost across the threads.
            let rows = if threads == 1 {
                w.rows
            } else {
                w.rows.div_ceil(threads * 4).max(1)
            };
            for (i, chunk) in out.chunks_mut(rows * a.m).enumerate() {
                tasks.push(Mutex::new((w, a, i * rows, chunk)));
            }
        }
        self.workers.run(tasks.len(), &|i| {
            let mut task = tasks[i].lock().unwrap_or_else(PoisonError::into_inner);
            let (w, a, r0, ref mut chunk) = *task;
            let n = chunk.len() / a.m;
            w.dot_rows(isa, r0..r0 + n, a, chunk);
        });
        drop(tasks);
        // Row-major by weight row → token-major.
        for (&(w, a), out) in jobs.iter().zip(outs.iter_mut()) {
            if a.m > 1 {
                let mut t = vec![0.0; out.len()];
                for r in 0..w.rows {
                    for i in 0..a.m {
                        t[i * w.rows + r] = out[r * a.m + i];
                    }
                }
                *out = t;
            }
        }
        outs
    }

    /// Causal attention of `m` queries at positions `position ..` over the cache of layer `l`.
    fn attention(&self, l: usize, q: &[f32], position: usize, m: usize) -> Vec<f32> {
        let model = &self.model;
        let (hd, heads, kvd) = (model.head_dim, model.heads, model.kv_dim());
        let group = heads / model.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let isa = model.isa;
        let mut out = vec![0.0f32; m * heads * hd];
        let tasks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(hd).map(Mutex::new).collect();
        self.workers.run(tasks.len(), &|i| {
            let (t, head) = (i / heads, i % heads);
            let at = head / group * hd;
            let mut out = tasks[i].lock().unwrap_or_else(PoisonError::into_inner);
            let mut scores = Vec::new();
            self.cache.attend(
                isa,
                (l, at, kvd),
                &q[t * heads * hd + head * hd..][..hd],
                position + t + 1,
                scale,
                &mut scores,
                &mut out,
            );
        });
        drop(tasks);
        out
    }
}

/// `cos`/`sin` of every rotary pair for positions `position .. position + m`.
fn rope_table(inv_freq: &[f32], position: usize, m: usize) -> Vec<(f32, f32)> {
    let mut table = Vec::with_capacity(m * inv_freq.len());
    for t in 0..m {
        let pos = (position + t) as f32;
        for &f in inv_freq {
            let (s, c) = f64::from(pos * f).sin_cos();
            table.push((c as f32, s as f32));
        }
    }
    table
}

/// Rotates each head of each row: pairs `(2i, 2i+1)` (llama's GGUF layout) or `(i, i + d/2)`
/// (neox, qwen2).
fn apply_rope(x: &mut [f32], table: &[(f32, f32)], hd: usize, neox: bool) {
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

fn rms_norm(x: &[f32], w: &[f32], h: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(h) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, w)| v * inv * w));
    }
    out
}

fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests;
