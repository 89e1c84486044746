//! Tool calls in a model's own words: which tool format a chat template has, and what a
//! request that lets the model call tools asks of the generation ([`ToolCalls`]).
//!
//! A call is a JSON object `{"name": …, "<arguments key>": {…}}`. The formats:
//!
//! * [`ToolFormat::Hermes`] (Qwen2.5, Hermes and templates like them, recognised by
//!   `<tool_call>` in the template): the template renders `tools`; the model writes
//!   `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`, several in one turn.
//! * [`ToolFormat::Llama3`] (Llama 3.1 and later, recognised by `<|python_tag|>` or
//!   `ipython` with `tools` in the template): the template renders `tools`; the model answers
//!   with the bare object `{"name": …, "parameters": …}` (one call).
//! * [`ToolFormat::Fallback`] (any other template): the tools are described in a system
//!   message (the caller's fallback prompt) which asks for the Hermes form.

use std::sync::Arc;

use crate::constrain::Grammar;

/// A chat template's tool format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name": …, "arguments": …}</tool_call>`, rendered by the template.
    Hermes,
    /// `{"name": …, "parameters": …}` as the whole answer, rendered by the template.
    Llama3,
    /// The template has no tool format: the Hermes form, asked for by a system message.
    Fallback,
}

// === impl ToolFormat ===

impl ToolFormat {
    /// The format of the chat template whose Jinja source is `source`.
    pub fn of_template(source: &str) -> Self {
        if source.contains("<tool_call>") {
            Self::Hermes
        } else if source.contains("<|python_tag|>")
            || (source.contains("ipython") && source.contains("tools"))
        {
            Self::Llama3
        } else {
            Self::Fallback
        }
    }

    /// Whether the template itself renders `tools`, calls and results.
    pub fn renders_tools(self) -> bool {
        !matches!(self, Self::Fallback)
    }

    /// The key of a call's arguments.
    pub fn arguments_key(self) -> &'static str {
        match self {
            Self::Llama3 => "parameters",
            Self::Hermes | Self::Fallback => "arguments",
        }
    }

    /// How the model starts a call.
    pub fn start(self) -> CallStart {
        match self {
            Self::Llama3 => CallStart::Leading("{"),
            Self::Hermes | Self::Fallback => CallStart::Marker {
                open: "<tool_call>",
                close: "</tool_call>",
            },
        }
    }

    /// What a forced call's answer begins with, before its JSON: the call marker (Hermes; put
    /// in the prompt as [`crate::ChatRequest::answer_prefix`]), or nothing (Llama 3's call is
    /// the whole answer).
    pub fn forced_prefix(self) -> Option<&'static str> {
        match self {
            Self::Hermes => Some("<tool_call>\n"),
            Self::Llama3 | Self::Fallback => None,
        }
    }

    /// Whether one turn may hold several calls.
    pub fn parallel(self) -> bool {
        !matches!(self, Self::Llama3)
    }
}

/// How a call begins in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStart {
    /// After the marker `open`, anywhere in the answer; the call's JSON follows it, then
    /// `close` (dropped).
    Marker {
        /// Text that opens a call (not part of it).
        open: &'static str,
        /// Text that closes a call (not part of it).
        close: &'static str,
    },
    /// The answer starts (after whitespace) with this text, which is the call's first byte.
    Leading(&'static str),
}

/// What a request that lets the model call tools asks of the generation: the output is
/// watched for the start of a call; from there the call is constrained to `grammar` (one
/// of the tools' `{"name", arguments}` objects) and streamed as
/// [`crate::GenerationEvent::Call`], not as text.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCalls {
    /// How a call starts.
    pub start: CallStart,
    /// The calls' grammar.
    pub grammar: Arc<Grammar>,
    /// Several calls in one turn (else the answer ends with the first call).
    pub parallel: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognised_by_their_markers() {
        assert_eq!(
            ToolFormat::of_template("{% if tools %}<tools>{% endif %}<tool_call>"),
            ToolFormat::Hermes
        );
        assert_eq!(
            ToolFormat::of_template("{% if tools %}{{ '<|python_tag|>' }}{% endif %}"),
            ToolFormat::Llama3
        );
        assert_eq!(
            ToolFormat::of_template(crate::template::DEFAULT_CHAT_TEMPLATE),
            ToolFormat::Fallback
        );
    }
}
