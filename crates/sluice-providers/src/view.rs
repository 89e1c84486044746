//! A client's request body, read through the light view of its operation: the fields
//! routing, limits, caching and the adapters act on, borrowed from the body (see
//! `sluice_types`). Everything else passes through untouched.

use sluice_core::routing::RequestFacts;
use sluice_core::Operation;
use sluice_types::{ChatRequest, EmbeddingsRequest, InvalidRequest};

/// The body of one request, read once.
#[derive(Debug)]
pub enum View<'a> {
    /// A chat completion.
    Chat(ChatRequest<'a>),
    /// An embeddings request.
    Embeddings(EmbeddingsRequest<'a>),
}

impl<'a> View<'a> {
    /// Reads `body` as a request of `op`.
    pub fn parse(op: Operation, body: &'a [u8]) -> Result<Self, InvalidRequest> {
        Ok(match op {
            Operation::Chat => Self::Chat(ChatRequest::parse(body)?),
            Operation::Embeddings => Self::Embeddings(EmbeddingsRequest::parse(body)?),
        })
    }
}

impl View<'_> {
    /// The operation the body asks for.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Chat(_) => Operation::Chat,
            Self::Embeddings(_) => Operation::Embeddings,
        }
    }

    /// The `model` the client sent.
    pub fn model(&self) -> &str {
        match self {
            Self::Chat(c) => &c.model,
            Self::Embeddings(e) => &e.model,
        }
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        matches!(self, Self::Chat(c) if c.stream)
    }

    /// Whether a streaming client asked for the usage chunk.
    pub fn include_usage(&self) -> bool {
        matches!(self, Self::Chat(c) if c.include_usage)
    }

    /// Prompt tokens, estimated from the body.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        match self {
            Self::Chat(c) => c.estimated_prompt_tokens(),
            Self::Embeddings(e) => e.estimated_tokens(),
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
            Self::Embeddings(e) => RequestFacts {
                prompt_tokens: e.estimated_tokens(),
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
            Self::Embeddings(_) => None,
        }
    }
}
