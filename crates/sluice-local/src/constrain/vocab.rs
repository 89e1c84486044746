//! The model's vocabulary as a byte trie, and the token mask of a matcher state.
//!
//! The trie is stored in preorder with each node's subtree end, so the mask is one pass over
//! an array: a node's byte is fed to its parent's states; where no state survives, the whole
//! subtree (every token starting with those bytes) is skipped. Inside a free string almost
//! every token is allowed and the pass visits most nodes; after structure (`{`, `:`, `,`)
//! almost all subtrees die at their first byte.

use super::matcher::{step, State};
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

/// A vocabulary's ordinary tokens as a byte trie, and the ids that end generation.
#[derive(Debug)]
pub(crate) struct TokenTrie {
    nodes: Vec<TrieNode>,
    tokens: Vec<u32>,
    depth: usize,
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
        let mut trie = Self {
            nodes: Vec::new(),
            tokens: Vec::with_capacity(sorted.len()),
            depth: 0,
            vocab_size,
            stop_ids: stop_ids.to_vec(),
        };
        let mut path: Vec<usize> = Vec::new();
        let mut previous: &[u8] = &[];
        for (token, id) in sorted {
            let common = token
                .iter()
                .zip(previous)
                .take_while(|(a, b)| a == b)
                .count();
            for closed in path.drain(common..) {
                trie.nodes[closed].end = trie.nodes.len() as u32;
            }
            for (depth, &byte) in token.iter().enumerate().skip(common) {
                path.push(trie.nodes.len());
                trie.nodes.push(TrieNode {
                    byte,
                    depth: depth as u16 + 1,
                    end: 0,
                    first: 0,
                    last: 0,
                });
            }
            let Some(&at) = path.last() else { continue };
            let node = &mut trie.nodes[at];
            if node.first == node.last {
                node.first = trie.tokens.len() as u32;
            }
            trie.tokens.push(id);
            node.last = trie.tokens.len() as u32;
            trie.depth = trie.depth.max(token.len());
            previous = token;
        }
        for closed in path {
            trie.nodes[closed].end = trie.nodes.len() as u32;
        }
        trie
    }

    pub(crate) fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The tokens allowed after `states`: those whose bytes keep a parse alive, and the stop
    /// ids where the value may end.
    pub(crate) fn mask(&self, grammar: &Grammar, states: &[State]) -> Mask {
        let mut mask = vec![0u64; self.vocab_size.div_ceil(64)];
        let mut set = |id: u32| mask[id as usize / 64] |= 1 << (id % 64);
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
                set(id);
            }
            i += 1;
        }
        if states.iter().any(State::accepts) {
            for &id in &self.stop_ids {
                set(id);
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
