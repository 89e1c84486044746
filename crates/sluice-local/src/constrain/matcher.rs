//! The byte-level matcher of a [`Grammar`]: which bytes may come next, one byte at a time.
//!
//! A [`State`] is a stack of [`Frame`]s (the value being read on top, the containers below it)
//! kept as a persistent linked list, so that a state is cheap to copy while the token trie is
//! walked: a byte changes the top frame and at most pushes or pops one. `anyOf` makes the
//! matcher nondeterministic: [`Matcher`] holds the set of states still alive.
//!
//! Output is valid JSON by construction: strings are valid UTF-8 with valid escapes (no lone
//! surrogates, no raw control characters), numbers have at most [`MAX_DIGITS`] digits before
//! and after the point and two in the exponent (so they parse as finite `f64`s), whitespace
//! between tokens is at most [`MAX_WHITESPACE`] bytes per gap (`' '`, `'\n'`, `'\t'`), nesting
//! at most [`MAX_DEPTH`], and nothing follows the root value.

use std::sync::Arc;

use super::pattern::{counted, Pattern};
use super::schema::{Grammar, Node, NodeId, ObjectNode};

/// Whitespace bytes allowed in one gap between tokens (models otherwise emit newlines forever).
pub(crate) const MAX_WHITESPACE: u8 = 16;
/// Nesting limit (also bounds recursive `$ref`s and `json_object`'s values).
pub(crate) const MAX_DEPTH: u16 = 32;
/// Digits allowed in a number's integer part and fraction (kept in `bounds`, which needs it).
pub(crate) use super::bounds::MAX_DIGITS;
use super::bounds::UNIT;

/// `KeyTrie` position meaning "not a declared key".
const OFF_TRIE: u32 = u32::MAX;
/// `Colon`'s property meaning "an additional property".
const ADDITIONAL: u8 = u8::MAX;

/// Where inside a string's bytes the matcher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lex {
    /// Between characters.
    Plain,
    /// After `\`.
    Escape,
    /// `left` hex digits of `\u` to go; `surrogate`: the first was `d`/`D` (the next must be `0-7`).
    Hex { left: u8, surrogate: bool },
    /// Inside a UTF-8 sequence: `left` continuation bytes to go, the next in `lo..=hi`.
    Utf8 { left: u8, lo: u8, hi: u8 },
}

/// What a string byte did.
enum Step {
    /// Continue with this lexer state; `char_done`: a character was completed.
    Go {
        lex: Lex,
        starts_char: bool,
    },
    /// The closing quote.
    Close,
    Invalid,
}

// === impl Lex ===

impl Lex {
    fn step(self, b: u8) -> Step {
        let go = |lex, starts_char| Step::Go { lex, starts_char };
        match self {
            Self::Plain => match b {
                b'"' => Step::Close,
                b'\\' => go(Self::Escape, true),
                0x00..=0x1f | 0x7f => Step::Invalid,
                0x20..=0x7e => go(Self::Plain, true),
                0xc2..=0xdf => go(
                    Self::Utf8 {
                        left: 1,
                        lo: 0x80,
                        hi: 0xbf,
                    },
                    true,
                ),
                0xe0 => go(
                    Self::Utf8 {
                        left: 2,
                        lo: 0xa0,
                        hi: 0xbf,
                    },
                    true,
                ),
                0xed => go(
                    Self::Utf8 {
                        left: 2,
                        lo: 0x80,
                        hi: 0x9f,
                    },
                    true,
                ),
                0xe1..=0xef => go(
                    Self::Utf8 {
                        left: 2,
                        lo: 0x80,
                        hi: 0xbf,
                    },
                    true,
                ),
                0xf0 => go(
                    Self::Utf8 {
                        left: 3,
                        lo: 0x90,
                        hi: 0xbf,
                    },
                    true,
                ),
                0xf4 => go(
                    Self::Utf8 {
                        left: 3,
                        lo: 0x80,
                        hi: 0x8f,
                    },
                    true,
                ),
                0xf1..=0xf3 => go(
                    Self::Utf8 {
                        left: 3,
                        lo: 0x80,
                        hi: 0xbf,
                    },
                    true,
                ),
                _ => Step::Invalid,
            },
            Self::Escape => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => go(Self::Plain, false),
                b'u' => go(
                    Self::Hex {
                        left: 4,
                        surrogate: false,
                    },
                    false,
                ),
                _ => Step::Invalid,
            },
            Self::Hex { left, surrogate } => {
                if !b.is_ascii_hexdigit() || (surrogate && !matches!(b, b'0'..=b'7')) {
                    return Step::Invalid;
                }
                let surrogate = left == 4 && matches!(b, b'd' | b'D');
                let next = if left == 1 {
                    Self::Plain
                } else {
                    Self::Hex {
                        left: left - 1,
                        surrogate,
                    }
                };
                go(next, false)
            }
            Self::Utf8 { left, lo, hi } => {
                if !(lo..=hi).contains(&b) {
                    return Step::Invalid;
                }
                let next = if left == 1 {
                    Self::Plain
                } else {
                    Self::Utf8 {
                        left: left - 1,
                        lo: 0x80,
                        hi: 0xbf,
                    }
                };
                go(next, false)
            }
        }
    }
}

