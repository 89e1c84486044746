//! Raw JSON the translations share: tool-call arguments as a JSON value, embedding
//! vectors compacted, and the OpenAI embeddings request as the native embedding APIs read it.

use crate::chunks::compact_json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Tool-call arguments as raw JSON (checked, not rebuilt); `{}` when empty.
pub(crate) fn raw_arguments(arguments: &str) -> Result<&RawValue, serde_json::Error> {
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    serde_json::from_str(text)
}

/// An embedding vector as compacted raw JSON; `Err` unless it is a JSON array.
pub(crate) fn raw_array(raw: &RawValue) -> Result<Box<RawValue>, String> {
    let text = compact_json(raw.get());
    if !text.starts_with('[') {
        return Err("an embedding is not a list of numbers".into());
    }
    RawValue::from_string(text.into_owned()).map_err(|e| e.to_string())
}

/// An OpenAI embeddings request, as far as the native embedding APIs go.
#[derive(Deserialize)]
pub(crate) struct EmbedRequest<'a> {
    #[serde(borrow)]
    pub input: &'a RawValue,
    #[serde(default)]
    pub dimensions: Option<u64>,
    #[serde(default, borrow)]
    pub keep_alive: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub x_fake: Option<&'a RawValue>,
}

/// `input` of an embeddings request, when it is text.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum TextInput<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl<'a> EmbedRequest<'a> {
    /// `input` when it is a string or a list of strings.
    pub(crate) fn texts(&self) -> Option<TextInput<'a>> {
        serde_json::from_str(self.input.get()).ok()
    }
}
