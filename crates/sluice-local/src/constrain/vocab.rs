//! The model's vocabulary as a byte trie, and the token mask of a matcher state.
//!
//! The trie is stored in preorder with each node's subtree end, so the mask is one pass over
//! an array: a node's byte is fed to its parent's states; where no state survives, the whole
//! subtree (every token starting with those bytes) is skipped. Inside a free string almost
//! every token is allowed and the pass visits most nodes; after structure (`{`, `:`, `,`)
//! almost all subtrees die at their first byte.

use super::matcher::{in_patterned_string, in_plain_string, plain_chars, step, InPattern, State};
use super::pattern::counted;
use super::schema::Grammar;

/// One node: the token bytes from the root to here end with `byte`.
#[derive(Debug, Clone, Copy)]
struct TrieNode {
    byte: u8,
    /// Bytes from the root (the root's children are at depth 1).
    depth: u16,
    /// Index just past this node's subtree.
    end: u32,
    /// `tokens[first..last]`: the ids whose bytes end here.
    first: u32,
    last: u32,
}

/// Tokens in preorder trie form.
#[derive(Debug, Default)]
struct Walk {
    nodes: Vec<TrieNode>,
    tokens: Vec<u32>,
    depth: usize,
}

// === impl Walk ===

impl Walk {
    /// The trie of `sorted` (bytes ascending).
    fn new(sorted: &[(&[u8], u32)]) -> Self {
        let mut walk = Self::default();
        let mut path: Vec<usize> = Vec::new();
        let mut previous: &[u8] = &[];
        for &(token, id) in sorted {
            let common = token
                .iter()
                .zip(previous)
                .take_while(|(a, b)| a == b)
                .count();
            for closed in path.drain(common..) {
                walk.nodes[closed].end = walk.nodes.len() as u32;
            }
            for (depth, &byte) in token.iter().enumerate().skip(common) {
                path.push(walk.nodes.len());
                walk.nodes.push(TrieNode {
                    byte,
                    depth: depth as u16 + 1,
                    end: 0,
                    first: 0,
                    last: 0,
                });
            }
            let Some(&at) = path.last() else { continue };
            let node = &mut walk.nodes[at];
            if node.first == node.last {
                node.first = walk.tokens.len() as u32;
            }
            walk.tokens.push(id);
            node.last = walk.tokens.len() as u32;
            walk.depth = walk.depth.max(token.len());
            previous = token;
        }
        for closed in path {
            walk.nodes[closed].end = walk.nodes.len() as u32;
        }
        walk
    }

    /// Sets the tokens whose bytes keep one of `states` alive.
    fn walk(&self, grammar: &Grammar, states: &[State], mask: &mut Mask) {
        let mut levels: Vec<Vec<State>> = vec![Vec::new(); self.depth + 1];
        levels[0].extend_from_slice(states);
        let mut i = 0;
        while i < self.nodes.len() {
            let node = self.nodes[i];
            let depth = usize::from(node.depth);
            let (parents, children) = levels.split_at_mut(depth);
            let (parent, child) = (&parents[depth - 1], &mut children[0]);
            child.clear();
            for state in parent {
                step(grammar, state, node.byte, child);
            }
            if child.is_empty() {
                i = node.end as usize;
                continue;
            }
            for &id in &self.tokens[node.first as usize..node.last as usize] {
                set(mask, id);
            }
            i += 1;
        }
    }
}

impl Walk {
    /// Sets the tokens (all plain: see `TokenTrie`) whose bytes keep a patterned string
    /// alive: the pattern's DFA and character count stepped per trie node, a subtree skipped
    /// where no match can be finished any more (as the matcher steps a patterned string).
    fn walk_pattern(&self, at: &InPattern<'_>, mask: &mut Mask) {
        let p = at.pattern;
        let mut levels: Vec<(u32, u32)> = vec![(0, 0); self.depth + 1];
        levels[0] = (at.dfa, at.chars);
        let mut i = 0;
        while i < self.nodes.len() {
            let node = self.nodes[i];
            let depth = usize::from(node.depth);
            let (dfa, chars) = levels[depth - 1];
            let mut next = None;
            if (0x80..=0xbf).contains(&node.byte) {
                next = Some(chars);
            } else if at.max.is_none_or(|max| chars < max) {
                next = Some(counted(chars, at.min, at.max));
            }
            let dfa = p.step(dfa, node.byte);
            match next {
                Some(chars) if p.live(dfa, chars) => {
                    levels[depth] = (dfa, chars);
                    for &id in &self.tokens[node.first as usize..node.last as usize] {
                        set(mask, id);
                    }
                    i += 1;
                }
                _ => i = node.end as usize,
            }
        }
    }
}