/// Where inside a number the matcher is (`digits`: how many in the current part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NumPhase {
    /// After `-`.
    Minus,
    /// The integer part is `0`.
    Zero,
    Int,
    /// After `.`.
    Dot,
    Fraction,
    /// After `e`/`E`.
    E,
    /// After the exponent's sign.
    ESign,
    Exponent,
}

/// Where inside an array or object the matcher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Phase {
    /// After `[` / `{`.
    Open,
    /// After an item or a property's value.
    AfterValue,
    /// After `,`.
    AfterComma,
    /// Inside a key: its position in the key trie and its lexer state.
    Key { trie: u32, lex: Lex },
    /// After a key, before `:`; the property (or [`ADDITIONAL`]).
    Colon { property: u8 },
}

/// One level of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Frame {
    /// A value of `node` comes next, after `ws` whitespace bytes so far.
    Value { node: NodeId, ws: u8 },
    /// Inside literal `which` of a `Literals` node, `at` bytes in.
    Literal { node: NodeId, which: u16, at: u16 },
    /// Inside a string (after its opening quote), `chars` characters in (counted only up to
    /// what the node's limits need, so unlimited strings keep one state); `dfa`: the state of
    /// the string's pattern, if it has one.
    Str {
        node: NodeId,
        chars: u32,
        lex: Lex,
        dfa: u32,
    },
    /// Inside a number of `node`; for a number with a range, its sign, its integer part and
    /// fraction digits so far, and whether it `fits` the range (else these stay `false`, 0,
    /// 0, `true`: one state per phase).
    Num {
        node: NodeId,
        integer: bool,
        phase: NumPhase,
        digits: u8,
        negative: bool,
        int: u64,
        fraction: u64,
        fits: bool,
    },
    /// Inside an array with `count` items started.
    Array {
        node: NodeId,
        count: u32,
        phase: Phase,
        ws: u8,
    },
    /// Inside an object with the properties `seen` (bits) given.
    Object {
        node: NodeId,
        seen: u64,
        phase: Phase,
        ws: u8,
    },
    /// The root value is complete.
    Done,
}

/// A frame under the top one.
#[derive(Debug)]
struct Link {
    frame: Frame,
    below: Option<Arc<Link>>,
}

/// One parse: the top frame and the stack under it.
#[derive(Debug, Clone)]
pub(crate) struct State {
    top: Frame,
    rest: Option<Arc<Link>>,
    depth: u16,
}

// === impl State ===

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        // Stacks are compared by identity: equal states built apart are just not merged.
        self.top == other.top
            && self.depth == other.depth
            && match (&self.rest, &other.rest) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for State {}

impl std::hash::Hash for State {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.top.hash(state);
        self.depth.hash(state);
        self.rest
            .as_ref()
            .map(|r| Arc::as_ptr(r) as usize)
            .hash(state);
    }
}

impl State {
    fn with(&self, top: Frame) -> Self {
        Self {
            top,
            rest: self.rest.clone(),
            depth: self.depth,
        }
    }

