//! [`CrossEncoder`]: a sentence-transformers `CrossEncoder` directory (a Hugging Face
//! `BertForSequenceClassification` with one label) loaded and run: pairs tokenized as
//! `[CLS] query [SEP] document [SEP]`, encoded, scored from the `[CLS]` state.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::{
    truncate_encodings, Encoding, PostProcessor, Tokenizer, TruncationParams, TruncationStrategy,
};

use super::activation::Activation;
use super::head::Head;
use crate::embed::bert::{Bert, BertConfig, Segments};
use crate::embed::files::{
    is_encoder_dir, is_sequence_classifier, load_weights, read_json, read_optional_json,
    safetensors_elements, TOKENIZER_BYTES,
};
use crate::{Error, ErrorKind, Result};

/// A (query, document) pair, tokenized: token ids with the special tokens, and where the
/// document's segment (token type 1) starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairTokens {
    /// `[CLS] query [SEP] document [SEP]`, truncated.
    pub ids: Vec<u32>,
    /// Index of the document's first token (its token type is 1 from there on).
    pub second: usize,
}

/// A loaded cross-encoder.
pub struct CrossEncoder {
    bert: Bert,
    head: Head,
    /// Without truncation: pairs are cut by [`Self::truncation`] (see [`Self::tokenize_pairs`]).
    tokenizer: Tokenizer,
    /// `longest_first` to `max_seq_length` less the special tokens of a pair.
    truncation: TruncationParams,
    max_seq_length: usize,
    path: PathBuf,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("path", &self.path)
            .field("max_seq_length", &self.max_seq_length)
            .field("activation", &self.head.activation())
            .finish()
    }
}

/// `config.json` fields that make a classifier of it (beyond the encoder's [`BertConfig`]).
#[derive(Debug, Default, Deserialize)]
struct ClassifierConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    id2label: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    sentence_transformers: Option<SentenceTransformersConfig>,
    #[serde(default)]
    sbert_ce_default_activation_function: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct SentenceTransformersConfig {
    #[serde(default)]
    activation_fn: Option<String>,
}

impl ClassifierConfig {
    fn is_sequence_classifier(&self) -> bool {
        self.architectures
            .iter()
            .any(|a| a.ends_with("ForSequenceClassification"))
    }

    /// Hugging Face's count: `id2label`'s size, else `num_labels`, else its default of 2.
    fn labels(&self) -> usize {
        self.id2label
            .as_ref()
            .map(serde_json::Map::len)
            .or(self.num_labels)
            .unwrap_or(2)
    }
}

/// Whether `path` is a directory holding a cross-encoder: the files of an embedding model
/// (`config.json`, `tokenizer.json`, `model.safetensors`) and a `config.json` whose
/// `architectures` name a `...ForSequenceClassification` model.
pub fn is_reranker_model(path: &Path) -> bool {
    is_encoder_dir(path) && is_sequence_classifier(path)
}

/// The model's settings from its files.
struct Layout {
    config: BertConfig,
    max_seq_length: usize,
    activation: Activation,
}

fn layout(dir: &Path) -> Result<Layout> {
    let config_path = dir.join("config.json");
    let config: BertConfig = read_json(&config_path)?;
    let classifier: ClassifierConfig = read_json(&config_path)?;
    if !classifier.is_sequence_classifier() {
        return Err(Error::invalid_metadata(
            "architectures",
            "a cross-encoder is a `...ForSequenceClassification` model",
        ));
    }
    if let Some(kind) = classifier.model_type.as_deref().filter(|k| *k != "bert") {
        return Err(ErrorKind::UnsupportedByEngine {
            engine: "native",
            path: dir.to_path_buf(),
            reason: format!("cross-encoders of `model_type` `{kind}` (only `bert`)"),
        }
        .into());
    }
    let labels = classifier.labels();
    if labels != 1 {
        return Err(ErrorKind::UnsupportedLabels(labels).into());
    }
    Ok(Layout {
        max_seq_length: max_seq_length(dir, &config)?,
        activation: activation(dir, &classifier)?,
        config,
    })
}

/// Tokens per pair: `sentence_bert_config.json`'s `max_seq_length` where it is set, else the
/// tokenizer's `model_max_length` (`tokenizer_config.json`) capped at the position table, as
/// sentence-transformers decides; never more than the position table.
fn max_seq_length(dir: &Path, config: &BertConfig) -> Result<usize> {
    let field = |json: Option<serde_json::Value>, key: &str| {
        json.and_then(|j| j.get(key).and_then(serde_json::Value::as_u64))
    };
    let st = field(
        read_optional_json(&dir.join("sentence_bert_config.json"))?,
        "max_seq_length",
    );
    let tokenizer = field(
        read_optional_json(&dir.join("tokenizer_config.json"))?,
        "model_max_length",
    );
    let positions = config.max_position_embeddings;
    Ok(st
        .or(tokenizer)
        .map_or(positions, |n| usize::try_from(n).unwrap_or(usize::MAX))
        .min(positions))
}

/// The activation, as [`Activation`]'s module docs order the files.
fn activation(dir: &Path, classifier: &ClassifierConfig) -> Result<Activation> {
    let st = read_optional_json(&dir.join("config_sentence_transformers.json"))?;
    let saved = st
        .as_ref()
        .and_then(|c| c.get("activation_fn"))
        .and_then(serde_json::Value::as_str);
    // sentence-transformers reads the legacy key only when the newer one is absent.
    let config = match &classifier.sentence_transformers {
        Some(SentenceTransformersConfig {
            activation_fn: Some(path),
        }) => Some(path.as_str()),
        _ => classifier.sbert_ce_default_activation_function.as_deref(),
    };
    Activation::resolve([saved, config])
}

