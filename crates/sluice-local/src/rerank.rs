//! Reranking with cross-encoders: a query and documents in, a relevance score per document out,
//! as sentence-transformers' `CrossEncoder.predict` computes them.
//!
//! A cross-encoder is a sentence-transformers `CrossEncoder` directory around a Hugging Face
//! `BertForSequenceClassification` with one label: `config.json` (whose `architectures` names
//! a `...ForSequenceClassification`), `tokenizer.json`, `model.safetensors`, and optionally
//! `config_sentence_transformers.json`, `tokenizer_config.json` and
//! `sentence_bert_config.json`. [`is_reranker_model`] tells one from an embedding model
//! directory, which has the same files.
//!
//! Each (query, document) pair is tokenized as `[CLS] query [SEP] document [SEP]`, token type 0
//! then 1, and cut to [`CrossEncoder::max_seq_length`] the way the Hugging Face tokenizer cuts
//! pairs (`longest_first`: a token at a time off the longer side); the encoder is the one
//! embeddings run on (`embed/bert`, given the second segment); the head (`head`) is BERT's
//! pooler (dense and `tanh` on `[CLS]`) and the classifier; the score is the classifier's logit
//! through the [`Activation`] sentence-transformers picks (`activation`: `Sigmoid` unless the
//! files name another). Models of another `model_type` than `bert` (XLM-RoBERTa's rerankers),
//! with other than one label, or with an activation other than `Sigmoid`, `Identity` or `Tanh`
//! are refused at load, by name.
//!
//! [`CrossEncoder`] (in `model`) loads a directory and scores a batch; [`Reranker`] (in
//! `reranker`) puts it behind the batching thread embeddings use, so the pairs of concurrent
//! requests share batches (`max_batch` counts pairs).

mod activation;
mod head;
mod model;
mod reranker;

pub use activation::Activation;
pub use model::{estimate_rerank_memory, is_reranker_model, CrossEncoder, PairTokens};
pub use reranker::{RerankOutput, Reranker, MAX_RERANK_DOCUMENTS};