    /// `child` on top of `parent` (which replaces the current top).
    fn push(&self, parent: Frame, child: Frame) -> Option<Self> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        Some(Self {
            top: child,
            rest: Some(Arc::new(Link {
                frame: parent,
                below: self.rest.clone(),
            })),
            depth: self.depth + 1,
        })
    }

    /// The state after the top frame's value ended.
    fn pop(&self) -> Self {
        match &self.rest {
            None => Self {
                top: Frame::Done,
                rest: None,
                depth: 0,
            },
            Some(link) => Self {
                top: link.frame,
                rest: link.below.clone(),
                depth: self.depth - 1,
            },
        }
    }

    /// Whether the root value may end here.
    pub(crate) fn accepts(&self) -> bool {
        match self.top {
            Frame::Done => true,
            Frame::Num { phase, fits, .. } => self.rest.is_none() && number_complete(phase) && fits,
            _ => false,
        }
    }
}

fn number_complete(phase: NumPhase) -> bool {
    matches!(
        phase,
        NumPhase::Zero | NumPhase::Int | NumPhase::Fraction | NumPhase::Exponent
    )
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t')
}

/// The set of parses alive.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    grammar: Arc<Grammar>,
    pub(crate) states: Vec<State>,
}

// === impl Matcher ===

impl Matcher {
    pub(crate) fn new(grammar: Arc<Grammar>) -> Self {
        let root = State {
            top: Frame::Value {
                node: grammar.root,
                ws: 0,
            },
            rest: None,
            depth: 0,
        };
        Self {
            grammar,
            states: vec![root],
        }
    }

    pub(crate) fn grammar(&self) -> &Grammar {
        &self.grammar
    }

    /// Feeds bytes; `false` (and no change) if they break every parse.
    pub(crate) fn advance(&mut self, bytes: &[u8]) -> bool {
        let mut current = self.states.clone();
        let mut next = Vec::new();
        for &b in bytes {
            next.clear();
            for state in &current {
                step(&self.grammar, state, b, &mut next);
            }
            if next.is_empty() {
                return false;
            }
            std::mem::swap(&mut current, &mut next);
        }
        self.states = current;
        true
    }

    /// Whether the value may end here.
    pub(crate) fn accepts(&self) -> bool {
        self.states.iter().any(State::accepts)
    }

    /// How far from done (for tests that sample random output that must end): 0 when finished,
    /// else by the shallowest parse's stack depth and what its top frame is.
    #[cfg(test)]
    pub(crate) fn distance(&self) -> u32 {
        self.states
            .iter()
            .map(|s| {
                let missing = |node: NodeId, seen: u64| match self.grammar.node(node) {
                    Node::Object(o) => 8 * (o.required & !seen).count_ones(),
                    _ => 0,
                };
                // Within an object: the required properties still missing, then how far the
                // current key is from giving one.
                let weight = match s.top {
                    Frame::Done => return 0,
                    Frame::Str { .. } | Frame::Literal { .. } | Frame::Num { .. } => 1,
                    Frame::Object {
                        node, seen, phase, ..
                    } => {
                        missing(node, seen)
                            + match phase {
                                Phase::Colon {
                                    property: ADDITIONAL,
                                } => 7,
                                Phase::Colon { .. } => 3,
                                Phase::Key { trie: OFF_TRIE, .. } => 7,
                                Phase::Key { .. } => 4,
                                Phase::AfterComma => 5,
                                Phase::Open | Phase::AfterValue => 6,
                            }
                    }
                    Frame::Array { .. } => 2,
                    Frame::Value { .. } => 3,
                };
                1000 * (1 + u32::from(s.depth)) + weight
            })
            .min()
            .unwrap_or(u32::MAX)
    }

    /// Whether nothing but the end may follow.
    pub(crate) fn finished(&self) -> bool {
        self.states.iter().all(|s| s.top == Frame::Done)
    }
}

/// The characters of `token` read inside a string from a character boundary, if it stays
/// inside (no closing quote, no escape, no control byte) and ends on a character boundary.
pub(crate) fn plain_chars(token: &[u8]) -> Option<u32> {
    let mut lex = Lex::Plain;
    let mut chars = 0;
    for &b in token {
        if b == b'\\' {
            return None;
        }
        match lex.step(b) {
            Step::Go {
                lex: next,
                starts_char,
            } => {
                lex = next;
                chars += u32::from(starts_char);
            }
            Step::Close | Step::Invalid => return None,
        }
    }
    (lex == Lex::Plain).then_some(chars)
}

