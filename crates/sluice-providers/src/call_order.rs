//! The tool calls of a chat stream, put in the order that Anthropic's and the Responses
//! API's streams need: one call at a time, each begun, given its arguments and ended before
//! anything else is written, and nothing of a call written after its end.
//!
//! A chat stream tells its calls apart by `index`, and nothing in the format stops an
//! upstream from going back to a call it left (some OpenAI-compatible servers start every
//! parallel call before streaming their arguments, some interleave the arguments). So a
//! call's end is held until the call is finished, which the stream shows in one of three
//! ways:
//! - its choice's `finish_reason` arrives, or the stream ends ([`CallOrder::flush`]);
//! - something else arrives (another call's piece, or what the converter holds back with
//!   [`CallOrder::on_other`]: text, reasoning) while the call's arguments stand where they
//!   could be whole: a complete JSON object or array, or arguments that never open one
//!   (a bare value, or none at all: a function without parameters streamed as `""`);
//! - except that a call with no arguments yet is not ended by another call's bare start
//!   (an `id` and a name, no arguments): that is how servers that start every call first
//!   begin, and the first call's arguments come next.
//!
//! A call whose arguments are an unclosed object or array is never ended by anything but the
//! finish: whatever arrives meanwhile is held, in arrival order, and goes out once the call
//! ends: each held call begun in turn with the arguments it gathered (and then held to the
//! same rule), held text between them. A call's arguments are never cut or reordered, and a
//! call complete when the upstream moves on is ended at once.
//!
//! Calls are told apart by `index` and `id` together: some servers (Ollama, SGLang) give
//! every call `index: 0` and a new `id`, so a piece whose `id` differs from the one its
//! `index` last had begins a new call, when it also names a function and the index's last
//! call could be finished (ended, or its arguments stand where they could be whole) or named
//! another function. Other servers change the `id` in the middle of one call (Poolside's
//! later pieces carry a second id; some vLLM versions put a fresh id and the name on every
//! piece): such a piece, nameless or arriving while the arguments are still open, belongs to
//! the call its `index` last had, as do pieces without an `id`. The steps name calls by a key
//! of their own: the `index` for the first call of an index, a key past every `index` for
//! the later ones.
//!
//! A piece of a call that arrives after its end is not written: it is the upstream going
//! back to a call it had left where the call could be whole, or writing after its
//! `finish_reason`, which no documented chat stream does; writing it after the block's
//! stop would break every strict client (Anthropic's SDKs, OpenAI's agents SDK), and past a
//! complete JSON value nothing more could be valid arguments anyway.

use serde::Deserialize;
use std::borrow::Cow;
use std::collections::VecDeque;

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

/// What a converter writes. For each call `Begin`, any `Args`, `End`, together; `Other`, what
/// the converter held back with [`CallOrder::on_other`], only while no call is open.
#[derive(Debug, PartialEq)]
pub(crate) enum Step<'a, T> {
    /// A call begins.
    Begin {
        call: u64,
        id: Option<Cow<'a, str>>,
        name: Option<Cow<'a, str>>,
    },
    /// A piece of the open call's arguments.
    Args { call: u64, piece: Cow<'a, str> },
    /// The open call is finished.
    End { call: u64 },
    /// Something held back while a call was open, in its turn.
    Other(T),
}

/// Where a call's arguments stand: inside how many brackets, inside a string or not, and
/// the first byte that is not a blank.
#[derive(Debug, Default, Clone, Copy)]
struct JsonEnd {
    depth: u32,
    in_string: bool,
    escape: bool,
    first: Option<u8>,
}

/// What a call's arguments so far say about whether it could be finished.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stand {
    /// No arguments yet (blanks aside).
    Empty,
    /// An object or array not closed yet: more must come.
    Inside,
    /// An object or array closed: nothing valid can follow but blanks.
    Complete,
    /// Something that never opens an object or array (never valid arguments).
    Bare,
}

/// What arrives while a call is open, besides a piece of that call.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// A piece of another call, with arguments (`true`) or only its start.
    Call { args: bool },
    /// Something held back by the converter.
    Other,
}

impl Stand {
    /// Whether the upstream has moved on from a call that stands so, given what came next.
    fn ended_by(self, next: Next) -> bool {
        match self {
            Self::Complete | Self::Bare => true,
            Self::Inside => false,
            // Servers that start every call first send their starts before any arguments.
            Self::Empty => !matches!(next, Next::Call { args: false }),
        }
    }
}

