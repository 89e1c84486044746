//! What a stream's output validation gathers as its chunks pass: each choice's text
//! content, and its tool calls (name, and arguments put together from their pieces), by
//! the choice's and the call's `index`, so that the whole of every choice is checked when
//! the stream ends ([`super::guard_json::Validation::check_gathered`]); and [`Pieces`], where
//! a stream's chunks carry their text.

use super::guard_json::{in_choice, Call, Failure, Validation};
use serde_json::Value;
use std::borrow::Cow;

/// Where a stream's events carry their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pieces {
    /// Chat chunks: each choice's `delta.content`.
    Chat,
    /// Legacy text completions: each choice's `text`.
    Text,
}

impl Pieces {
    /// The pieces of an `op` request's stream.
    pub fn of(op: sluice_core::Operation) -> Self {
        match op {
            sluice_core::Operation::Completion => Self::Text,
            _ => Self::Chat,
        }
    }

    /// The text's key, and the object in `entry` (one of a chunk's `choices`) that holds it.
    pub fn holder_of(self, entry: &Value) -> (&Value, &'static str) {
        match self {
            Self::Chat => (&entry["delta"], "content"),
            Self::Text => (entry, "text"),
        }
    }

    /// Sets the text of a choice `entry`.
    pub fn set(self, entry: &mut Value, text: String) {
        match self {
            Self::Chat => entry["delta"]["content"] = Value::String(text),
            Self::Text => entry["text"] = Value::String(text),
        }
    }
}

/// The choices of a stream so far.
#[derive(Debug, Default)]
pub struct Gathered {
    choices: Vec<Choice>,
}

#[derive(Debug)]
struct Choice {
    index: u64,
    /// Its content, when any delta carried some.
    content: Option<String>,
    calls: Vec<GatheredCall>,
}

#[derive(Debug)]
struct GatheredCall {
    index: u64,
    name: String,
    /// A function call's arguments so far; `None` for a custom tool's call.
    arguments: Option<String>,
}

impl Gathered {
    /// Takes what `chunk` (a chat or text completion chunk) adds to its choices.
    pub fn take(&mut self, chunk: &Value, pieces: Pieces) {
        let Some(entries) = chunk["choices"].as_array() else {
            return;
        };
        for (position, entry) in entries.iter().enumerate() {
            let index = entry["index"].as_u64().unwrap_or(position as u64);
            let choice = self.choice(index);
            let (holder, key) = pieces.holder_of(entry);
            if let Some(text) = holder[key].as_str() {
                choice
                    .content
                    .get_or_insert_with(String::new)
                    .push_str(text);
            }
            let deltas = entry["delta"]["tool_calls"].as_array();
            for (k, delta) in deltas
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                choice.take_call(delta, k as u64);
            }
        }
    }

    fn choice(&mut self, index: u64) -> &mut Choice {
        let at = match self.choices.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                self.choices.push(Choice {
                    index,
                    content: None,
                    calls: Vec::new(),
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[at]
    }
}

impl Choice {
    /// Takes a tool call delta: its first carries the name, later ones pieces of the
    /// arguments (`position`: where it is in its chunk, when it has no `index`).
    fn take_call(&mut self, delta: &Value, position: u64) {
        let index = delta["index"].as_u64().unwrap_or(position);
        let at = match self.calls.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                self.calls.push(GatheredCall {
                    index,
                    name: String::new(),
                    arguments: None,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[at];
        let (spec, piece) = match delta.get("custom") {
            Some(custom) => (custom, None),
            None => (&delta["function"], delta["function"]["arguments"].as_str()),
        };
        if let Some(name) = spec["name"].as_str() {
            if call.name.is_empty() {
                call.name = name.to_string();
            }
        }
        if delta.get("custom").is_none() {
            call.arguments
                .get_or_insert_with(String::new)
                .push_str(piece.unwrap_or_default());
        }
    }
}

impl Validation {
    /// Checks every choice a stream gathered (in the order of their indexes).
    pub fn check_gathered(&self, gathered: &Gathered) -> Result<(), Failure> {
        let mut choices: Vec<&Choice> = gathered.choices.iter().collect();
        choices.sort_by_key(|c| c.index);
        for choice in &choices {
            let mut calls: Vec<&GatheredCall> = choice.calls.iter().collect();
            calls.sort_by_key(|c| c.index);
            let calls: Vec<Call<'_>> = calls
                .iter()
                .map(|c| Call {
                    name: &c.name,
                    arguments: c.arguments.as_deref().map(Cow::Borrowed),
                })
                .collect();
            self.check_choice(choice.content.as_deref(), &calls)
                .map_err(|f| in_choice(f, choice.index, choices.len()))?;
        }
        Ok(())
    }
}