/// Bytes the cross-encoder in `dir` is predicted to hold once loaded (its weights as `f32`)
/// plus the scratch of one forward pass over `max_batch` pairs of the longest length.
pub fn estimate_rerank_memory(dir: &Path, max_batch: usize) -> Result<u64> {
    let layout = layout(dir)?;
    let weights = safetensors_elements(&dir.join("model.safetensors"))? * 4;
    let scratch = Bert::scratch_bytes(&layout.config, max_batch.max(1) * layout.max_seq_length);
    Ok(weights + scratch + TOKENIZER_BYTES)
}

// === impl CrossEncoder ===

impl CrossEncoder {
    /// Loads the cross-encoder in directory `dir` (blocks: reads the weights).
    pub fn load(dir: &Path) -> Result<Self> {
        let layout = layout(dir)?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(Error::tokenizer)?;
        // No padding (this encoder needs none) and no truncation while encoding: see
        // `tokenize_pairs`.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(Error::tokenizer)?;
        let special = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(true));
        let truncation = TruncationParams {
            max_length: layout.max_seq_length.saturating_sub(special),
            strategy: TruncationStrategy::LongestFirst,
            ..TruncationParams::default()
        };
        let mut weights = load_weights(&dir.join("model.safetensors"))?;
        let head = Head::take(&mut weights, layout.config.hidden_size, layout.activation)?;
        let bert = Bert::new(layout.config, weights)?;
        Ok(Self {
            bert,
            head,
            tokenizer,
            truncation,
            max_seq_length: layout.max_seq_length,
            path: dir.to_path_buf(),
        })
    }

    /// Tokens per pair after which the longer of query and document is cut.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The activation applied to the logit.
    pub fn activation(&self) -> Activation {
        self.head.activation()
    }

    /// Bytes held (weights and tokenizer).
    pub fn memory_bytes(&self) -> u64 {
        self.bert.weight_bytes() + self.head.weight_bytes() + TOKENIZER_BYTES
    }

    /// [`Self::memory_bytes`] plus the scratch of one forward pass over `max_batch` pairs of
    /// the longest length: what the pool counts (as [`estimate_rerank_memory`] predicts).
    pub fn memory_with_batch(&self, max_batch: usize) -> u64 {
        self.memory_bytes()
            + Bert::scratch_bytes(self.bert.config(), max_batch.max(1) * self.max_seq_length)
    }

    /// `[CLS] query [SEP] document [SEP]` for each document, truncated `longest_first` to
    /// [`Self::max_seq_length`]: while the pair is too long, a token comes off the end of the
    /// longer text (as the Hugging Face tokenizer does with `truncation="longest_first"`).
    ///
    /// The texts are encoded whole and cut here, not by the tokenizer's own truncation: since
    /// 0.23 the `tokenizers` crate stops encoding each text near `max_length` tokens before it
    /// compares their lengths, so for two long texts it could cut the wrong one (seen with
    /// 0.23.2 against the Python package's 0.23.3).
    pub fn tokenize_pairs(&self, query: &str, documents: &[&str]) -> Result<Vec<PairTokens>> {
        let query = self.encode(query)?;
        documents
            .iter()
            .map(|document| {
                let document = self.encode(document)?;
                let (query, document) =
                    truncate_encodings(query.clone(), Some(document), &self.truncation)
                        .map_err(Error::tokenizer)?;
                let pair = self
                    .tokenizer
                    .post_process(query, document, true)
                    .map_err(Error::tokenizer)?;
                let ids = pair.get_ids().to_vec();
                let second = pair
                    .get_type_ids()
                    .iter()
                    .position(|&t| t != 0)
                    .unwrap_or(ids.len());
                Ok(PairTokens { ids, second })
            })
            .collect()
    }

    /// One pair, as [`Self::tokenize_pairs`] tokenizes it.
    pub fn tokenize(&self, query: &str, document: &str) -> Result<PairTokens> {
        let mut pairs = self.tokenize_pairs(query, &[document])?;
        pairs
            .pop()
            .ok_or_else(|| ErrorKind::Internal("no pair tokenized".into()).into())
    }

    /// A text's tokens without special tokens, whole.
    fn encode(&self, text: &str) -> Result<Encoding> {
        self.tokenizer
            .encode_fast(text, false)
            .map_err(Error::tokenizer)
    }

    /// Scores already tokenized pairs as one batch: one score per pair.
    pub fn score_tokens(&self, pairs: &[&PairTokens]) -> Result<Vec<f32>> {
        let h = self.bert.config().hidden_size;
        let segments: Vec<Segments<'_>> = pairs
            .iter()
            .map(|p| Segments {
                ids: &p.ids,
                second: p.second,
            })
            .collect();
        let states = self.bert.forward_segments(&segments)?;
        let mut at = 0;
        let mut scores = Vec::with_capacity(pairs.len());
        for pair in pairs {
            if pair.ids.is_empty() {
                return Err(Error::invalid_request("a pair without tokens"));
            }
            scores.push(self.head.score(&states[at * h..(at + 1) * h]));
            at += pair.ids.len();
        }
        Ok(scores)
    }

    /// Scores `(query, document)` pairs as one batch.
    pub fn score(&self, query: &str, documents: &[&str]) -> Result<Vec<f32>> {
        let pairs = self.tokenize_pairs(query, documents)?;
        let refs: Vec<&PairTokens> = pairs.iter().collect();
        self.score_tokens(&refs)
    }
}
