//! Signed thinking in a stream: Anthropic's signature of the reasoning streamed before it
//! (chat `thinking_blocks` deltas, see [`crate::anthropic`]) gathered into whole blocks, for
//! a reasoning item's `encrypted_content` and the stored conversation.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// One block of a `thinking_blocks` delta.
#[derive(Debug, Deserialize)]
pub struct InBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
}

impl InBlock<'_> {
    /// The same block, borrowing this one's text.
    pub fn borrowed(&self) -> InBlock<'_> {
        fn borrowed<'b>(t: &'b Option<Cow<'_, str>>) -> Option<Cow<'b, str>> {
            t.as_deref().map(Cow::Borrowed)
        }
        InBlock {
            kind: Cow::Borrowed(&self.kind),
            signature: borrowed(&self.signature),
            data: borrowed(&self.data),
        }
    }

    /// The same block, owning its text (to be kept past its chunk).
    pub fn into_owned(self) -> InBlock<'static> {
        let owned = |t: Option<Cow<'_, str>>| t.map(|t| Cow::Owned(t.into_owned()));
        InBlock {
            kind: Cow::Owned(self.kind.into_owned()),
            signature: owned(self.signature),
            data: owned(self.data),
        }
    }
}

#[derive(Debug, Serialize)]
struct Block {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
}

/// The signed thinking of one reasoning item, as it streams.
#[derive(Debug, Default)]
pub struct Signed {
    /// Reasoning streamed since the last signature.
    thought: String,
    blocks: Vec<Block>,
}

impl Signed {
    /// A piece of reasoning.
    pub fn thought(&mut self, piece: &str) {
        self.thought.push_str(piece);
    }

    /// A signed block: a signature ends the thinking streamed since the last one.
    pub fn block(&mut self, b: &InBlock<'_>) {
        match (b.kind.as_ref(), &b.signature, &b.data) {
            ("thinking", Some(signature), _) => self.blocks.push(Block {
                kind: "thinking",
                thinking: Some(std::mem::take(&mut self.thought)),
                signature: Some(signature.to_string()),
                data: None,
            }),
            ("redacted_thinking", _, Some(data)) => self.blocks.push(Block {
                kind: "redacted_thinking",
                thinking: None,
                signature: None,
                data: Some(data.to_string()),
            }),
            _ => {}
        }
    }

    /// The blocks gathered (chat `thinking_blocks`, JSON), if any; starts over.
    pub fn take(&mut self) -> Option<Box<RawValue>> {
        self.thought.clear();
        if self.blocks.is_empty() {
            return None;
        }
        let blocks = std::mem::take(&mut self.blocks);
        serde_json::value::to_raw_value(&blocks).ok()
    }
}
