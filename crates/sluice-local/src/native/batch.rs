//! [`Batch`]: the sequence slots of one model (a KV cache each) and one pool of worker
//! threads, running any mix of slots' tokens in one forward pass: decode steps of several
//! sequences and prefill chunks together, every weight row read once per pass.

use std::sync::{Arc, Mutex, PoisonError};

use super::acts::Acts;
use super::cache::Cache;
use super::ops::{add_into, add_rows, apply_rope, gelu_mul, rms_norm, rope_table};
use super::quant::QMatrix;
use super::simd;
use super::weights::Model;
use super::workers::Workers;
use crate::error::{Error, ErrorKind, Result};
use crate::gguf::info::KvCacheType;

/// One slot's part of a forward pass: `tokens` at positions `position ..` of slot `slot`.
/// Positions before `position` must have been run on that slot already.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    pub position: usize,
}

/// A model's slots and the threads they compute on.
pub(crate) struct Batch {
    model: Arc<Model>,
    context: usize,
    /// One KV cache per slot.
    caches: Vec<Cache>,
    workers: Workers,
}

/// Where each row of a pass comes from.
#[derive(Clone, Copy)]
struct Row {
    slot: usize,
    position: usize,
}

// === impl Batch ===

impl Batch {
    /// `slots` slots with room for `context` positions each in a `kv` cache, computing on
    /// `threads` threads.
    pub(crate) fn new(
        model: Arc<Model>,
        slots: usize,
        context: usize,
        kv: KvCacheType,
        threads: usize,
        name: &str,
    ) -> Result<Self> {
        let workers = Workers::new(threads, name)
            .map_err(|e| ErrorKind::Internal(format!("cannot start worker threads: {e}")))?;
        let len = context * model.kv_dim();
        let layers = model.layers.len();
        let kv = kv.for_head(model.head_dim);
        Ok(Self {
            caches: (0..slots).map(|_| Cache::new(kv, layers, len)).collect(),
            model,
            context,
            workers,
        })
    }

    /// The number of slots (KV caches).
    pub(crate) fn slots(&self) -> usize {
        self.caches.len()
    }

    /// Bytes the slots' KV caches hold.
    pub(crate) fn kv_bytes(&self) -> u64 {
        self.caches.iter().map(|c| c.bytes() as u64).sum()
    }