/// When the one parse is inside a string at a character boundary: how many more characters
/// it takes. Then plain tokens (see [`plain_chars`]) are allowed by their length alone.
pub(crate) fn in_plain_string(g: &Grammar, states: &[State]) -> Option<u32> {
    let [state] = states else { return None };
    let Frame::Str {
        node,
        chars,
        lex: Lex::Plain,
        ..
    } = state.top
    else {
        return None;
    };
    let Node::String {
        max, pattern: None, ..
    } = *g.node(node)
    else {
        return None;
    };
    Some(max.map_or(u32::MAX, |max| max.saturating_sub(chars)))
}

/// Where the one parse is inside a patterned string at a character boundary: its pattern and
/// the string's DFA state, characters counted and lengths.
pub(crate) struct InPattern<'g> {
    pub(crate) pattern: &'g Pattern,
    pub(crate) dfa: u32,
    pub(crate) chars: u32,
    pub(crate) min: u32,
    pub(crate) max: Option<u32>,
}

/// When the one parse is inside a string with a pattern, at a character boundary: where.
/// Then plain tokens (see [`plain_chars`]) are allowed by the DFA alone (`vocab`).
pub(crate) fn in_patterned_string<'g>(g: &'g Grammar, states: &[State]) -> Option<InPattern<'g>> {
    let [state] = states else { return None };
    let Frame::Str {
        node,
        chars,
        lex: Lex::Plain,
        dfa,
    } = state.top
    else {
        return None;
    };
    let Node::String {
        min,
        max,
        pattern: Some(p),
    } = *g.node(node)
    else {
        return None;
    };
    Some(InPattern {
        pattern: g.pattern(p),
        dfa,
        chars,
        min,
        max,
    })
}

/// Every state `state` becomes after byte `b`, appended to `out` (without duplicates).
pub(crate) fn step(g: &Grammar, state: &State, b: u8, out: &mut Vec<State>) {
    let mut add = |s: State| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    match state.top {
        Frame::Value { node, ws } => {
            if is_ws(b) {
                if ws < MAX_WHITESPACE {
                    add(state.with(Frame::Value { node, ws: ws + 1 }));
                }
                return;
            }
            start(g, state, node, b, &mut add);
        }
        Frame::Literal { node, which, at } => {
            let Node::Literals(texts) = g.node(node) else {
                return;
            };
            let text = &texts[which as usize];
            if text.get(at as usize) == Some(&b) {
                if at as usize + 1 == text.len() {
                    add(state.pop());
                } else {
                    add(state.with(Frame::Literal {
                        node,
                        which,
                        at: at + 1,
                    }));
                }
            }
        }
        Frame::Str {
            node,
            chars,
            lex,
            dfa,
        } => {
            let Node::String { min, max, pattern } = *g.node(node) else {
                return;
            };
            let at = StrAt { chars, lex, dfa };
            let next = match pattern {
                None => string_step(min, max, at, b),
                Some(p) => patterned_step(g.pattern(p), min, max, at, b),
            };
            match next {
                Some(None) => add(state.pop()),
                Some(Some(StrAt { chars, lex, dfa })) => add(state.with(Frame::Str {
                    node,
                    chars,
                    lex,
                    dfa,
                })),
                None => {}
            }
        }
        Frame::Num {
            node,
            integer,
            phase,
            digits,
            fits,
            ..
        } => {
            let exponent = matches!(g.node(node), Node::Number { range: None, .. });
            if let Some((phase, digits)) = number_step(integer, exponent, phase, digits, b) {
                if let Some(top) = bounded(g, state.top, phase, digits, b) {
                    add(state.with(top));
                }
            } else if number_complete(phase) && fits {
                // The byte ends the number: the container reads it.
                let mut popped = Vec::new();
                step(g, &state.pop(), b, &mut popped);
                popped.into_iter().for_each(add);
            }
        }
        Frame::Array {
            node,
            count,
            phase,
            ws,
        } => array_step(g, state, node, count, phase, ws, b, &mut add),
        Frame::Object {
            node,
            seen,
            phase,
            ws,
        } => {
            let Node::Object(o) = g.node(node) else {
                return;
            };
            object_step(state, o, node, seen, phase, ws, b, &mut add);
        }
        Frame::Done => {}
    }
}

