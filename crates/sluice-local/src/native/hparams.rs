//! The forward pass's hyperparameters per architecture, read from a GGUF's metadata with
//! llama.cpp's keys and defaults: RMS epsilon, rope layout and bases, Gemma's embedding scale,
//! GELU, attention scale, soft-capping and sliding-window layers.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::error::{ErrorKind, Result};
use crate::gguf::info::{Architecture, ModelInfo};

/// What the forward pass needs beyond the weights.
pub(super) struct HParams {
    pub(super) eps: f32,
    /// Rotary pairs `(i, i + d/2)` (all but llama) rather than `(2i, 2i+1)`.
    pub(super) neox: bool,
    /// The embeddings are multiplied by this (Gemma: √hidden; else 1).
    pub(super) embed_scale: f32,
    /// GELU (tanh approximation) gates the feed-forward (Gemma) instead of SiLU.
    pub(super) gelu: bool,
    /// Scale of `q·k` (1/√head size; Gemma's 27B: 1/√(hidden / heads)).
    pub(super) attn_scale: f32,
    /// Gemma 2's attention logit soft-capping.
    pub(super) attn_softcap: Option<f32>,
    /// Gemma 2's (and some Gemma 3's) final logit soft-capping.
    pub(super) final_softcap: Option<f32>,
    /// `θᵢ` of each rotary pair, one table per distinct rope (global, then sliding layers').
    pub(super) inv_freqs: Vec<Vec<f32>>,
    /// Per layer: its sliding window (it attends to the last `window` positions only) and its
    /// table in `inv_freqs`.
    pub(super) layers: Vec<(Option<usize>, usize)>,
}

fn f32_key(md: &HashMap<String, Value>, key: &str) -> Option<f32> {
    md.get(key).and_then(|v| v.to_f32().ok())
}

fn u32_key(md: &HashMap<String, Value>, key: &str) -> Option<u32> {
    md.get(key).and_then(|v| v.to_u32().ok())
}

/// `θᵢ = scale / baseⁱᐟᵈ` for the `d/2` rotary pairs.
fn inv_freq(base: f32, scale: f32, hd: usize) -> Vec<f32> {
    (0..hd)
        .step_by(2)
        .map(|i| scale / base.powf(i as f32 / hd as f32))
        .collect()
}

// === impl HParams ===

impl HParams {
    /// Reads them; `rope_freqs` are Llama 3.1's frequency factors (`rope_freqs.weight`).
    pub(super) fn read(
        md: &HashMap<String, Value>,
        info: &ModelInfo,
        rope_freqs: Option<Vec<f32>>,
    ) -> Result<Self> {
        let arch = info.architecture;
        let key = |k: &str| format!("{}.{k}", arch.as_str());
        let eps = f32_key(md, &key("attention.layer_norm_rms_epsilon"))
            .ok_or_else(|| ErrorKind::MissingMetadata(key("attention.layer_norm_rms_epsilon")))?;
        let hd = info.head_dim;
        let base = f32_key(md, &key("rope.freq_base")).unwrap_or(10_000.0);
        let scale = f32_key(md, &key("rope.scaling.factor"))
            .filter(|&f| f > 0.0)
            .map_or(1.0, |f| 1.0 / f);
        let mut global = inv_freq(base, scale, hd);
        if let Some(factors) = rope_freqs {
            for (f, factor) in global.iter_mut().zip(factors) {
                *f /= factor;
            }
        }
        let mut hp = Self {
            eps,
            neox: arch != Architecture::Llama,
            embed_scale: 1.0,
            gelu: false,
            attn_scale: 1.0 / (hd as f32).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            inv_freqs: vec![global],
            layers: vec![(None, 0); info.block_count],
        };
        if matches!(arch, Architecture::Gemma2 | Architecture::Gemma3) {
            hp.gemma(md, info, base, scale);
        }
        Ok(hp)
    }

    /// Gemma 2 and 3, as llama.cpp's `gemma2.cpp`/`gemma3.cpp` read them.
    fn gemma(&mut self, md: &HashMap<String, Value>, info: &ModelInfo, base: f32, scale: f32) {
        let gemma2 = info.architecture == Architecture::Gemma2;
        let key = |k: &str| format!("{}.{k}", info.architecture.as_str());
        let h = info.embedding_length;
        self.embed_scale = (h as f32).sqrt();
        self.gelu = true;
        // The 27B models (46 layers of Gemma 2, 62 of Gemma 3) scale by hidden / heads.
        if (gemma2 && info.block_count == 46) || (!gemma2 && info.block_count == 62) {
            self.attn_scale = 1.0 / ((h / info.head_count) as f32).sqrt();
        }
        let final_cap = f32_key(md, &key("final_logit_softcapping"));
        if gemma2 {
            self.attn_softcap = Some(f32_key(md, &key("attn_logit_softcapping")).unwrap_or(50.0));
            self.final_softcap = Some(final_cap.unwrap_or(30.0));
        } else {
            self.final_softcap = final_cap.filter(|&c| c != 0.0);
        }
        let window = u32_key(md, &key("attention.sliding_window")).map(|w| w as usize);
        let window = match (gemma2, window) {
            (true, w) => Some(w.unwrap_or(4096)),
            (false, Some(w)) if w > 0 => Some(w),
            _ => None,
        };
        let Some(window) = window else { return };
        let sliding = sliding_layers(md, &key("attention.sliding_window_pattern"), gemma2, info);
        // Sliding layers' rope: Gemma 2's is the global one; Gemma 3's base is
        // `rope.freq_base_swa` (10,000) without the global layers' scaling.
        let local = if gemma2 {
            0
        } else {
            let local_base = f32_key(md, &key("rope.freq_base_swa")).unwrap_or(10_000.0);
            if local_base != base || scale != 1.0 {
                self.inv_freqs
                    .push(inv_freq(local_base, 1.0, info.head_dim));
                1
            } else {
                0
            }
        };
        for (layer, slides) in self.layers.iter_mut().zip(sliding) {
            if slides {
                *layer = (Some(window), local);
            }
        }
    }
}

/// Which layers slide: `sliding_window_pattern` as an array of booleans, or as `n` (every
/// layer but each `n`th), else Gemma 2's 2 or Gemma 3's 6.
fn sliding_layers(
    md: &HashMap<String, Value>,
    key: &str,
    gemma2: bool,
    info: &ModelInfo,
) -> Vec<bool> {
    if let Some(Value::Array(flags)) = md.get(key) {
        let flags: Vec<bool> = flags
            .iter()
            .map(|v| matches!(v, Value::Bool(true)))
            .collect();
        if flags.len() == info.block_count {
            return flags;
        }
    }
    let n = u32_key(md, key)
        .map(|n| n as usize)
        .unwrap_or(if gemma2 { 2 } else { 6 });
    (0..info.block_count)
        .map(|l| n == 0 || l % n < n - 1)
        .collect()
}
