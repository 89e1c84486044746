//! The crate's one error type.
//!
//! [`Error`] boxes an [`ErrorKind`] so `Result<T, Error>` stays one pointer wide. The kinds are
//! grouped by who can fix them: the model file (`InvalidFile`, `UnsupportedArchitecture`,
//! `UnsupportedFeature`,
//! `UnsupportedTensorType`, `UnsupportedByEngine`, `UnsupportedActivation`,
//! `UnsupportedLabels`, `MissingMetadata`, `InvalidMetadata`, `UnsupportedTokenizer`, `Template`), the request
//! (`InvalidRequest`, `ContextLengthExceeded`, `TemplateRender`, `InvalidRerank`), load (`QueueFull`, which the
//! server maps to 503 + `Retry-After`) and the runtime (`Io`, `Backend`, `Unloaded`, `Internal`).

use std::path::PathBuf;

/// An error from loading or running a local model.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<ErrorKind>);

/// What went wrong; see [`Error::kind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The model file could not be opened or read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a readable GGUF file (bad magic, truncated, corrupt tensor data).
    #[error("`{path}` is not a valid GGUF file: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What the reader reported.
        reason: String,
    },
    /// `general.architecture` names a model family this runtime cannot run.
    #[error("unsupported model architecture `{0}` (supported: `llama`, `qwen2`, `phi3`, `gemma2`, `gemma3`)")]
    UnsupportedArchitecture(String),
    /// A supported architecture with a feature this runtime does not implement (e.g. Phi-3's
    /// LongRoPE of the 128k-context files): the feature and the architecture.
    #[error("unsupported model feature: {0}")]
    UnsupportedFeature(String),
    /// A tensor is stored in a type no engine here reads (e.g. the IQ types).
    #[error(
        "tensor `{tensor}` has type {dtype}, which this runtime cannot read (supported: F32, \
         F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)"
    )]
    UnsupportedTensorType {
        /// The first tensor of that type.
        tensor: String,
        /// ggml's name of the type (`IQ4_NL`), or its id when unknown.
        dtype: String,
    },
    /// The engine asked for (`engine = "native"`) cannot run this file or device.
    #[error("the {engine} engine cannot run `{path}`: {reason}")]
    UnsupportedByEngine {
        /// The engine.
        engine: &'static str,
        /// The file.
        path: PathBuf,
        /// What it lacks.
        reason: String,
    },
    /// A cross-encoder's configuration names an activation this runtime does not apply (it
    /// applies `Sigmoid`, `Identity` and `Tanh` from `torch.nn`).
    #[error(
        "unsupported cross-encoder activation `{0}` (supported: torch.nn's `Sigmoid`, \
         `Identity`, `Tanh`)"
    )]
    UnsupportedActivation(String),
    /// A cross-encoder has other than one label: it gives no single relevance score.
    #[error("the cross-encoder has {0} labels; a reranker needs exactly one (one score per pair)")]
    UnsupportedLabels(usize),
    /// A required GGUF metadata key is absent.
    #[error("missing GGUF metadata key `{0}`")]
    MissingMetadata(String),
    /// A GGUF metadata key or tensor has the wrong type, shape or value.
    #[error("invalid GGUF metadata `{key}`: {reason}")]
    InvalidMetadata {
        /// The metadata key or tensor name.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The tokenizer described by the metadata is not supported (model or pre-tokenizer).
    #[error("unsupported tokenizer: {0}")]
    UnsupportedTokenizer(String),
    /// The tokenizer failed to build or to encode.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The chat template in `tokenizer.chat_template` does not compile.
    #[error("invalid chat template: {0}")]
    Template(String),
    /// The chat template failed while rendering this request's messages (including
    /// `raise_exception` calls from the template).
    #[error("chat template rejected the messages: {0}")]
    TemplateRender(String),
    /// A request parameter is out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A rerank request that cannot be scored (no query, no documents, too many).
    #[error("invalid rerank request: {0}")]
    InvalidRerank(RerankInputError),
    /// The rendered prompt does not leave room for a single generated token.
    #[error(
        "the prompt has {prompt_tokens} tokens but the model's context length is {context_length}: \
         it must leave room for at least one generated token"
    )]
    ContextLengthExceeded {
        /// Tokens in the rendered prompt.
        prompt_tokens: usize,
        /// The model's context length as loaded.
        context_length: usize,
    },
    /// The model's request queue is full; retry later.
    #[error("the model's request queue is full ({capacity} waiting)")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The model was unloaded while the request waited or ran.
    #[error("the model was unloaded")]
    Unloaded,
    /// The tensor backend (candle) failed.
    #[error("model backend error: {0}")]
    Backend(String),
    /// A bug: a worker panicked or a channel closed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a rerank request was refused before it was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RerankInputError {
    /// The query is empty.
    #[error("the query is empty")]
    EmptyQuery,
    /// The documents list is empty.
    #[error("no documents to rank")]
    NoDocuments,
    /// More documents than one request may hold.
    #[error("{count} documents, more than the {max} a request may hold")]
    TooManyDocuments {
        /// Documents given.
        count: usize,
        /// Documents allowed.
        max: usize,
    },
}

// === impl Error ===

impl Error {
    /// The kind of error.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Whether the caller should retry later (the queue was full).
    pub fn is_queue_full(&self) -> bool {
        matches!(*self.0, ErrorKind::QueueFull { .. })
    }

    /// Whether the model file (or the engine asked for) is one this runtime cannot run: an
    /// unsupported architecture or tensor type, or an engine that cannot run it. A valid file,
    /// refused; the server answers 503 `model_unsupported`.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            *self.0,
            ErrorKind::UnsupportedArchitecture(_)
                | ErrorKind::UnsupportedTensorType { .. }
                | ErrorKind::UnsupportedFeature(_)
                | ErrorKind::UnsupportedByEngine { .. }
                | ErrorKind::UnsupportedActivation(_)
                | ErrorKind::UnsupportedLabels(_)
        )
    }

    /// Whether the request itself is at fault (the server's 400): a parameter out of range,
    /// a prompt too long or refused by the template, a rerank request without query or
    /// documents or with too many.
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            *self.0,
            ErrorKind::InvalidRequest(_)
                | ErrorKind::TemplateRender(_)
                | ErrorKind::ContextLengthExceeded { .. }
                | ErrorKind::InvalidRerank(_)
        )
    }

    pub(crate) fn backend(error: impl std::fmt::Display) -> Self {
        ErrorKind::Backend(error.to_string()).into()
    }

    pub(crate) fn invalid_file(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        ErrorKind::InvalidFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
        .into()
    }

    pub(crate) fn invalid_metadata(key: &str, reason: impl std::fmt::Display) -> Self {
        ErrorKind::InvalidMetadata {
            key: key.to_owned(),
            reason: reason.to_string(),
        }
        .into()
    }

    pub(crate) fn invalid_request(reason: impl std::fmt::Display) -> Self {
        ErrorKind::InvalidRequest(reason.to_string()).into()
    }

    pub(crate) fn tokenizer(error: impl std::fmt::Display) -> Self {
        ErrorKind::Tokenizer(error.to_string()).into()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self(Box::new(kind))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns a caught panic payload into an [`ErrorKind::Internal`].
pub(crate) fn panic_error(what: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    ErrorKind::Internal(format!("{what} panicked: {message}")).into()
}
