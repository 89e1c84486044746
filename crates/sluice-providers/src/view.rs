//! A client's request body, read through the light view of its operation: the fields
//! routing, limits, caching and the adapters act on, borrowed from the body (see
//! `sluice_types`). Everything else passes through untouched.

use crate::upload::Upload;
use sluice_core::routing::RequestFacts;
use sluice_core::Operation;
use sluice_types::{
    ChatRequest, CompletionRequest, EmbeddingsRequest, InvalidRequest, MediaKind, MediaRequest,
};

/// The body of one request, read once.
#[derive(Debug)]
pub enum View<'a> {
    /// A chat completion.
    Chat(ChatRequest<'a>),
    /// An embeddings request.
    Embeddings(EmbeddingsRequest<'a>),
    /// A JSON media request: speech, image generation, rerank or moderation.
    Media(MediaRequest<'a>),
    /// A multipart upload (transcription, translation, image edit or variation), spooled.
    Upload(Operation, &'a Upload),
    /// A legacy text completion.
    Completion(CompletionRequest<'a>),
}

impl<'a> View<'a> {
    /// Reads `body` as a request of `op` (an upload operation is read by the server's
    /// spooler instead: [`View::Upload`]).
    pub fn parse(op: Operation, body: &'a [u8]) -> Result<Self, InvalidRequest> {
        let media = |kind| MediaRequest::parse(kind, body).map(Self::Media);
        match op {
            Operation::Chat => Ok(Self::Chat(ChatRequest::parse(body)?)),
            Operation::Embeddings => Ok(Self::Embeddings(EmbeddingsRequest::parse(body)?)),
            Operation::Speech => media(MediaKind::Speech),
            Operation::ImageGeneration => media(MediaKind::ImageGeneration),
            Operation::Rerank => media(MediaKind::Rerank),
            Operation::Moderation => media(MediaKind::Moderation),
            Operation::Completion => Ok(Self::Completion(CompletionRequest::parse(body)?)),
            Operation::Transcription
            | Operation::Translation
            | Operation::ImageEdit
            | Operation::ImageVariation => Err(InvalidRequest::body(
                "this endpoint takes a multipart/form-data upload",
            )),
        }
    }
}

impl View<'_> {
    /// The operation the body asks for.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Chat(_) => Operation::Chat,
            Self::Embeddings(_) => Operation::Embeddings,
            Self::Media(m) => match m.kind {
                MediaKind::Speech => Operation::Speech,
                MediaKind::ImageGeneration => Operation::ImageGeneration,
                MediaKind::Rerank => Operation::Rerank,
                MediaKind::Moderation => Operation::Moderation,
            },
            Self::Upload(op, _) => *op,
            Self::Completion(_) => Operation::Completion,
        }
    }

    /// The `model` the client sent.
    pub fn model(&self) -> &str {
        match self {
            Self::Chat(c) => &c.model,
            Self::Embeddings(e) => &e.model,
            Self::Media(m) => &m.model,
            Self::Upload(_, u) => &u.model,
            Self::Completion(c) => &c.model,
        }
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        match self {
            Self::Chat(c) => c.stream,
            Self::Embeddings(_) => false,
            Self::Media(m) => m.stream,
            Self::Upload(_, u) => u.stream(),
            Self::Completion(c) => c.stream,
        }
    }

    /// Whether a streaming client asked for the usage chunk.
    pub fn include_usage(&self) -> bool {
        match self {
            Self::Chat(c) => c.include_usage,
            Self::Completion(c) => c.include_usage,
            _ => false,
        }
    }

    /// Prompt tokens, estimated from the body.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        match self {
            Self::Chat(c) => c.estimated_prompt_tokens(),
            Self::Embeddings(e) => e.estimated_tokens(),
            Self::Media(m) => m.estimated_tokens(),
            // Audio and images: the upstream counts; the prompt field is text.
            Self::Upload(_, u) => u.field("prompt").map_or(0, |p| p.len() as u64 / 4),
            Self::Completion(c) => c.estimated_prompt_tokens(),
        }
    }

    /// What routing decides on.
    pub fn facts(&self) -> RequestFacts {
        match self {
            Self::Chat(c) => RequestFacts {
                prompt_tokens: c.estimated_prompt_tokens(),
                max_tokens: c.max_tokens,
                has_tools: c.has_tools,
                message_count: c.message_count,
            },
            // The completion budget is OpenAI's default when `max_tokens` is absent.
            Self::Completion(c) => RequestFacts {
                prompt_tokens: c.estimated_prompt_tokens(),
                max_tokens: Some(c.output_cap()),
                has_tools: false,
                message_count: 1,
            },
            Self::Embeddings(_) | Self::Media(_) | Self::Upload(..) => RequestFacts {
                prompt_tokens: self.estimated_prompt_tokens(),
                max_tokens: Some(0),
                has_tools: false,
                message_count: 1,
            },
        }
    }

    /// The body's `user`, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::Chat(c) => c.user.as_deref(),
            Self::Upload(_, u) => u.field("user"),
            Self::Completion(c) => c.user.as_deref(),
            Self::Embeddings(_) | Self::Media(_) => None,
        }
    }
}
