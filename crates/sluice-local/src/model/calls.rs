//! [`CallWatch`]: the text of a generation that may call tools, split into content and calls.
//!
//! Text is held back while it may be the start of a call (a prefix of the marker, or leading
//! whitespace when a call is the whole answer); once a call starts, what follows its marker
//! is the call's, and the sequence constrains it to the tools' grammar. After a call (when
//! several are allowed) only further calls count: the text between them (the closing marker,
//! newlines) is dropped.

use std::sync::Arc;

use crate::constrain::{Constraint, TokenTrie};
use crate::tools::{CallStart, ToolCalls};

/// Where the watch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content; a call may start.
    Text,
    /// Inside a call.
    Call,
    /// After a call: only another call counts.
    After,
    /// No call can start any more: all text is content.
    Off,
}

/// What one piece of text turned out to be.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Routed {
    /// Content to emit.
    pub(super) content: String,
    /// A call started: its first text (after the marker).
    pub(super) call: Option<String>,
}

/// A generation's tool-call watch.
pub(super) struct CallWatch {
    spec: ToolCalls,
    trie: Arc<TokenTrie>,
    state: State,
    /// Text that may still start a call.
    held: String,
    /// Whether content was emitted (a leading call must come first).
    spoke: bool,
    /// Each call's text so far.
    pub(super) calls: Vec<String>,
}

// === impl CallWatch ===

impl CallWatch {
    pub(super) fn new(spec: ToolCalls, trie: Arc<TokenTrie>) -> Self {
        Self {
            spec,
            trie,
            state: State::Text,
            held: String::new(),
            spoke: false,
            calls: Vec::new(),
        }
    }

    /// Whether a call is being generated.
    pub(super) fn in_call(&self) -> bool {
        self.state == State::Call
    }

    /// Routes text generated outside a call.
    pub(super) fn push_text(&mut self, text: &str) -> Routed {
        self.held.push_str(text);
        let mut routed = Routed::default();
        match (self.state, self.spec.start) {
            (State::Off, _) => routed.content = std::mem::take(&mut self.held),
            (State::Call, _) => {}
            (State::Text | State::After, CallStart::Marker { open, .. }) => {
                if let Some(at) = self.held.find(open) {
                    let rest = self.held.split_off(at + open.len());
                    self.held.truncate(at);
                    if self.state == State::Text {
                        routed.content = std::mem::take(&mut self.held);
                    }
                    self.held.clear();
                    routed.call = Some(rest);
                } else {
                    let keep = held_prefix(&self.held, open);
                    let tail = self.held.split_off(self.held.len() - keep);
                    let before = std::mem::replace(&mut self.held, tail);
                    if self.state == State::Text {
                        routed.content = before;
                    }
                }
            }
            (State::Text | State::After, CallStart::Leading(lead)) => {
                let trimmed = self.held.trim_start();
                if trimmed.is_empty() || (lead.starts_with(trimmed) && trimmed != lead) {
                    // Undecided yet (the whole lead starts the call: the token after it is
                    // the call's, constrained).
                } else if trimmed.starts_with(lead) && !self.spoke && self.state == State::Text {
                    routed.call = Some(trimmed.to_owned());
                    self.held.clear();
                } else {
                    self.state = State::Off;
                    routed.content = std::mem::take(&mut self.held);
                }
            }
        }
        if !routed.content.is_empty() {
            self.spoke = true;
        }
        if routed.call.is_some() {
            self.state = State::Call;
            self.calls.push(String::new());
        }
        routed
    }

    /// A constraint for a call starting with `first`, or `None` if `first` cannot begin one
    /// (the call is then given up: the marker and `first` become content and no call can
    /// start any more).
    pub(super) fn constraint(&mut self, first: &str) -> Result<Constraint, String> {
        let mut constraint =
            Constraint::new(Arc::clone(&self.spec.grammar), Arc::clone(&self.trie));
        if constraint.advance(first.as_bytes()) {
            Ok(constraint)
        } else {
            self.calls.pop();
            self.state = State::Off;
            let marker = match self.spec.start {
                CallStart::Marker { open, .. } => open,
                CallStart::Leading(_) => "",
            };
            Err(format!("{marker}{first}"))
        }
    }

