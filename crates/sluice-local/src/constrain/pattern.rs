//! A string's `pattern`: an ECMA-262 regular expression compiled to a DFA over the string's
//! decoded bytes, with, for each DFA state and character count, whether a JSON string can
//! still end there in a match within the string's length limits.
//!
//! The pattern is read with the `regex` crate's syntax where it agrees with ECMA-262, and made
//! to mean what ECMA-262 says: `\d`, `\w` and `\b` are ASCII, `\s` is ECMA-262's white space
//! and `.` excludes line terminators. What the syntax cannot take (look-around,
//! backreferences) and what ECMA-262 lacks (inline flags such as `(?i)`) is refused. A
//! JSON Schema pattern is unanchored: the string must contain a match, so the DFA is built for
//! `.*(?:pattern).*` and a state accepts where a match ends at the string's end.
//!
//! The DFA reads decoded characters: an escape (`\n`, `\"`, …) feeds the byte it stands for.
//! Which bytes a string can spell this way is [`spellable`]; `\u` escapes are not allowed in a
//! patterned string (a half-written `\u` escape could leave no character the pattern takes),
//! so control characters other than `\b\f\n\r\t` (and DEL) cannot appear in one.

use std::collections::{HashMap, VecDeque};

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::{primitives::StateID, start, syntax};
use regex_automata::{Anchored, MatchKind};
use regex_syntax::ast::{self, AssertionKind, Ast, ClassPerl, ClassPerlKind, ClassSetItem};

/// A transition to nowhere.
const DEAD: u32 = u32::MAX;
/// Most bytes the regex engine may spend on the DFA (and on building it).
const DFA_BYTES: usize = 8 << 20;
/// Most DFA states a pattern may have.
const MAX_STATES: usize = 20_000;
/// Most (state, character count) pairs the liveness table may hold.
const MAX_PAIRS: usize = 1 << 23;
/// Most state pairs searched to show two patterns disjoint.
const MAX_PRODUCT: usize = 1 << 18;

/// ECMA-262's `\s`: white space and line terminators.
const SPACE: &str =
    r"\t\n\x0B\f\r \xA0\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}";

/// A compiled pattern with its length limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    /// The pattern as the schema gives it.
    pub(crate) source: String,
    /// Byte → class (`u16::MAX`: a byte no string here can spell).
    classes: Vec<u16>,
    classes_len: usize,
    /// `state * classes_len + class` → state, or [`DEAD`].
    next: Vec<u32>,
    /// Whether a match ends where the string ends in this state.
    accepts: Vec<bool>,
    /// Bit `state * (limit + 1) + chars`: a match can still end within the limits.
    live: Vec<u64>,
    min: u32,
    max: Option<u32>,
}

/// Whether a JSON string in a patterned string can hold `byte` (raw, or by a short escape).
pub(crate) fn spellable(byte: u8) -> bool {
    !matches!(byte, 0x00..=0x07 | 0x0b | 0x0e..=0x1f | 0x7f)
}

/// The characters counted after one more character: as the matcher counts them, only as far
/// as the limits need (`max`, else `min`).
pub(crate) fn counted(chars: u32, min: u32, max: Option<u32>) -> u32 {
    if chars < max.unwrap_or(min) {
        chars + 1
    } else {
        chars
    }
}

fn starts_char(byte: u8) -> bool {
    !(0x80..=0xbf).contains(&byte)
}

// === impl Pattern ===

