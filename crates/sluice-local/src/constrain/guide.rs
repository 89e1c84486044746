//! [`Constraint`]: one request's constrained sampling: the mask before each token, the
//! matcher advanced by the token sampled.
//!
//! Masks are cached per matcher state set: inside a long string or between array items the
//! state repeats, and its mask is computed once.

use std::collections::HashMap;
use std::sync::Arc;

use super::matcher::{Matcher, State};
use super::schema::Grammar;
use super::vocab::{allows, Mask, TokenTrie};

/// Masks kept per request before the cache starts over.
const CACHE_CAPACITY: usize = 256;

/// Why a token could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// No token of the vocabulary continues the value (e.g. the nesting limit was hit).
    #[error("no token of the vocabulary can continue the constrained output")]
    Stuck,
    /// The token sampled was not allowed (a sampler that ignored the mask).
    #[error("token {0} does not fit the constrained output")]
    Rejected(u32),
}

/// A request's constraint over a model's vocabulary.
#[derive(Debug)]
pub struct Constraint {
    matcher: Matcher,
    trie: Arc<TokenTrie>,
    cache: HashMap<Vec<State>, Arc<Mask>>,
    /// The current state set's mask, once asked for.
    current: Option<Arc<Mask>>,
}

// === impl Constraint ===

impl Constraint {
    pub(crate) fn new(grammar: Arc<Grammar>, trie: Arc<TokenTrie>) -> Self {
        Self {
            matcher: Matcher::new(grammar),
            trie,
            cache: HashMap::new(),
            current: None,
        }
    }

    /// The tokens allowed next.
    pub(crate) fn mask(&mut self) -> Arc<Mask> {
        if let Some(mask) = &self.current {
            return Arc::clone(mask);
        }
        let mask = match self.cache.get(&self.matcher.states) {
            Some(mask) => Arc::clone(mask),
            None => {
                let mask = Arc::new(self.trie.mask(self.matcher.grammar(), &self.matcher.states));
                if self.cache.len() >= CACHE_CAPACITY {
                    self.cache.clear();
                }
                self.cache
                    .insert(self.matcher.states.clone(), Arc::clone(&mask));
                mask
            }
        };
        self.current = Some(Arc::clone(&mask));
        mask
    }

    /// Sets the logits of disallowed tokens to −∞ (`logits`: one per vocabulary id).
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        let mask = self.mask();
        let mut any = false;
        for (id, logit) in logits.iter_mut().enumerate() {
            if allows(&mask, id as u32) {
                any = true;
            } else {
                *logit = f32::NEG_INFINITY;
            }
        }
        if any {
            Ok(())
        } else {
            Err(ConstraintError::Stuck)
        }
    }

    /// Takes the token sampled (`bytes`: what it decodes to); returns whether it ends the
    /// output (a stop token, allowed only once the value is complete).
    pub fn accept(&mut self, id: u32, bytes: &[u8]) -> Result<bool, ConstraintError> {
        if self.trie.stop_ids().contains(&id) {
            return if self.matcher.accepts() {
                Ok(true)
            } else {
                Err(ConstraintError::Rejected(id))
            };
        }
        if bytes.is_empty() || !self.matcher.advance(bytes) {
            return Err(ConstraintError::Rejected(id));
        }
        self.current = None;
        Ok(false)
    }

    /// Feeds text already generated (a call's first bytes, after its marker); `false` if it
    /// cannot begin the value.
    pub(crate) fn advance(&mut self, bytes: &[u8]) -> bool {
        self.current = None;
        bytes.is_empty() || self.matcher.advance(bytes)
    }

    #[cfg(test)]
    pub(crate) fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Whether the value is complete and nothing but a stop token may follow.
    pub fn finished(&self) -> bool {
        self.matcher.finished()
    }
}
