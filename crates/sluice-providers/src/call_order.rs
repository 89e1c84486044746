//! The tool calls of a chat stream, put in the order that Anthropic's and the Responses
//! API's streams need: one call at a time, each begun, given its arguments and ended before
//! the next begins.
//!
//! A chat stream tells its calls apart by `index`, and nothing in the format stops an
//! upstream from going back to a call it left (some OpenAI-compatible servers start every
//! parallel call before streaming their arguments). A call is therefore ended only once
//! its arguments so far are a complete JSON value; a call that appears while the open one's
//! arguments are incomplete waits, its pieces kept, and begins (with what it has) as soon as
//! the open one is complete. [`CallOrder::flush`] ends every call (the stream's end, or text
//! that follows the calls).
//!
//! A call whose arguments never open an object or array (none at all, from a server that
//! streams a function without parameters as `""`) is never complete: the calls after it wait
//! for the stream's end, and go out then, in order. Late, never lost.

use serde::Deserialize;
use std::borrow::Cow;

/// A chat chunk's `delta.tool_calls[]` entry, as read by the converters.
#[derive(Deserialize)]
pub(crate) struct CallDelta<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<CallFunction<'a>>,
}

#[derive(Deserialize)]
struct CallFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl CallDelta<'_> {
    /// This entry as a piece of its call.
    pub(crate) fn piece(&self) -> Delta<'_> {
        let function = self.function.as_ref();
        Delta {
            call: self.index.unwrap_or(0),
            id: self.id.as_deref(),
            name: function.and_then(|f| f.name.as_deref()),
            args: function.and_then(|f| f.arguments.as_deref()).unwrap_or(""),
        }
    }
}

/// One piece of a chat stream's tool call, as its chunk had it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delta<'a> {
    /// The call's `index`.
    pub call: u64,
    /// Its `id`, on the first piece.
    pub id: Option<&'a str>,
    /// Its function's name, on the first piece.
    pub name: Option<&'a str>,
    /// A piece of its arguments (may be empty).
    pub args: &'a str,
}

/// What a converter writes, in this order for each call: `Begin`, any `Args`, `End`.
#[derive(Debug, PartialEq)]
pub(crate) enum Step<'a> {
    /// A call begins.
    Begin {
        call: u64,
        id: Option<Cow<'a, str>>,
        name: Option<Cow<'a, str>>,
    },
    /// A piece of the open call's arguments.
    Args { call: u64, piece: Cow<'a, str> },
    /// The open call is complete.
    End { call: u64 },
}

/// Where the open call's arguments stand: inside how many brackets, inside a string or not.
#[derive(Debug, Default, Clone, Copy)]
struct JsonEnd {
    depth: u32,
    in_string: bool,
    escape: bool,
    opened: bool,
}

impl JsonEnd {
    fn feed(&mut self, piece: &str) {
        for b in piece.bytes() {
            if self.in_string {
                match (self.escape, b) {
                    (true, _) => self.escape = false,
                    (false, b'\\') => self.escape = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.opened = true;
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// The arguments are an object or array closed: nothing valid can follow but blanks.
    fn complete(&self) -> bool {
        self.opened && self.depth == 0 && !self.in_string
    }
}

/// A call that appeared while another was open.
#[derive(Debug)]
struct Waiting {
    call: u64,
    id: Option<String>,
    name: Option<String>,
    args: String,
}

/// The calls of one choice of a stream: the open one, those waiting, those ended.
#[derive(Debug, Default)]
pub(crate) struct CallOrder {
    open: Option<(u64, JsonEnd)>,
    waiting: Vec<Waiting>,
    ended: Vec<u64>,
}

impl CallOrder {
    /// Takes one piece of a call; `emit` receives what may be written now.
    pub(crate) fn on_delta<'a>(&mut self, d: Delta<'a>, emit: &mut impl FnMut(Step<'a>)) {
        if let Some((call, end)) = &mut self.open {
            if *call == d.call {
                if !d.args.is_empty() {
                    end.feed(d.args);
                    let call = *call;
                    emit(Step::Args {
                        call,
                        piece: Cow::Borrowed(d.args),
                    });
                }
                self.promote(emit);
                return;
            }
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| w.call == d.call) {
            w.id = w.id.take().or(d.id.map(str::to_owned));
            w.name = w.name.take().or(d.name.map(str::to_owned));
            w.args.push_str(d.args);
            return;
        }
        if self.ended.contains(&d.call) {
            // A call taken up again after its end: complete JSON followed by more (blanks
            // aside, the upstream's own mistake), or a call that text ended before its
            // arguments were complete. Its pieces still go out, after its end (the one case
            // left where a converter writes a piece of a closed block), rather than be
            // dropped.
            if !d.args.trim().is_empty() {
                emit(Step::Args {
                    call: d.call,
                    piece: Cow::Borrowed(d.args),
                });
            }
            return;
        }
        if self.open.as_ref().is_some_and(|(_, end)| !end.complete()) {
            self.waiting.push(Waiting {
                call: d.call,
                id: d.id.map(str::to_owned),
                name: d.name.map(str::to_owned),
                args: d.args.to_owned(),
            });
            return;
        }
        self.end_open(emit);
        self.begin(
            d.call,
            d.id.map(Cow::Borrowed),
            d.name.map(Cow::Borrowed),
            Cow::Borrowed(d.args),
            emit,
        );
    }

    /// Ends every call: the open one, then each waiting one in turn.
    pub(crate) fn flush<'a>(&mut self, emit: &mut impl FnMut(Step<'a>)) {
        self.end_open(emit);
        for w in std::mem::take(&mut self.waiting) {
            let (id, name) = (w.id.map(Cow::Owned), w.name.map(Cow::Owned));
            self.begin(w.call, id, name, Cow::Owned(w.args), emit);
            self.end_open(emit);
        }
    }

    /// Whether a call is open or waiting.
    pub(crate) fn is_open(&self) -> bool {
        self.open.is_some() || !self.waiting.is_empty()
    }

    fn begin<'a>(
        &mut self,
        call: u64,
        id: Option<Cow<'a, str>>,
        name: Option<Cow<'a, str>>,
        args: Cow<'a, str>,
        emit: &mut impl FnMut(Step<'a>),
    ) {
        emit(Step::Begin { call, id, name });
        let mut end = JsonEnd::default();
        if !args.is_empty() {
            end.feed(&args);
            emit(Step::Args { call, piece: args });
        }
        self.open = Some((call, end));
    }

    fn end_open<'a>(&mut self, emit: &mut impl FnMut(Step<'a>)) {
        if let Some((call, _)) = self.open.take() {
            emit(Step::End { call });
            self.ended.push(call);
        }
    }

