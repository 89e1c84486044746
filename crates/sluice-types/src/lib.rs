//! OpenAI wire types and the light views sluice reads on the hot path.
//!
//! sluice forwards request and response bodies as bytes and reads only the fields it needs:
//! parsing a whole JSON tree and serialising it again costs more than everything else a
//! gateway does per request. The views here borrow from the body and record where each
//! top-level value sits, so that a field can be replaced by splicing bytes (see [`splice`]).
//! Fields sluice does not know are never touched, so new OpenAI features pass through.
//!
//! No I/O lives in this crate.
#![forbid(unsafe_code)]

pub mod chat;
pub mod chunked;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod media;
pub mod multipart;
pub mod openai;
pub mod splice;
pub mod sse;
pub mod usage;

pub use chat::ChatRequest;
pub use completions::CompletionRequest;
pub use embeddings::EmbeddingsRequest;
pub use error::{ErrorBody, ErrorType};
pub use media::{MediaKind, MediaRequest, MediaUnits};
pub use usage::Usage;

/// A request body that failed validation: the message says what is wrong, `param` names
/// the offending field where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest {
    /// Human-readable reason, safe to return to the client.
    pub message: String,
    /// The request field at fault, as OpenAI reports it in `error.param`.
    pub param: Option<&'static str>,
}

impl InvalidRequest {
    /// An error that names the field at fault.
    pub fn param(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            param: Some(param),
        }
    }

    /// An error about the body as a whole.
    pub fn body(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            param: None,
        }
    }
}

impl std::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvalidRequest {}

/// Where a borrowed slice of `body` starts and ends, as byte offsets into `body`.
///
/// `part` must have been borrowed from `body` (serde_json's borrowed `RawValue` is);
/// returns `None` otherwise.
pub(crate) fn span_in(body: &[u8], part: &str) -> Option<std::ops::Range<usize>> {
    let base = body.as_ptr() as usize;
    let start = (part.as_ptr() as usize).checked_sub(base)?;
    let end = start.checked_add(part.len())?;
    (end <= body.len()).then_some(start..end)
}

/// Turns a serde_json syntax or type error into the message a client sees.
pub(crate) fn json_error(err: &serde_json::Error) -> InvalidRequest {
    use serde_json::error::Category;
    let message = match err.classify() {
        Category::Eof => format!("request body is not valid JSON: unexpected end of input ({err})"),
        Category::Syntax | Category::Io => format!("request body is not valid JSON: {err}"),
        Category::Data => format!("invalid request body: {err}"),
    };
    InvalidRequest::body(message)
}