impl JsonEnd {
    fn feed(&mut self, piece: &str) {
        for b in piece.bytes() {
            if self.first.is_none() {
                if b.is_ascii_whitespace() {
                    continue;
                }
                self.first = Some(b);
            }
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
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    fn stand(&self) -> Stand {
        match self.first {
            None => Stand::Empty,
            Some(b'{' | b'[') if self.depth == 0 && !self.in_string => Stand::Complete,
            Some(b'{' | b'[') => Stand::Inside,
            Some(_) => Stand::Bare,
        }
    }
}

/// A call that appeared while another was open, with the pieces it has had.
#[derive(Debug)]
struct Waiting {
    call: u64,
    id: Option<String>,
    name: Option<String>,
    args: String,
}

/// What arrived while a call was open, in arrival order.
#[derive(Debug)]
enum Held<T> {
    Call(Waiting),
    Other(T),
}

/// The last call seen at an `index`: its `id`, its function's name and its key.
#[derive(Debug)]
struct Known {
    index: u64,
    id: Option<String>,
    name: Option<String>,
    key: u64,
    /// How many calls this `index` has had.
    calls: u64,
}

/// The calls of one choice of a stream: the open one, what is held behind it, those ended.
/// `T` is what the converter holds back behind an open call (its text, its reasoning).
#[derive(Debug)]
pub(crate) struct CallOrder<T> {
    open: Option<(u64, JsonEnd)>,
    /// Never anything while no call is open.
    held: VecDeque<Held<T>>,
    ended: Vec<u64>,
    known: Vec<Known>,
}

impl<T> Default for CallOrder<T> {
    fn default() -> Self {
        Self {
            open: None,
            held: VecDeque::new(),
            ended: Vec::new(),
            known: Vec::new(),
        }
    }
}

/// The first key of the calls that reuse an `index` (far past any real `index`).
const REUSED: u64 = 1 << 32;

impl<T> CallOrder<T> {
    /// The key of the call `d` is a piece of (see the module docs): its `index`'s last call,
    /// unless `d` begins another one there.
    fn key(&mut self, d: &Delta<'_>) -> u64 {
        let Some(at) = self.known.iter().position(|k| k.index == d.call) else {
            self.known.push(Known {
                index: d.call,
                id: d.id.map(str::to_owned),
                name: d.name.map(str::to_owned),
                key: d.call,
                calls: 1,
            });
            return d.call;
        };
        let known = &self.known[at];
        let another = match (d.id, &known.id, d.name) {
            (Some(id), Some(last), Some(name)) if id != last => {
                known.name.as_deref() != Some(name) || self.could_be_finished(known.key)
            }
            _ => false,
        };
        let known = &mut self.known[at];
        if another {
            known.key = REUSED
                .wrapping_add(d.call.wrapping_shl(16))
                .wrapping_add(known.calls);
            known.calls += 1;
            known.id = d.id.map(str::to_owned);
            known.name = d.name.map(str::to_owned);
        } else {
            known.id = known.id.take().or(d.id.map(str::to_owned));
            known.name = known.name.take().or(d.name.map(str::to_owned));
        }
        known.key
    }

    /// Whether the call `key` could be finished: ended, or its arguments standing where they
    /// could be whole.
    fn could_be_finished(&self, key: u64) -> bool {
        let whole = |end: JsonEnd| matches!(end.stand(), Stand::Complete | Stand::Bare);
        if let Some((open, end)) = self.open {
            if open == key {
                return whole(end);
            }
        }
        let waiting = self.held.iter().find_map(|h| match h {
            Held::Call(w) if w.call == key => Some(w),
            _ => None,
        });
        match waiting {
            Some(w) => {
                let mut end = JsonEnd::default();
                end.feed(&w.args);
                whole(end)
            }
            None => self.ended.contains(&key),
        }
    }

    /// Takes one piece of a call; `emit` receives what may be written now.
    pub(crate) fn on_delta<'a>(&mut self, d: Delta<'a>, emit: &mut impl FnMut(Step<'a, T>)) {
        // An empty `id` or name is none (DashScope's and GLM's continuation pieces).
        let d = Delta {
            id: d.id.filter(|id| !id.is_empty()),
            name: d.name.filter(|name| !name.is_empty()),
            ..d
        };
        let d = Delta {
            call: self.key(&d),
            ..d
        };
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
                return;
            }
        }
        if self.ended.contains(&d.call) {
            // Going back to a call after its end (see the module docs): not written.
            return;
        }
        if self.open.is_none() {
            let (id, name) = (d.id.map(Cow::Borrowed), d.name.map(Cow::Borrowed));
            return self.begin(d.call, id, name, Cow::Borrowed(d.args), emit);
        }
        let waiting = self.held.iter_mut().find_map(|h| match h {
            Held::Call(w) if w.call == d.call => Some(w),
            _ => None,
        });
        if let Some(w) = waiting {
            w.id = w.id.take().or(d.id.map(str::to_owned));
            w.name = w.name.take().or(d.name.map(str::to_owned));
            w.args.push_str(d.args);
        } else {
            self.held.push_back(Held::Call(Waiting {
                call: d.call,
                id: d.id.map(str::to_owned),
                name: d.name.map(str::to_owned),
                args: d.args.to_owned(),
            }));
        }
        let args = !d.args.trim().is_empty();
        self.moved_on(Next::Call { args }, emit);
    }