/// The first byte of a value of `node`.
fn start(g: &Grammar, state: &State, node: NodeId, b: u8, add: &mut impl FnMut(State)) {
    match g.node(node) {
        Node::Union(alternatives) => {
            for &a in alternatives {
                start(g, state, a, b, add);
            }
        }
        Node::Literals(texts) => {
            for (which, text) in texts.iter().enumerate() {
                if text.first() == Some(&b) {
                    let frame = Frame::Literal {
                        node,
                        which: which as u16,
                        at: 1,
                    };
                    add(if text.len() == 1 {
                        state.pop()
                    } else {
                        state.with(frame)
                    });
                }
            }
        }
        Node::String { .. } => {
            if b == b'"' {
                add(state.with(Frame::Str {
                    node,
                    chars: 0,
                    lex: Lex::Plain,
                    dfa: 0,
                }));
            }
        }
        &Node::Number { integer, .. } => {
            let phase = match b {
                b'-' => NumPhase::Minus,
                b'0' => NumPhase::Zero,
                b'1'..=b'9' => NumPhase::Int,
                _ => return,
            };
            let before = Frame::Num {
                node,
                integer,
                phase,
                digits: 0,
                negative: false,
                int: 0,
                fraction: 0,
                fits: true,
            };
            if let Some(top) = bounded(g, before, phase, u8::from(b != b'-'), b) {
                add(state.with(top));
            }
        }
        Node::Array { .. } => {
            if b == b'[' {
                add(state.with(Frame::Array {
                    node,
                    count: 0,
                    phase: Phase::Open,
                    ws: 0,
                }));
            }
        }
        Node::Object(_) => {
            if b == b'{' {
                add(state.with(Frame::Object {
                    node,
                    seen: 0,
                    phase: Phase::Open,
                    ws: 0,
                }));
            }
        }
    }
}

/// Where inside a string the matcher is (a [`Frame::Str`]'s fields but the node).
#[derive(Clone, Copy)]
struct StrAt {
    chars: u32,
    lex: Lex,
    dfa: u32,
}

/// A byte of a string without a pattern: `None` if refused, `Some(None)` if it closes it.
fn string_step(min: u32, max: Option<u32>, at: StrAt, b: u8) -> Option<Option<StrAt>> {
    match at.lex.step(b) {
        Step::Close if at.chars >= min => Some(None),
        Step::Go { lex, starts_char } => {
            let mut chars = at.chars;
            if starts_char {
                if max.is_some_and(|max| chars >= max) {
                    return None;
                }
                chars = counted(chars, min, max);
            }
            Some(Some(StrAt { chars, lex, ..at }))
        }
        _ => None,
    }
}

/// The byte a short escape's letter stands for (`\u` is not one).
fn unescape(letter: u8) -> Option<u8> {
    Some(match letter {
        b'"' | b'\\' | b'/' => letter,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    })
}

/// A byte of a string with a pattern: the pattern's DFA reads the decoded bytes, and a byte
/// is taken only if a match can still end within the string's lengths after it. A `\` is
/// taken if one of the short escapes can follow; `\u` escapes are refused (see `pattern`).
fn patterned_step(
    p: &Pattern,
    min: u32,
    max: Option<u32>,
    at: StrAt,
    b: u8,
) -> Option<Option<StrAt>> {
    let room = max.is_none_or(|max| at.chars < max);
    match (at.lex, b) {
        (Lex::Plain, b'"') => (at.chars >= min && p.accepts(at.dfa)).then_some(None),
        (Lex::Plain, b'\\') => {
            let chars = counted(at.chars, min, max);
            let escapable = b"\"\\/bfnrt"
                .iter()
                .filter_map(|&e| unescape(e))
                .any(|d| p.live(p.step(at.dfa, d), chars));
            (room && escapable).then_some(Some(StrAt {
                chars,
                lex: Lex::Escape,
                dfa: at.dfa,
            }))
        }
        (Lex::Escape, _) => {
            let dfa = p.step(at.dfa, unescape(b)?);
            p.live(dfa, at.chars).then_some(Some(StrAt {
                lex: Lex::Plain,
                dfa,
                ..at
            }))
        }
        _ => match at.lex.step(b) {
            Step::Go { lex, starts_char } => {
                if starts_char && !room {
                    return None;
                }
                let chars = if starts_char {
                    counted(at.chars, min, max)
                } else {
                    at.chars
                };
                let dfa = p.step(at.dfa, b);
                p.live(dfa, chars)
                    .then_some(Some(StrAt { chars, lex, dfa }))
            }
            Step::Close | Step::Invalid => None,
        },
    }
}

