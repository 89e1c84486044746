//! The semantic index: per context (everything of a request but its last user message, as
//! a key), the embeddings of the questions answered in that context and the exact keys of
//! their entries. A lookup is an exact scan of the context's vectors (normalised, so cosine
//! is a dot product), best first, through a check of the two questions' wording
//! ([`super::same_question`]); entries expire with the exact cache's TTL and the index holds
//! at most `max_items` vectors (the oldest go first).

use sluice_store::Key;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Vectors the index holds by default.
pub const DEFAULT_MAX_ITEMS: usize = 100_000;

/// A stored question.
struct Item {
    id: u64,
    vector: Vec<f32>,
    key: Key,
    question: String,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    contexts: HashMap<Key, Vec<Item>>,
    /// Insertion order, for eviction: (context, item id).
    order: VecDeque<(Key, u64)>,
    next_id: u64,
}

/// The index of one gateway (in memory).
pub struct SemanticIndex {
    inner: Mutex<Inner>,
    max_items: usize,
}

/// A match: the entry's exact key and how similar its question is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// The exact cache's key of the answer.
    pub key: Key,
    /// Cosine similarity of the two questions' embeddings.
    pub similarity: f32,
}

impl SemanticIndex {
    /// An empty index of at most `max_items` vectors.
    pub fn new(max_items: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_items: max_items.max(1),
        }
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most similar live question of `context` at or above `threshold` that `same`
    /// accepts (called best first).
    pub fn find(
        &self,
        context: &Key,
        vector: &[f32],
        threshold: f32,
        same: impl Fn(&str) -> bool,
    ) -> Option<Match> {
        let now = Instant::now();
        let inner = self.lock();
        let items = inner.contexts.get(context)?;
        let mut candidates: Vec<(f32, &Item)> = items
            .iter()
            .filter(|i| i.expires > now)
            .map(|i| (dot(&i.vector, vector), i))
            .filter(|(s, _)| *s >= threshold)
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        candidates
            .into_iter()
            .find(|(_, i)| same(&i.question))
            .map(|(similarity, i)| Match {
                key: i.key,
                similarity,
            })
    }

    /// Adds a question answered by the entry at `key`, for `ttl`.
    pub fn insert(
        &self,
        context: Key,
        vector: Vec<f32>,
        key: Key,
        question: String,
        ttl: Duration,
    ) {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let item = Item {
            id,
            vector,
            key,
            question,
            expires: Instant::now() + ttl,
        };
        let items = inner.contexts.entry(context).or_default();
        // The same answer asked again in other words replaces nothing: both stay findable.
        items.push(item);
        inner.order.push_back((context, id));
        while inner.order.len() > self.max_items {
            if let Some((ctx, id)) = inner.order.pop_front() {
                remove(&mut inner.contexts, &ctx, id);
            }
        }
    }

    /// Drops everything (the cache was cleared).
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn remove(contexts: &mut HashMap<Key, Vec<Item>>, context: &Key, id: u64) {
    if let Some(items) = contexts.get_mut(context) {
        items.retain(|i| i.id != id);
        if items.is_empty() {
            contexts.remove(context);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `v` scaled to length 1 (a zero vector stays zero).
pub fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        [n; 32]
    }

    #[test]
    fn finds_the_best_accepted_match_in_its_context_only() {
        let index = SemanticIndex::new(10);
        let ttl = Duration::from_secs(60);
        index.insert(key(1), normalise(vec![1.0, 0.0]), key(10), "a".into(), ttl);
        index.insert(key(1), normalise(vec![1.0, 0.2]), key(11), "b".into(), ttl);
        index.insert(key(2), normalise(vec![1.0, 0.0]), key(12), "c".into(), ttl);
        let q = normalise(vec![1.0, 0.01]);
        let m = index.find(&key(1), &q, 0.9, |_| true).unwrap();
        assert_eq!(m.key, key(10));
        assert!(m.similarity > 0.99);
        // The check refuses the best: the next one is served.
        assert_eq!(
            index.find(&key(1), &q, 0.9, |s| s == "b").unwrap().key,
            key(11)
        );
        // Below the threshold, or another context: nothing.
        assert!(index
            .find(&key(1), &normalise(vec![0.0, 1.0]), 0.9, |_| true)
            .is_none());
        assert!(index.find(&key(3), &q, 0.1, |_| true).is_none());
    }

    #[test]
    fn is_bounded_oldest_first_and_expires() {
        let index = SemanticIndex::new(2);
        let ttl = Duration::from_secs(60);
        for n in 0..3 {
            index.insert(key(1), vec![1.0], key(n), n.to_string(), ttl);
        }
        assert_eq!(index.len(), 2);
        assert!(index.find(&key(1), &[1.0], 0.5, |q| q == "0").is_none());
        assert!(index.find(&key(1), &[1.0], 0.5, |q| q == "2").is_some());
        index.insert(key(4), vec![1.0], key(9), "x".into(), Duration::ZERO);
        assert!(index.find(&key(4), &[1.0], 0.5, |_| true).is_none());
    }
}