    /// Runs every step in one pass, appending to the slots' KV caches, and returns the logits
    /// of each step's last token, in the order of `steps`.
    pub(crate) fn forward(&mut self, steps: &[Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let rows = self.rows(steps)?;
        let model = Arc::clone(&self.model);
        let (m, h, hd, kvd) = (rows.len(), model.hidden, model.head_dim, model.kv_dim());
        let hp = &model.hp;
        let mut x = vec![0.0f32; m * h];
        let tokens = steps.iter().flat_map(|s| s.tokens);
        for (row, &t) in x.chunks_exact_mut(h).zip(tokens) {
            model.embed.dequantize_row(t as usize, row);
        }
        if hp.embed_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= hp.embed_scale);
        }
        let ropes: Vec<Vec<(f32, f32)>> = hp
            .inv_freqs
            .iter()
            .map(|f| rope_table(f, rows.iter().map(|r| r.position)))
            .collect();
        for (l, layer) in model.layers.iter().enumerate() {
            let (window, rope) = hp.layers[l];
            let mut acts = Acts::new(rms_norm(&x, &layer.attn_norm, h, hp.eps), m, h);
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
            if let Some([qn, kn]) = &layer.qk_norm {
                q = rms_norm(&q, qn, hd, hp.eps);
                k = rms_norm(&k, kn, hd, hp.eps);
            }
            apply_rope(&mut q, &ropes[rope], hd, hp.neox);
            apply_rope(&mut k, &ropes[rope], hd, hp.neox);
            for (i, r) in rows.iter().enumerate() {
                let span = i * kvd..(i + 1) * kvd;
                let cache = &mut self.caches[r.slot];
                cache.store(model.isa, l, r.position * kvd, &k[span.clone()], &v[span]);
            }
            let att = self.attention(l, &q, &rows, window);
            let mut acts = Acts::new(att, m, model.q_dim());
            acts.prepare(layer.wo.qtype);
            let mut o = self.matmul(&[(&layer.wo, &acts)]).pop().unwrap_or_default();
            if let Some([post, _]) = &layer.post_norms {
                o = rms_norm(&o, post, h, hp.eps);
            }
            add_into(&mut x, &o);

            let mut acts = Acts::new(rms_norm(&x, &layer.ffn_norm, h, hp.eps), m, h);
            acts.prepare(layer.gate.qtype);
            acts.prepare(layer.up.qtype);
            let mut gu = self.matmul(&[(&layer.gate, &acts), (&layer.up, &acts)]);
            let up = gu.pop().unwrap_or_default();
            let mut gate = gu.pop().unwrap_or_default();
            if hp.gelu {
                gelu_mul(&mut gate, &up);
            } else {
                simd::silu_mul(model.isa, &mut gate, &up);
            }
            let ffn = layer.down.cols;
            let mut acts = Acts::new(gate, m, ffn);
            acts.prepare(layer.down.qtype);
            let mut d = self
                .matmul(&[(&layer.down, &acts)])
                .pop()
                .unwrap_or_default();
            if let Some([_, post]) = &layer.post_norms {
                d = rms_norm(&d, post, h, hp.eps);
            }
            add_into(&mut x, &d);
        }
        // Only each step's last row goes through the output projection.
        let mut last = Vec::with_capacity(steps.len() * h);
        let mut end = 0;
        for s in steps {
            end += s.tokens.len();
            last.extend_from_slice(&x[(end - 1) * h..end * h]);
        }
        let last = rms_norm(&last, &model.norm, h, hp.eps);
        let output = model.output.as_ref().unwrap_or(&model.embed);
        let mut acts = Acts::new(last, steps.len(), h);
        acts.prepare(output.qtype);
        let mut logits = self.matmul(&[(output, &acts)]).pop().unwrap_or_default();
        if let Some(cap) = hp.final_softcap {
            logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
        Ok(logits
            .chunks_exact(model.vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Checks the steps and lists their rows.
    fn rows(&self, steps: &[Step<'_>]) -> Result<Vec<Row>> {
        if steps.is_empty() {
            return Err(Error::invalid_request("no tokens to run"));
        }
        let mut rows = Vec::new();
        for s in steps {
            if s.tokens.is_empty() {
                return Err(Error::invalid_request("no tokens to run"));
            }
            if s.slot >= self.caches.len() {
                return Err(ErrorKind::Internal(format!("no slot {}", s.slot)).into());
            }
            if s.position + s.tokens.len() > self.context {
                return Err(ErrorKind::ContextLengthExceeded {
                    prompt_tokens: s.position + s.tokens.len(),
                    context_length: self.context,
                }
                .into());
            }
            if let Some(&t) = s.tokens.iter().find(|&&t| t as usize >= self.model.vocab) {
                return Err(Error::invalid_request(format!(
                    "token id {t} is out of range"
                )));
            }
            if steps.iter().filter(|o| o.slot == s.slot).count() > 1 {
                return Err(ErrorKind::Internal(format!("slot {} twice in a pass", s.slot)).into());
            }
            rows.extend((0..s.tokens.len()).map(|i| Row {
                slot: s.slot,
                position: s.position + i,
            }));
        }
        Ok(rows)
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

    /// Causal attention of each row's query over its slot's cache of layer `l`, up to and
    /// including the row's own position, over its last `window` positions only where the layer
    /// slides.
    fn attention(&self, l: usize, q: &[f32], rows: &[Row], window: Option<usize>) -> Vec<f32> {
        let model = &self.model;
        let (hd, heads, kvd) = (model.head_dim, model.heads, model.kv_dim());
        let group = heads / model.kv_heads;
        let scoring = simd::Scoring {
            scale: model.hp.attn_scale,
            cap: model.hp.attn_softcap,
        };
        let isa = model.isa;
        let mut out = vec![0.0f32; rows.len() * heads * hd];
        let tasks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(hd).map(Mutex::new).collect();
        self.workers.run(tasks.len(), &|i| {
            let (t, head) = (i / heads, i % heads);
            let row = rows[t];
            let at = head / group * hd;
            let mut out = tasks[i].lock().unwrap_or_else(PoisonError::into_inner);
            let mut scores = Vec::new();
            let end = row.position + 1;
            let start = window.map_or(0, |w| end.saturating_sub(w));
            self.caches[row.slot].attend(
                isa,
                (l, at + start * kvd, kvd),
                &q[t * heads * hd + head * hd..][..hd],
                end - start,
                scoring,
                &mut scores,
                &mut out,
            );
        });
        drop(tasks);
        out
    }
}

/// One slot on its own: a [`Batch`] of one, stepped token by token or chunk by chunk (tests).
#[cfg(test)]
pub(crate) struct Session(Batch);

// === impl Session ===

#[cfg(test)]
impl Session {
    /// A slot with room for `context` positions in a `kv` cache, computing on `threads` threads.
    pub(crate) fn new(
        model: Arc<Model>,
        context: usize,
        kv: KvCacheType,
        threads: usize,
        name: &str,
    ) -> Result<Self> {
        Batch::new(model, 1, context, kv, threads, name).map(Self)
    }

    /// Runs `tokens` at positions `position ..`, appending to the KV cache, and returns the
    /// logits of the last one. Positions before `position` must have been run already.
    pub(crate) fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>> {
        let step = Step {
            slot: 0,
            tokens,
            position,
        };
        Ok(self.0.forward(&[step])?.pop().unwrap_or_default())
    }
}