/// A number's frame `before` after byte `b` took it to `phase` with `digits`: for a number
/// with a range, the sign and digits updated, and `None` if no number within the range can
/// follow.
fn bounded(g: &Grammar, before: Frame, phase: NumPhase, digits: u8, b: u8) -> Option<Frame> {
    let Frame::Num {
        node,
        integer,
        negative,
        int,
        fraction,
        ..
    } = before
    else {
        return None;
    };
    let frame = |negative, int, fraction, fits| Frame::Num {
        node,
        integer,
        phase,
        digits,
        negative,
        int,
        fraction,
        fits,
    };
    let Node::Number {
        range: Some(range), ..
    } = *g.node(node)
    else {
        return Some(frame(false, 0, 0, true));
    };
    let negative = negative || b == b'-';
    let digit = u64::from(b.wrapping_sub(b'0'));
    let (int, fraction) = match (phase, b) {
        (NumPhase::Zero | NumPhase::Int, b'0'..=b'9') => (int * 10 + digit, fraction),
        (NumPhase::Fraction, b'0'..=b'9') => (int, fraction * 10 + digit),
        _ => (int, fraction),
    };
    // The magnitude so far in grid units, when the number may end here.
    let whole = i128::from(int) * UNIT;
    let (reachable, grid) = match phase {
        NumPhase::Minus => (range.reachable_sign(negative), None),
        NumPhase::Zero => (range.meets(negative, 0, UNIT - 1), Some(0)),
        NumPhase::Int => (range.reachable_int(negative, int, digits), Some(whole)),
        NumPhase::Dot => (range.meets(negative, whole, whole + UNIT - 1), None),
        NumPhase::Fraction => {
            let scale = 10i128.pow(u32::from(MAX_DIGITS - digits));
            let grid = whole + i128::from(fraction) * scale;
            (range.reachable_fraction(negative, grid, digits), Some(grid))
        }
        NumPhase::E | NumPhase::ESign | NumPhase::Exponent => (false, None),
    };
    let fits = grid.is_some_and(|grid| range.contains(negative, grid));
    reachable.then(|| frame(negative, int, fraction, fits))
}

/// The number's phase and digit count after byte `b` (`exponent`: whether `e` may follow).
fn number_step(
    integer: bool,
    exponent: bool,
    phase: NumPhase,
    digits: u8,
    b: u8,
) -> Option<(NumPhase, u8)> {
    use NumPhase as P;
    let digit = b.is_ascii_digit();
    let (phase, digits) = match (phase, b) {
        (P::Minus, b'0') => (P::Zero, 1),
        (P::Minus, b'1'..=b'9') => (P::Int, 1),
        (P::Int, _) if digit && digits < MAX_DIGITS => (P::Int, digits + 1),
        (P::Zero | P::Int, b'.') if !integer => (P::Dot, 0),
        (P::Zero | P::Int | P::Fraction, b'e' | b'E') if !integer && exponent => (P::E, 0),
        (P::Dot, _) if digit => (P::Fraction, 1),
        (P::Fraction, _) if digit && digits < MAX_DIGITS => (P::Fraction, digits + 1),
        (P::E, b'+' | b'-') => (P::ESign, 0),
        (P::E | P::ESign, _) if digit => (P::Exponent, 1),
        (P::Exponent, _) if digit && digits < 2 => (P::Exponent, digits + 1),
        _ => return None,
    };
    Some((phase, digits))
}

#[expect(clippy::too_many_arguments, reason = "one frame's fields, unpacked")]
fn array_step(
    g: &Grammar,
    state: &State,
    node: NodeId,
    count: u32,
    phase: Phase,
    ws: u8,
    b: u8,
    add: &mut impl FnMut(State),
) {
    let Node::Array { items, min, max } = *g.node(node) else {
        return;
    };
    let frame = |count, phase, ws| Frame::Array {
        node,
        count,
        phase,
        ws,
    };
    if is_ws(b) {
        if ws < MAX_WHITESPACE {
            add(state.with(frame(count, phase, ws + 1)));
        }
        return;
    }
    let room = max.is_none_or(|max| count < max);
    match phase {
        Phase::Open if b == b']' => {
            if min == 0 {
                add(state.pop());
            }
        }
        Phase::Open | Phase::AfterComma => {
            if !room {
                return;
            }
            let parent = frame(count + 1, Phase::AfterValue, 0);
            if let Some(child) = state.push(parent, Frame::Value { node: items, ws: 0 }) {
                let mut out = Vec::new();
                step(g, &child, b, &mut out);
                out.into_iter().for_each(add);
            }
        }
        Phase::AfterValue => match b {
            b',' if room => add(state.with(frame(count, Phase::AfterComma, 0))),
            b']' if count >= min => add(state.pop()),
            _ => {}
        },
        Phase::Key { .. } | Phase::Colon { .. } => {}
    }
}