    /// While the open call is complete and another waits: the next one begins.
    fn promote<'a>(&mut self, emit: &mut impl FnMut(Step<'a>)) {
        while self.open.as_ref().is_some_and(|(_, end)| end.complete()) && !self.waiting.is_empty()
        {
            self.end_open(emit);
            let w = self.waiting.remove(0);
            let (id, name) = (w.id.map(Cow::Owned), w.name.map(Cow::Owned));
            self.begin(w.call, id, name, Cow::Owned(w.args), emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(deltas: &[(u64, Option<&str>, &str)]) -> Vec<String> {
        let mut order = CallOrder::default();
        let mut steps = Vec::new();
        let mut emit = |s: Step<'_>| {
            steps.push(match s {
                Step::Begin { call, name, .. } => {
                    format!("begin {call} {}", name.unwrap_or_default())
                }
                Step::Args { call, piece } => format!("args {call} {piece}"),
                Step::End { call } => format!("end {call}"),
            })
        };
        for &(call, name, args) in deltas {
            let d = Delta {
                call,
                id: name.map(|_| "id"),
                name,
                args,
            };
            order.on_delta(d, &mut emit);
        }
        order.flush(&mut emit);
        steps
    }

    /// Every call's steps are contiguous: begin, args, end, and nothing of it after its end.
    fn contiguous(steps: &[String]) -> bool {
        let mut ended = Vec::new();
        let mut open: Option<String> = None;
        for s in steps {
            let mut words = s.split(' ');
            let (kind, call) = (words.next().unwrap(), words.next().unwrap().to_string());
            match kind {
                "begin" if open.is_none() && !ended.contains(&call) => open = Some(call),
                "args" if open.as_ref() == Some(&call) => {}
                "end" if open.as_ref() == Some(&call) => {
                    ended.push(call);
                    open = None;
                }
                _ => return false,
            }
        }
        open.is_none()
    }

    #[test]
    fn calls_streamed_one_after_another_go_out_as_they_come() {
        let steps = run(&[
            (0, Some("a"), ""),
            (0, None, "{\"x\":"),
            (0, None, "1}"),
            (1, Some("b"), "{}"),
        ]);
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 {\"x\":",
                "args 0 1}",
                "end 0",
                "begin 1 b",
                "args 1 {}",
                "end 1"
            ]
        );
    }

    #[test]
    fn a_call_that_starts_before_the_open_one_is_complete_waits_for_it() {
        // Both calls started first, then their arguments, interleaved.
        let steps = run(&[
            (0, Some("a"), ""),
            (1, Some("b"), ""),
            (0, None, "{\"q\":"),
            (1, None, "{\"r\":"),
            (0, None, "\"}{\"}"),
            (1, None, "2}"),
        ]);
        assert!(contiguous(&steps), "{steps:?}");
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 {\"q\":",
                "args 0 \"}{\"}",
                "end 0",
                "begin 1 b",
                "args 1 {\"r\":",
                "args 1 2}",
                "end 1"
            ]
        );
    }

    #[test]
    fn calls_never_completed_go_out_in_turn_at_the_end() {
        let steps = run(&[
            (0, Some("a"), "{\"cut"),
            (1, Some("b"), "{"),
            (2, Some("c"), "{}"),
            (1, None, "\"y\": ["),
        ]);
        assert!(contiguous(&steps), "{steps:?}");
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 {\"cut",
                "end 0",
                "begin 1 b",
                "args 1 {\"y\": [",
                "end 1",
                "begin 2 c",
                "args 2 {}",
                "end 2"
            ]
        );
    }

    #[test]
    fn a_call_taken_up_after_its_end_still_has_its_pieces_go_out() {
        let mut order = CallOrder::default();
        let mut steps = Vec::new();
        let mut emit = |s: Step<'_>| steps.push(format!("{s:?}"));
        let piece = |call, args| Delta {
            call,
            id: None,
            name: None,
            args,
        };
        order.on_delta(piece(0, "{\"a\":"), &mut emit);
        // Text ends the calls before the arguments are complete.
        order.flush(&mut emit);
        order.on_delta(piece(0, "1}"), &mut emit);
        order.on_delta(piece(0, "  "), &mut emit);
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert!(
            steps[2].starts_with("End") && steps[3].contains("1}"),
            "{steps:?}"
        );
    }

    #[test]
    fn brackets_and_escapes_inside_strings_do_not_count() {
        let mut end = JsonEnd::default();
        end.feed(r#"{"a": "}\"]\\"#);
        assert!(!end.complete());
        end.feed(r#"", "b": [1, {"c": "{"}]"#);
        assert!(!end.complete());
        end.feed("}");
        assert!(end.complete());
        assert!(!JsonEnd::default().complete());
    }
}