impl Pattern {
    /// Compiles `source` for strings of `min..=max` characters; the error says why not.
    pub(crate) fn compile(source: &str, min: u32, max: Option<u32>) -> Result<Self, String> {
        let ecma = to_ecma(source)?;
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(DFA_BYTES))
                    .determinize_size_limit(Some(DFA_BYTES)),
            )
            .syntax(syntax::Config::new())
            .build(&format!("(?s:.)*(?:{ecma})(?s:.)*"))
            .map_err(|e| e.to_string())?;
        let mut pattern = Self::tabulate(&dfa, source, min, max)?;
        pattern.live = pattern.liveness()?;
        if !pattern.live(0, 0) {
            return Err(format!(
                "no string{} that a JSON answer can spell (without `\\u` escapes) matches it",
                match (min, max) {
                    (0, None) => String::new(),
                    (min, None) => format!(" of at least {min} characters"),
                    (min, Some(max)) => format!(" of {min} to {max} characters"),
                }
            ));
        }
        Ok(pattern)
    }

    /// The DFA's states reachable from its start, renumbered from 0 (the start).
    fn tabulate(
        dfa: &dense::DFA<Vec<u32>>,
        source: &str,
        min: u32,
        max: Option<u32>,
    ) -> Result<Self, String> {
        // Classes: the DFA's, split by whether the byte starts a character.
        let mut classes = vec![u16::MAX; 256];
        let mut representatives: Vec<u8> = Vec::new();
        let mut seen: HashMap<(u8, bool), u16> = HashMap::new();
        for byte in (0..=255u8).filter(|&b| spellable(b)) {
            let key = (dfa.byte_classes().get(byte), starts_char(byte));
            let class = *seen.entry(key).or_insert_with(|| {
                representatives.push(byte);
                (representatives.len() - 1) as u16
            });
            classes[usize::from(byte)] = class;
        }
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| e.to_string())?;
        let mut index: HashMap<StateID, u32> = HashMap::from([(start, 0)]);
        let mut order = vec![start];
        let mut next = Vec::new();
        let mut accepts = Vec::new();
        let mut at = 0;
        while at < order.len() {
            let id = order[at];
            accepts.push(dfa.is_match_state(dfa.next_eoi_state(id)));
            for &byte in &representatives {
                let to = dfa.next_state(id, byte);
                if dfa.is_dead_state(to) {
                    next.push(DEAD);
                    continue;
                }
                let n = index.len() as u32;
                let to = *index.entry(to).or_insert_with(|| {
                    order.push(to);
                    n
                });
                next.push(to);
            }
            if order.len() > MAX_STATES {
                return Err(format!("its automaton has more than {MAX_STATES} states"));
            }
            at += 1;
        }
        Ok(Self {
            source: source.to_owned(),
            classes,
            classes_len: representatives.len(),
            next,
            accepts,
            live: Vec::new(),
            min,
            max,
        })
    }

    /// Which (state, characters) pairs can reach a match that ends within the limits: a
    /// backward search from the accepting pairs.
    fn liveness(&self) -> Result<Vec<u64>, String> {
        let states = self.accepts.len();
        let width = self.limit() as usize + 1;
        if states.saturating_mul(width) > MAX_PAIRS {
            return Err(format!(
                "its automaton ({states} states) times the length limit ({}) is too large",
                width - 1
            ));
        }
        // Whether each class starts a character.
        let mut starts = vec![false; self.classes_len];
        for byte in 0..=255u8 {
            if let Some(&class) = self
                .classes
                .get(usize::from(byte))
                .filter(|c| **c != u16::MAX)
            {
                starts[usize::from(class)] = starts_char(byte);
            }
        }
        let mut back: Vec<Vec<(u32, bool)>> = vec![Vec::new(); states];
        for from in 0..states {
            for (class, &starts) in starts.iter().enumerate() {
                let to = self.next[from * self.classes_len + class];
                if to != DEAD {
                    back[to as usize].push((from as u32, starts));
                }
            }
        }
        for edges in &mut back {
            edges.sort_unstable();
            edges.dedup();
        }
        let mut live = vec![0u64; (states * width).div_ceil(64)];
        let mut queue = VecDeque::new();
        let mark = |live: &mut Vec<u64>, queue: &mut VecDeque<(u32, u32)>, s: u32, c: u32| {
            let bit = s as usize * width + c as usize;
            if live[bit / 64] & 1 << (bit % 64) == 0 {
                live[bit / 64] |= 1 << (bit % 64);
                queue.push_back((s, c));
            }
        };
        for (s, _) in self.accepts.iter().enumerate().filter(|(_, a)| **a) {
            for c in self.min..width as u32 {
                mark(&mut live, &mut queue, s as u32, c);
            }
        }
        while let Some((to, c)) = queue.pop_front() {
            for &(from, starts) in &back[to as usize] {
                if !starts {
                    mark(&mut live, &mut queue, from, c);
                    continue;
                }
                // The counts `c0` with `counted(c0) == c`.
                if c > 0 {
                    mark(&mut live, &mut queue, from, c - 1);
                }
                if self.max.is_none() && c == self.limit() {
                    mark(&mut live, &mut queue, from, c);
                }
            }
        }
        Ok(live)
    }

    /// About how many bytes the pattern's tables hold.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.source.len()
            + self.classes.len() * 2
            + self.next.len() * 4
            + self.accepts.len()
            + self.live.len() * 8
    }

    /// Whether some string matches both patterns (lengths aside): a search of the product of
    /// their automata, `None` when it is too large to finish.
    pub(crate) fn meets(&self, other: &Pattern) -> Option<bool> {
        // Bytes that step both automata alike, one of each.
        let mut seen = HashMap::new();
        let bytes: Vec<u8> = (0..=255u8)
            .filter(|&b| spellable(b))
            .filter(|&b| {
                let key = (self.classes[usize::from(b)], other.classes[usize::from(b)]);
                seen.insert(key, ()).is_none()
            })
            .collect();
        let mut visited = std::collections::HashSet::from([(0u32, 0u32)]);
        let mut queue = VecDeque::from([(0u32, 0u32)]);
        while let Some((a, b)) = queue.pop_front() {
            if self.accepts(a) && other.accepts(b) {
                return Some(true);
            }
            for &byte in &bytes {
                let next = (self.step(a, byte), other.step(b, byte));
                if next.0 == DEAD || next.1 == DEAD || !visited.insert(next) {
                    continue;
                }
                if visited.len() > MAX_PRODUCT {
                    return None;
                }
                queue.push_back(next);
            }
        }
        Some(false)
    }

    /// Whether the pattern may match `text` (decoded; its length is the caller's to check):
    /// exactly, unless `text` has a byte no patterned string can spell ([`spellable`]), which
    /// the DFA does not read: then `true`, as the pattern may well take it.
    pub(crate) fn may_match(&self, text: &str) -> bool {
        if !text.bytes().all(spellable) {
            return true;
        }
        let state = text.bytes().fold(0, |state, byte| match state {
            DEAD => DEAD,
            state => self.step(state, byte),
        });
        self.accepts(state)
    }

    /// How far characters are counted.
    fn limit(&self) -> u32 {
        self.max.unwrap_or(self.min)
    }

    /// The state after `byte` (the string's decoded byte) from `state`.
    pub(crate) fn step(&self, state: u32, byte: u8) -> u32 {
        match self.classes[usize::from(byte)] {
            u16::MAX => DEAD,
            class => self.next[state as usize * self.classes_len + usize::from(class)],
        }
    }

    /// Whether a match can still end within the limits from `state` with `chars` counted.
    pub(crate) fn live(&self, state: u32, chars: u32) -> bool {
        if state == DEAD || chars > self.limit() {
            return false;
        }
        let bit = state as usize * (self.limit() as usize + 1) + chars as usize;
        self.live[bit / 64] & 1 << (bit % 64) != 0
    }

    /// Whether the string may end in `state` (its length is the matcher's to check).
    pub(crate) fn accepts(&self, state: u32) -> bool {
        state != DEAD && self.accepts[state as usize]
    }
}