    /// Takes something that is not a call (the converter's text, reasoning): written at once
    /// if no call is open, else held until the open call ends.
    pub(crate) fn on_other<'a>(&mut self, other: T, emit: &mut impl FnMut(Step<'a, T>)) {
        if self.open.is_none() {
            return emit(Step::Other(other));
        }
        self.held.push_back(Held::Other(other));
        self.moved_on(Next::Other, emit);
    }

    /// Ends every call, the open one and then each held one in turn, and writes what was
    /// held between them (the choice finished, or the stream ended).
    pub(crate) fn flush<'a>(&mut self, emit: &mut impl FnMut(Step<'a, T>)) {
        self.end_open(emit);
        while let Some(held) = self.held.pop_front() {
            match held {
                Held::Call(w) => {
                    let (id, name) = (w.id.map(Cow::Owned), w.name.map(Cow::Owned));
                    self.begin(w.call, id, name, Cow::Owned(w.args), emit);
                    self.end_open(emit);
                }
                Held::Other(other) => emit(Step::Other(other)),
            }
        }
    }

    /// Whether a call is open (and so whether [`CallOrder::on_other`] may hold).
    pub(crate) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// `next` arrived while a call is open: if that ends the open call, it ends and what
    /// was held behind it goes out, up to the next call that begins.
    fn moved_on<'a>(&mut self, next: Next, emit: &mut impl FnMut(Step<'a, T>)) {
        if !self.open.is_some_and(|(_, end)| end.stand().ended_by(next)) {
            return;
        }
        self.end_open(emit);
        while self.open.is_none() {
            match self.held.pop_front() {
                Some(Held::Call(w)) => {
                    let (id, name) = (w.id.map(Cow::Owned), w.name.map(Cow::Owned));
                    self.begin(w.call, id, name, Cow::Owned(w.args), emit);
                }
                Some(Held::Other(other)) => emit(Step::Other(other)),
                None => break,
            }
        }
    }

    fn begin<'a>(
        &mut self,
        call: u64,
        id: Option<Cow<'a, str>>,
        name: Option<Cow<'a, str>>,
        args: Cow<'a, str>,
        emit: &mut impl FnMut(Step<'a, T>),
    ) {
        emit(Step::Begin { call, id, name });
        let mut end = JsonEnd::default();
        if !args.is_empty() {
            end.feed(&args);
            emit(Step::Args { call, piece: args });
        }
        self.open = Some((call, end));
    }

    fn end_open<'a>(&mut self, emit: &mut impl FnMut(Step<'a, T>)) {
        if let Some((call, _)) = self.open.take() {
            emit(Step::End { call });
            self.ended.push(call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One input of a test stream: a call's piece (`index`, a name on its first piece, its
    /// arguments) or text.
    enum In<'a> {
        Call(u64, Option<&'a str>, &'a str),
        Text(&'a str),
    }
    use In::{Call, Text};

    fn step(s: Step<'_, String>) -> String {
        match s {
            Step::Begin { call, name, .. } => format!("begin {call} {}", name.unwrap_or_default()),
            Step::Args { call, piece } => format!("args {call} {piece}"),
            Step::End { call } => format!("end {call}"),
            Step::Other(text) => format!("text {text}"),
        }
    }

    /// The steps for `input`: text goes through the order only while a call is open, as the
    /// converters do.
    fn run(input: &[In<'_>]) -> Vec<String> {
        let mut order = CallOrder::default();
        let mut steps = Vec::new();
        let mut emit = |s: Step<'_, String>| steps.push(step(s));
        for i in input {
            match *i {
                Call(call, name, args) => {
                    let id = name.map(|_| "id");
                    order.on_delta(
                        Delta {
                            call,
                            id,
                            name,
                            args,
                        },
                        &mut emit,
                    );
                }
                Text(t) if order.is_open() => order.on_other(t.to_owned(), &mut emit),
                Text(t) => emit(Step::Other(t.to_owned())),
            }
        }
        order.flush(&mut emit);
        steps
    }

    /// Every call's steps are contiguous: begin, args, end, nothing of it after its end, and
    /// no text while a call is open.
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
                "text" if open.is_none() => {}
                _ => return false,
            }
        }
        open.is_none()
    }

    #[test]
    fn calls_streamed_one_after_another_go_out_as_they_come() {
        let steps = run(&[
            Call(0, Some("a"), ""),
            Call(0, None, "{\"x\":"),
            Call(0, None, "1}"),
            Call(1, Some("b"), "{}"),
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
            Call(0, Some("a"), ""),
            Call(1, Some("b"), ""),
            Call(0, None, "{\"q\":"),
            Call(1, None, "{\"r\":"),
            Call(0, None, "\"}{\"}"),
            Call(1, None, "2}"),
            Call(1, None, " "),
        ]);
        assert!(contiguous(&steps), "{steps:?}");
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 {\"q\":",
                "args 0 \"}{\"}",
                // The second call's piece after the first is complete: the first is over.
                "end 0",
                "begin 1 b",
                "args 1 {\"r\":2}",
                "args 1  ",
                "end 1"
            ]
        );
    }

    #[test]
    fn calls_never_completed_go_out_in_turn_at_the_end() {
        let steps = run(&[
            Call(0, Some("a"), "{\"cut"),
            Call(1, Some("b"), "{"),
            Call(2, Some("c"), "{}"),
            Call(1, None, "\"y\": ["),
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

    /// Complete JSON is not the end: more pieces of the same call stay in its block until
    /// something else comes.
    #[test]
    fn a_complete_call_taken_up_again_before_anything_else_keeps_its_pieces() {
        let steps = run(&[
            Call(0, Some("a"), "{\"a\":1}"),
            Call(0, None, "\n"),
            Call(0, None, "{\"b\":2}"),
            Call(1, Some("b"), ""),
            Call(1, None, "{}"),
        ]);
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 {\"a\":1}",
                "args 0 \n",
                "args 0 {\"b\":2}",
                "end 0",
                "begin 1 b",
                "args 1 {}",
                "end 1"
            ]
        );
    }

    /// Text in the middle of a call's arguments waits for the call's end; text after a
    /// complete call ends it.
    #[test]
    fn text_goes_out_between_calls_never_inside_one() {
        let steps = run(&[
            Text("Let me look."),
            Call(0, Some("a"), "{\"city\":"),
            Text("hm"),
            Call(0, None, "\"Paris\"}"),
            Text(" and"),
            Call(1, Some("b"), "{\"x\":"),
            Text("!"),
            Call(1, None, "1}"),
        ]);
        assert!(contiguous(&steps), "{steps:?}");
        assert_eq!(
            steps,
            [
                "text Let me look.",
                "begin 0 a",
                "args 0 {\"city\":",
                "args 0 \"Paris\"}",
                "end 0",
                "text hm",
                "text  and",
                "begin 1 b",
                "args 1 {\"x\":",
                "args 1 1}",
                // The finish ends the call; the text held behind it follows.
                "end 1",
                "text !"
            ]
        );
    }

    /// A function without parameters (`""` throughout): the next call's start alone does not
    /// end it (servers that start every call first do that), the next call's arguments do.
    #[test]
    fn a_call_without_arguments_ends_when_the_next_one_brings_arguments() {
        let steps = run(&[
            Call(0, Some("now"), ""),
            Call(1, Some("b"), ""),
            Call(1, None, "{\"x\":"),
            Call(1, None, "1}"),
            Call(2, Some("c"), "{}"),
        ]);
        assert_eq!(
            steps,
            [
                "begin 0 now",
                "end 0",
                "begin 1 b",
                "args 1 {\"x\":",
                "args 1 1}",
                "end 1",
                "begin 2 c",
                "args 2 {}",
                "end 2"
            ]
        );
        // Servers that start every call first: the first's arguments come next.
        let steps = run(&[
            Call(0, Some("a"), ""),
            Call(1, Some("b"), ""),
            Call(0, None, "{}"),
            Call(1, None, "{\"y\":2}"),
        ]);
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 {}",
                "end 0",
                "begin 1 b",
                "args 1 {\"y\":2}",
                "end 1"
            ]
        );
    }

    /// Arguments that never open as JSON do not hold the calls after them back.
    #[test]
    fn arguments_that_are_never_json_do_not_hold_the_next_call() {
        let steps = run(&[
            Call(0, Some("a"), "not "),
            Call(0, None, "json"),
            Call(1, Some("b"), ""),
            Call(1, None, "{}"),
            Text("ok"),
        ]);
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 not ",
                "args 0 json",
                "end 0",
                "begin 1 b",
                "args 1 {}",
                "end 1",
                "text ok"
            ]
        );
    }

    /// A piece of a call after its end is not written (nothing of a block after its stop).
    #[test]
    fn a_piece_after_the_calls_end_is_not_written() {
        let steps = run(&[
            Call(0, Some("a"), "{}"),
            Call(1, Some("b"), "{}"),
            Call(0, None, "{\"late\":1}"),
        ]);
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 {}",
                "end 0",
                "begin 1 b",
                "args 1 {}",
                "end 1"
            ]
        );
    }

    /// Calls whose pieces come in any interleaving (each call's own in order, each piece
    /// some of its JSON), with text anywhere: every call's steps are contiguous, its
    /// arguments whole and in order, and the text whole and in order.
    #[test]
    fn any_interleaving_keeps_every_call_whole_and_every_byte() {
        let args = [
            r#"{"city":"Paris","days":[1,2]}"#,
            r#"{"q":"a \"}\" b"}"#,
            r#"[{"x":{}}]"#,
            "{}",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..500 {
            // Each call's arguments cut into 1 to 4 non-empty pieces.
            let mut pieces: Vec<VecDeque<&str>> = Vec::new();
            for a in args {
                let mut cuts: Vec<usize> = (0..next(4)).map(|_| 1 + next(a.len() - 1)).collect();
                cuts.extend([0, a.len()]);
                cuts.sort_unstable();
                cuts.dedup();
                pieces.push(cuts.windows(2).map(|w| &a[w[0]..w[1]]).collect());
            }
            let mut input = Vec::new();
            let mut started = [false; 4];
            let mut text = String::new();
            while pieces.iter().any(|p| !p.is_empty()) {
                if next(4) == 0 {
                    input.push(Text(["a", "b", "c"][next(3)]));
                    text.push_str(match input.last() {
                        Some(Text(t)) => t,
                        _ => "",
                    });
                }
                let call = next(4);
                if let Some(piece) = pieces[call].pop_front() {
                    let name = (!started[call]).then_some("f");
                    started[call] = true;
                    input.push(Call(call as u64, name, piece));
                }
            }
            let steps = run(&input);
            assert!(contiguous(&steps), "{steps:?}");
            for (call, a) in args.iter().enumerate() {
                let got: String = steps
                    .iter()
                    .filter_map(|s| s.strip_prefix(&format!("args {call} ")))
                    .collect();
                assert_eq!(&got, a, "{steps:?}");
            }
            let said: String = steps
                .iter()
                .filter_map(|s| s.strip_prefix("text "))
                .collect();
            assert_eq!(said, text, "{steps:?}");
        }
    }

    #[test]
    fn brackets_and_escapes_inside_strings_do_not_count() {
        let mut end = JsonEnd::default();
        assert_eq!(end.stand(), Stand::Empty);
        end.feed(" \n");
        assert_eq!(end.stand(), Stand::Empty);
        end.feed(r#"{"a": "}\"]\\"#);
        assert_eq!(end.stand(), Stand::Inside);
        end.feed(r#"", "b": [1, {"c": "{"}]"#);
        assert_eq!(end.stand(), Stand::Inside);
        end.feed("}");
        assert_eq!(end.stand(), Stand::Complete);
        let mut bare = JsonEnd::default();
        bare.feed(" \"x");
        assert_eq!(bare.stand(), Stand::Bare);
    }

    /// The steps of `pieces` (`index`, `id`, name, arguments), as [`run`] makes them.
    fn run_with_ids(pieces: &[(u64, Option<&str>, Option<&str>, &str)]) -> Vec<String> {
        let mut order = CallOrder::<String>::default();
        let mut steps = Vec::new();
        let mut emit = |s: Step<'_, String>| steps.push(step(s));
        for &(call, id, name, args) in pieces {
            let d = Delta {
                call,
                id,
                name,
                args,
            };
            order.on_delta(d, &mut emit);
        }
        order.flush(&mut emit);
        steps
    }

    #[test]
    fn calls_that_reuse_an_index_are_told_apart_by_their_ids() {
        // Ollama and SGLang: every call `index: 0`, each with its own id.
        let steps = run_with_ids(&[
            (0, Some("call_a"), Some("a"), ""),
            (0, None, None, "{\"x\":1}"),
            (0, Some("call_b"), Some("b"), "{\"y\":"),
            (0, None, None, "2}"),
            (0, Some("call_b"), None, ""),
        ]);
        let b = REUSED + 1;
        assert_eq!(
            steps,
            [
                "begin 0 a".to_string(),
                "args 0 {\"x\":1}".into(),
                "end 0".into(),
                format!("begin {b} b"),
                format!("args {b} {{\"y\":"),
                format!("args {b} 2}}"),
                format!("end {b}"),
            ]
        );
        assert!(contiguous(&steps), "{steps:?}");
        // Each call whole, even when the second comes whole in one piece.
        let steps = run_with_ids(&[
            (0, Some("call_a"), Some("a"), "{}"),
            (0, Some("call_b"), Some("b"), "{}"),
            (0, Some("call_c"), Some("c"), "{}"),
        ]);
        let begun: Vec<_> = steps.iter().filter(|s| s.starts_with("begin")).collect();
        assert_eq!(begun.len(), 3, "{steps:?}");
        assert!(contiguous(&steps), "{steps:?}");
        // DashScope and GLM: continuation pieces with `"id": ""` (and `"name": ""`).
        let steps = run_with_ids(&[
            (0, Some("call_a"), Some("bash"), ""),
            (0, Some(""), Some(""), "{\"command\": "),
            (0, Some(""), None, "\"ls\"}"),
        ]);
        assert_eq!(
            steps,
            [
                "begin 0 bash",
                "args 0 {\"command\": ",
                "args 0 \"ls\"}",
                "end 0"
            ]
        );
        // The same id again after its call ended is going back to it: not written.
        let steps = run_with_ids(&[
            (0, Some("call_a"), Some("a"), "{}"),
            (1, Some("call_b"), Some("b"), "{}"),
            (0, Some("call_a"), None, "{}"),
        ]);
        assert_eq!(
            steps,
            [
                "begin 0 a",
                "args 0 {}",
                "end 0",
                "begin 1 b",
                "args 1 {}",
                "end 1"
            ]
        );
    }

    #[test]
    fn an_id_that_changes_in_the_middle_of_one_call_does_not_split_it() {
        let one_call = [
            "begin 0 get_weather",
            "args 0 {\"city\":",
            "args 0 \"Paris\"}",
            "end 0",
        ];
        // Poolside: the first piece has one id and the name, every later piece another id.
        let steps = run_with_ids(&[
            (0, Some("call_1"), Some("get_weather"), ""),
            (0, Some("call_2"), None, "{\"city\":"),
            (0, Some("call_2"), None, "\"Paris\"}"),
        ]);
        assert_eq!(steps, one_call);
        // Some vLLM versions: a fresh id and the name on every piece.
        let steps = run_with_ids(&[
            (0, Some("call_1"), Some("get_weather"), ""),
            (0, Some("call_2"), Some("get_weather"), "{\"city\":"),
            (0, Some("call_3"), Some("get_weather"), "\"Paris\"}"),
        ]);
        assert_eq!(steps, one_call);
        // A new id naming another function is another call, even before any arguments.
        let steps = run_with_ids(&[
            (0, Some("call_1"), Some("now"), ""),
            (0, Some("call_2"), Some("today"), ""),
        ]);
        let begun: Vec<_> = steps.iter().filter(|s| s.starts_with("begin")).collect();
        assert_eq!(begun.len(), 2, "{steps:?}");
        assert!(contiguous(&steps), "{steps:?}");
    }
}
