//! What a stored response is ([`StoredResponse`]): its id and owner, its times, and what
//! is kept of it ([`Kept`]): its [`Content`], or only the reason it is withheld.

use crate::files::Owner;
use bytes::Bytes;

/// Expired responses a write purges, at most.
pub const PURGE_BATCH: u64 = 1000;

/// What is kept of a response made with `store: true`: the three JSON documents the
/// Responses API's endpoints answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The `response` object, as it was answered.
    pub response: Bytes,
    /// Its input items (the conversation's earlier items first), a JSON array, each item
    /// with its `id`.
    pub input_items: Bytes,
    /// The chat messages that continue it (`previous_response_id`): the conversation
    /// before it, its input and its answer, a JSON array.
    pub conversation: Bytes,
}

impl Content {
    /// Its size in bytes.
    pub fn bytes(&self) -> u64 {
        (self.response.len() + self.input_items.len() + self.conversation.len()) as u64
    }
}

/// Why a known response has no content: it can be neither read nor continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// It was made with `store: false`.
    NotStored,
    /// It was larger than the store's `max_bytes`.
    TooLarge,
}

impl Withheld {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStored => "store_false",
            Self::TooLarge => "too_large",
        }
    }

    /// The reason stored as `text` (anything unknown reads as not stored).
    pub fn parse(text: &str) -> Self {
        match text {
            "too_large" => Self::TooLarge,
            _ => Self::NotStored,
        }
    }
}

/// What is kept of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Its content.
    Content(Content),
    /// Only that it was made, and why nothing more is kept.
    Withheld(Withheld),
}

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// `resp_...`.
    pub id: String,
    /// Who may see it.
    pub owner: Owner,
    /// When it was made, Unix seconds.
    pub created_at: u64,
    /// When it expires, Unix seconds: from then on it is absent.
    pub expires_at: u64,
    /// What is kept.
    pub kept: Kept,
}

/// A response to store: its content, or `None` for `store: false`. The store gives it its
/// expiry and checks its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewResponse {
    /// `resp_...`.
    pub id: String,
    /// Who made it.
    pub owner: Owner,
    /// When, Unix seconds.
    pub created_at: u64,
    /// Its content; `None`: made with `store: false`.
    pub content: Option<Content>,
}

/// Whether `id` can be a response id: `resp_`, then 1 to 128 letters, digits, `-` or `_`.
pub fn is_valid_id(id: &str) -> bool {
    id.strip_prefix("resp_").is_some_and(|rest| {
        (1..=128).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}