/// `source` rewritten so that the `regex` crate reads it as ECMA-262 does.
fn to_ecma(source: &str) -> Result<String, String> {
    let ast = ast::parse::Parser::new()
        .parse(source)
        .map_err(|e| e.kind().to_string())?;
    let edits = ast::visit(&ast, Rewrite::default())?;
    let mut out = String::with_capacity(source.len() + 32);
    let mut from = 0;
    for (start, end, text) in edits {
        out.push_str(&source[from..start]);
        out.push_str(&text);
        from = end;
    }
    out.push_str(&source[from..]);
    Ok(out)
}

/// The edits (byte range, replacement, in order) that give the pattern ECMA-262's meaning.
#[derive(Default)]
struct Rewrite {
    edits: Vec<(usize, usize, String)>,
}

impl Rewrite {
    fn perl(&mut self, class: &ClassPerl) {
        let set = match class.kind {
            ClassPerlKind::Digit => "0-9",
            ClassPerlKind::Word => "0-9A-Za-z_",
            ClassPerlKind::Space => SPACE,
        };
        let not = if class.negated { "^" } else { "" };
        self.edit(&class.span, format!("[{not}{set}]"));
    }

    fn edit(&mut self, span: &ast::Span, text: String) {
        self.edits.push((span.start.offset, span.end.offset, text));
    }
}

impl ast::Visitor for Rewrite {
    type Output = Vec<(usize, usize, String)>;
    type Err = String;

    fn finish(mut self) -> Result<Self::Output, String> {
        self.edits.sort_by_key(|e| e.0);
        Ok(self.edits)
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), String> {
        match ast {
            Ast::ClassPerl(class) => self.perl(class),
            Ast::Dot(span) => self.edit(span, r"[^\n\r\x{2028}\x{2029}]".into()),
            Ast::Assertion(a) => match a.kind {
                AssertionKind::WordBoundary => self.edit(&a.span, r"(?-u:\b)".into()),
                AssertionKind::NotWordBoundary => self.edit(&a.span, r"(?-u:\B)".into()),
                // `^` and `$` (text anchors: no flag makes them line anchors).
                AssertionKind::StartLine
                | AssertionKind::EndLine
                | AssertionKind::StartText
                | AssertionKind::EndText => {}
                _ => return Err("this assertion is not ECMA-262's".into()),
            },
            Ast::Flags(_) => return Err("inline flags such as `(?i)` are not ECMA-262".into()),
            Ast::Group(g) => {
                if let ast::GroupKind::NonCapturing(flags) = &g.kind {
                    if !flags.items.is_empty() {
                        return Err("inline flags such as `(?i:…)` are not ECMA-262".into());
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), String> {
        if let ClassSetItem::Perl(class) = item {
            self.perl(class);
        }
        Ok(())
    }
}