    /// Text of the call being generated.
    pub(super) fn push_call(&mut self, text: &str) -> usize {
        let index = self.calls.len() - 1;
        self.calls[index].push_str(text);
        index
    }

    /// The call being generated is complete.
    pub(super) fn end_call(&mut self) {
        self.state = if self.spec.parallel {
            State::After
        } else {
            State::Off
        };
    }

    /// Whether the answer is over once the current call ends.
    pub(super) fn ends_after_call(&self) -> bool {
        !self.spec.parallel
    }

    /// At the end: text still held that is content.
    pub(super) fn finish(&mut self) -> String {
        match self.state {
            State::Text | State::Off => std::mem::take(&mut self.held),
            State::Call | State::After => String::new(),
        }
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `marker`.
fn held_prefix(text: &str, marker: &str) -> usize {
    (1..marker.len())
        .rev()
        .find(|&k| marker.is_char_boundary(k) && text.ends_with(&marker[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constrain::Grammar;
    use crate::tools::ToolFormat;

    fn watch(format: ToolFormat, parallel: bool) -> CallWatch {
        let bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let trie = TokenTrie::new(bytes.len(), |id| bytes[id as usize].as_slice(), &[]);
        let schema = serde_json::json!({"type": "object", "properties": {"name": {"const": "f"}}});
        let spec = ToolCalls {
            start: format.start(),
            grammar: Arc::new(Grammar::from_json_schema(&schema).expect("compiles")),
            parallel,
        };
        CallWatch::new(spec, Arc::new(trie))
    }

    #[test]
    fn a_marker_splits_text_from_a_call_and_later_text_is_dropped() {
        let mut w = watch(ToolFormat::Hermes, true);
        assert_eq!(w.push_text("Sure <tool").content, "Sure ");
        let routed = w.push_text("_call>\n{\"na");
        assert_eq!(
            (routed.content.as_str(), routed.call.as_deref()),
            ("", Some("\n{\"na"))
        );
        assert!(w.in_call());
        assert!(w.constraint("\n{\"na").is_ok());
        w.end_call();
        // The closing marker and what follows are dropped; another call may start.
        assert_eq!(w.push_text("\n</tool_call>\nok").content, "");
        assert_eq!(w.push_text("<tool_call>{").call.as_deref(), Some("{"));
        assert_eq!(w.finish(), "");
    }

    #[test]
    fn a_leading_call_must_open_the_answer() {
        let mut w = watch(ToolFormat::Llama3, false);
        assert_eq!(w.push_text("  ").content, "");
        assert_eq!(w.push_text("{\"name").call.as_deref(), Some("{\"name"));
        // The lead alone starts the call: what follows it is constrained.
        let mut lead = watch(ToolFormat::Llama3, false);
        assert_eq!(lead.push_text(" {").call.as_deref(), Some("{"));
        assert!(lead.in_call());
        let mut text = watch(ToolFormat::Llama3, false);
        assert_eq!(text.push_text(" Hi {").content, " Hi {");
        assert!(!text.in_call());
        // A start that cannot be a call becomes text and ends the watch.
        let mut bad = watch(ToolFormat::Hermes, true);
        assert!(bad.push_text("<tool_call>]").call.is_some());
        assert_eq!(bad.constraint("]").err().as_deref(), Some("<tool_call>]"));
        assert_eq!(bad.push_text("<tool_call>").content, "<tool_call>");
    }

    #[test]
    fn held_prefix_finds_a_marker_start() {
        assert_eq!(held_prefix("hello <tool", "<tool_call>"), 5);
        assert_eq!(held_prefix("hello", "<tool_call>"), 0);
        assert_eq!(held_prefix("a<", "<tool_call>"), 1);
    }
}