/// Whether another key may follow: an undeclared property left, or other keys allowed.
fn more_keys(o: &ObjectNode, seen: u64) -> bool {
    o.additional.is_some() || o.keys.below(0) & !seen != 0
}

#[expect(clippy::too_many_arguments, reason = "one frame's fields, unpacked")]
fn object_step(
    state: &State,
    o: &ObjectNode,
    node: NodeId,
    seen: u64,
    phase: Phase,
    ws: u8,
    b: u8,
    add: &mut impl FnMut(State),
) {
    let frame = |seen, phase, ws| Frame::Object {
        node,
        seen,
        phase,
        ws,
    };
    let gap = matches!(
        phase,
        Phase::Open | Phase::AfterValue | Phase::AfterComma | Phase::Colon { .. }
    );
    if gap && is_ws(b) {
        if ws < MAX_WHITESPACE {
            add(state.with(frame(seen, phase, ws + 1)));
        }
        return;
    }
    let complete = o.required & !seen == 0;
    match phase {
        Phase::Open | Phase::AfterComma => match b {
            b'"' if more_keys(o, seen) => add(state.with(frame(
                seen,
                Phase::Key {
                    trie: 0,
                    lex: Lex::Plain,
                },
                0,
            ))),
            b'}' if phase == Phase::Open && complete => add(state.pop()),
            _ => {}
        },
        Phase::AfterValue => match b {
            b',' if more_keys(o, seen) => add(state.with(frame(seen, Phase::AfterComma, 0))),
            b'}' if complete => add(state.pop()),
            _ => {}
        },
        Phase::Key { trie, lex } => {
            if let Some(phase) = key_step(o, seen, trie, lex, b) {
                let seen = match phase {
                    Phase::Colon { property } if property != ADDITIONAL => seen | 1 << property,
                    _ => seen,
                };
                add(state.with(frame(seen, phase, 0)));
            }
        }
        Phase::Colon { property } => {
            if b != b':' {
                return;
            }
            let value = match property {
                ADDITIONAL => o.additional,
                p => o.properties.get(p as usize).copied(),
            };
            if let Some(value) = value {
                if let Some(child) = state.push(
                    frame(seen, Phase::AfterValue, 0),
                    Frame::Value { node: value, ws: 0 },
                ) {
                    add(child);
                }
            }
        }
    }
}

/// A byte of a key: declared keys are followed through the trie (a key declared and seen is
/// not repeated); other keys, where allowed, are plain strings without escapes (so they can
/// never spell a declared key another way).
fn key_step(o: &ObjectNode, seen: u64, trie: u32, lex: Lex, b: u8) -> Option<Phase> {
    let declared = if trie == OFF_TRIE { None } else { Some(trie) };
    match lex.step(b) {
        Step::Close => {
            let property = declared.and_then(|t| o.keys.property(t));
            match property {
                Some(p) if seen & 1 << p == 0 => Some(Phase::Colon { property: p }),
                Some(_) => None,
                None => o.additional.map(|_| Phase::Colon {
                    property: ADDITIONAL,
                }),
            }
        }
        Step::Go { lex: next, .. } => {
            // Other keys never hold escapes, so they cannot spell a declared key another way.
            let other = o.additional.is_some()
                && !matches!(lex, Lex::Escape | Lex::Hex { .. })
                && b != b'\\';
            match declared.and_then(|t| o.keys.step(t, b)) {
                Some(t) if other || o.keys.below(t) & !seen != 0 => {
                    Some(Phase::Key { trie: t, lex: next })
                }
                Some(_) => None,
                None if other => Some(Phase::Key {
                    trie: OFF_TRIE,
                    lex: next,
                }),
                None => None,
            }
        }
        Step::Invalid => None,
    }
}
