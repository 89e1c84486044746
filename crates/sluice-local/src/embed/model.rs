//! [`EmbedModel`]: a sentence-transformers directory loaded (settings, tokenizer, weights) and
//! run: tokenize, encode, pool, normalise.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::bert::{Bert, BertConfig, Precision};
use super::files::{
    is_encoder_dir, is_sequence_classifier, load_weights, read_json, read_optional_json,
    safetensors_elements, TOKENIZER_BYTES,
};
use crate::{Error, Result};

/// How token states become one vector (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of all token states.
    Mean,
    /// The first token's (`[CLS]`) state.
    Cls,
    /// Element-wise maximum over tokens.
    Max,
}

/// A loaded embedding model.
pub struct EmbedModel {
    bert: Bert,
    tokenizer: Tokenizer,
    max_seq_length: usize,
    pooling: Pooling,
    normalize: bool,
    precision: Precision,
    path: PathBuf,
}

impl std::fmt::Debug for EmbedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedModel")
            .field("path", &self.path)
            .field("dimensions", &self.dimensions())
            .field("max_seq_length", &self.max_seq_length)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("precision", &self.precision)
            .finish()
    }
}

/// Whether `path` is a directory holding an embedding model ([`EmbedModel::load`]'s layout):
/// an encoder's files whose `config.json` does not describe a sequence classifier (that is a
/// cross-encoder, see the `rerank` module).
pub fn is_embedding_model(path: &Path) -> bool {
    is_encoder_dir(path) && !is_sequence_classifier(path)
}

/// The model's settings from its sentence-transformers files.
struct Layout {
    config: BertConfig,
    max_seq_length: usize,
    pooling: Pooling,
    normalize: bool,
}

fn layout(dir: &Path) -> Result<Layout> {
    let config: BertConfig = read_json(&dir.join("config.json"))?;
    let modules = read_optional_json(&dir.join("modules.json"))?;
    let modules: Vec<(String, String)> = modules
        .as_ref()
        .and_then(|m| m.as_array())
        .map(|list| {
            list.iter()
                .map(|m| {
                    let field = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or_default();
                    (field("type").to_owned(), field("path").to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let normalize = modules.is_empty() || modules.iter().any(|(t, _)| t.ends_with(".Normalize"));
    let pooling_dir = modules
        .iter()
        .find(|(t, _)| t.ends_with(".Pooling"))
        .map(|(_, p)| dir.join(p));
    let pooling = match pooling_dir {
        Some(p) => match read_optional_json(&p.join("config.json"))? {
            Some(c) => {
                let on = |k: &str| c.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
                if on("pooling_mode_cls_token") {
                    Pooling::Cls
                } else if on("pooling_mode_max_tokens") {
                    Pooling::Max
                } else if on("pooling_mode_mean_tokens") || !on("pooling_mode_mean_sqrt_len_tokens")
                {
                    Pooling::Mean
                } else {
                    return Err(Error::invalid_metadata(
                        "pooling_mode_mean_sqrt_len_tokens",
                        "this pooling mode is not supported",
                    ));
                }
            }
            None => Pooling::Mean,
        },
        None => Pooling::Mean,
    };
    let st = read_optional_json(&dir.join("sentence_bert_config.json"))?;
    let max_seq_length = st
        .as_ref()
        .and_then(|c| c.get("max_seq_length"))
        .and_then(|v| v.as_u64())
        .map_or(config.max_position_embeddings, |n| n as usize)
        .min(config.max_position_embeddings);
    Ok(Layout {
        config,
        max_seq_length,
        pooling,
        normalize,
    })
}

/// Bytes the model in `dir` is predicted to hold once loaded (its weights as `f32`) plus the
/// scratch of one forward pass over `max_batch` sequences of the longest length.
pub fn estimate_embedding_memory(dir: &Path, max_batch: usize) -> Result<u64> {
    let layout = layout(dir)?;
    let weights = safetensors_elements(&dir.join("model.safetensors"))? * 4;
    let scratch = Bert::scratch_bytes(&layout.config, max_batch.max(1) * layout.max_seq_length);
    Ok(weights + scratch + TOKENIZER_BYTES)
}

impl EmbedModel {
    /// Loads the model in directory `dir` (blocks: reads the weights), in `f32`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_precision(dir, Precision::F32)
    }

    /// [`Self::load`] with the encoder's linear layers in `precision`.
    pub fn load_with_precision(dir: &Path, precision: Precision) -> Result<Self> {
        if is_sequence_classifier(dir) {
            return Err(Error::invalid_metadata(
                "architectures",
                "a sequence classifier is a cross-encoder: load it as a reranker",
            ));
        }
        let layout = layout(dir)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(Error::tokenizer)?;
        // sentence-transformers tokenizes each batch itself: truncation to its own
        // `max_seq_length`, and no padding (this encoder needs none).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: layout.max_seq_length,
                ..Default::default()
            }))
            .map_err(Error::tokenizer)?;
        let weights = load_weights(&dir.join("model.safetensors"))?;
        let bert = Bert::with_precision(layout.config, weights, precision)?;
        Ok(Self {
            bert,
            tokenizer,
            max_seq_length: layout.max_seq_length,
            pooling: layout.pooling,
            normalize: layout.normalize,
            precision,
            path: dir.to_path_buf(),
        })
    }

    /// Width of the vectors.
    pub fn dimensions(&self) -> usize {
        self.bert.config().hidden_size
    }

    /// The precision it was loaded in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Tokens per input after which the text is cut.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Bytes held (weights and tokenizer).
    pub fn memory_bytes(&self) -> u64 {
        self.bert.weight_bytes() + TOKENIZER_BYTES
    }

    /// [`Self::memory_bytes`] plus the scratch of one forward pass over `max_batch` inputs of
    /// the longest length: what the pool counts (as [`estimate_embedding_memory`] predicts).
    pub fn memory_with_batch(&self, max_batch: usize) -> u64 {
        self.memory_bytes()
            + Bert::scratch_bytes(self.bert.config(), max_batch.max(1) * self.max_seq_length)
    }

    /// Token ids of `text`, special tokens included, truncated to [`Self::max_seq_length`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(Error::tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds already tokenized inputs as one batch: one vector per input.
    pub fn embed_tokens(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.dimensions();
        let states = self.bert.forward(inputs)?;
        let mut at = 0;
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let rows = &states[at * h..(at + input.len()) * h];
            at += input.len();
            let mut v = vec![0f32; h];
            if !input.is_empty() {
                match self.pooling {
                    Pooling::Mean => {
                        for row in rows.chunks_exact(h) {
                            for (a, b) in v.iter_mut().zip(row) {
                                *a += b;
                            }
                        }
                        let n = input.len() as f32;
                        v.iter_mut().for_each(|a| *a /= n);
                    }
                    Pooling::Cls => v.copy_from_slice(&rows[..h]),
                    Pooling::Max => {
                        v.copy_from_slice(&rows[..h]);
                        for row in rows.chunks_exact(h).skip(1) {
                            for (a, b) in v.iter_mut().zip(row) {
                                *a = a.max(*b);
                            }
                        }
                    }
                }
            }
            if self.normalize {
                // sentence-transformers' Normalize: x / max(‖x‖, 1e-12).
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Embeds texts as one batch.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let tokens = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
        self.embed_tokens(&refs)
    }
}