fn set(mask: &mut Mask, id: u32) {
    mask[id as usize / 64] |= 1 << (id % 64);
}

/// A vocabulary's ordinary tokens as a byte trie, and the ids that end generation.
///
/// Inside a string most tokens are plain text, allowed whatever comes after the string: they
/// are kept apart with their character counts (`plain`), and only the others (`special`:
/// tokens with a quote, a backslash, a control byte or broken UTF-8) are walked there.
#[derive(Debug)]
pub(crate) struct TokenTrie {
    all: Walk,
    special: Walk,
    /// Tokens that stay inside a string from a character boundary, with their characters.
    plain: Vec<(u32, u32)>,
    /// The same tokens as a trie, walked with a string's pattern.
    plain_walk: Walk,
    vocab_size: usize,
    stop_ids: Vec<u32>,
}

/// Allowed tokens: one bit per vocabulary id.
pub(crate) type Mask = Vec<u64>;

// === impl TokenTrie ===

impl TokenTrie {
    /// `bytes(id)` for ids `0..vocab_size`; empty bytes (control tokens) and `stop_ids` are never
    /// part of a value.
    pub(crate) fn new<'a>(
        vocab_size: usize,
        bytes: impl Fn(u32) -> &'a [u8],
        stop_ids: &[u32],
    ) -> Self {
        let mut sorted: Vec<(&[u8], u32)> = (0..vocab_size as u32)
            .filter(|id| !stop_ids.contains(id))
            .map(|id| (bytes(id), id))
            .filter(|(b, _)| !b.is_empty())
            .collect();
        sorted.sort_unstable();
        let mut plain = Vec::new();
        let mut plain_tokens = Vec::new();
        let mut special = Vec::new();
        for &(token, id) in &sorted {
            match plain_chars(token) {
                Some(chars) => {
                    plain.push((id, chars));
                    plain_tokens.push((token, id));
                }
                None => special.push((token, id)),
            }
        }
        Self {
            all: Walk::new(&sorted),
            special: Walk::new(&special),
            plain,
            plain_walk: Walk::new(&plain_tokens),
            vocab_size,
            stop_ids: stop_ids.to_vec(),
        }
    }

    /// The mask by the whole trie walked with the matcher (for tests of the shortcuts).
    #[cfg(test)]
    pub(crate) fn mask_walked(&self, grammar: &Grammar, states: &[State]) -> Mask {
        let mut mask = vec![0u64; self.vocab_size.div_ceil(64)];
        self.all.walk(grammar, states, &mut mask);
        if states.iter().any(State::accepts) {
            for &id in &self.stop_ids {
                set(&mut mask, id);
            }
        }
        mask
    }

    pub(crate) fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The tokens allowed after `states`: those whose bytes keep a parse alive, and the stop
    /// ids where the value may end.
    pub(crate) fn mask(&self, grammar: &Grammar, states: &[State]) -> Mask {
        let mut mask = vec![0u64; self.vocab_size.div_ceil(64)];
        if let Some(room) = in_plain_string(grammar, states) {
            for &(id, chars) in &self.plain {
                if chars <= room {
                    set(&mut mask, id);
                }
            }
            self.special.walk(grammar, states, &mut mask);
        } else if let Some(at) = in_patterned_string(grammar, states) {
            self.plain_walk.walk_pattern(&at, &mut mask);
            self.special.walk(grammar, states, &mut mask);
        } else {
            self.all.walk(grammar, states, &mut mask);
        }
        if states.iter().any(State::accepts) {
            for &id in &self.stop_ids {
                set(&mut mask, id);
            }
        }
        mask
    }
}

/// Whether `id` is in `mask`.
pub(crate) fn allows(mask: &[u64], id: u32) -> bool {
    mask.get(id as usize / 64)
        .is_some_and(|w| w & 1 << (id % 64) != 0)
}
