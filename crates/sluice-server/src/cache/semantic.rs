//! The semantic index: per context (everything of a request but its last user message, as
//! a key), the embeddings of the questions answered in that context and the exact keys of
//! their entries. Entries expire with the exact cache's TTL and the index holds at most
//! `max_bytes` of vectors (the oldest go first: 100,000 vectors of all-MiniLM-L6-v2's 384
//! dimensions by default, 25,000 of a 1,536-dimension remote model's). An exact key is indexed once: a question
//! indexed again (stored again, or read back from the store) replaces its older self.
//!
//! A context's vectors are normalised (cosine is a dot product) and stored end to end, with
//! their 1-bit sign codes beside them. A lookup in a context of at most
//! [`Scan::exact_up_to`] vectors scores every one in `f32`; in a larger one it ranks all
//! codes by Hamming distance and scores only the [`Scan::rescore`] nearest in `f32` (the
//! figures and the recall of that pass are in BENCHMARKS.md). Candidates at or above the
//! threshold are tried best first through a check of the two questions' wording
//! ([`super::same_question`]).

use super::index_record::Question;
use super::vector_scan::{code_words, dot, hamming_all, push_code};
use sluice_store::{Key, UnixMs};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// Candidates a lookup tries at most (past the wording checks): for those whose entry is
/// gone, or that a reranker refuses.
pub const MAX_CANDIDATES: usize = 4;

/// How a context is scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Contexts of at most this many vectors are scored exactly, every vector in `f32`.
    pub exact_up_to: usize,
    /// In a larger context, the vectors nearest by sign code that are scored in `f32`.
    pub rescore: usize,
}

impl Default for Scan {
    fn default() -> Self {
        Self {
            exact_up_to: 8192,
            rescore: 512,
        }
    }
}

/// A stored question, apart from its vector.
struct Item {
    id: u64,
    key: Key,
    question: String,
    expires_at: UnixMs,
}

/// One context's questions: item `i`'s vector is `vectors[i * dim..][..dim]`, its code
/// `codes[i * words..][..words]`.
#[derive(Default)]
struct Context {
    dim: usize,
    vectors: Vec<f32>,
    codes: Vec<u64>,
    items: Vec<Item>,
}

impl Context {
    fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..][..self.dim]
    }

    fn push(&mut self, vector: &[f32], item: Item) {
        if self.dim != vector.len() {
            // Another embedding model: the old vectors cannot be compared with the new.
            *self = Context {
                dim: vector.len(),
                ..Context::default()
            };
        }
        self.vectors.extend_from_slice(vector);
        push_code(vector, &mut self.codes);
        self.items.push(item);
    }

    /// Removes item `id` (the last one takes its place); whether it was there.
    fn remove(&mut self, id: u64) -> bool {
        let Some(i) = self.items.iter().rposition(|it| it.id == id) else {
            return false;
        };
        let last = self.items.len() - 1;
        let (dim, words) = (self.dim, code_words(self.dim));
        self.vectors
            .copy_within(last * dim..(last + 1) * dim, i * dim);
        self.vectors.truncate(last * dim);
        self.codes
            .copy_within(last * words..(last + 1) * words, i * words);
        self.codes.truncate(last * words);
        self.items.swap_remove(i);
        true
    }

    /// Positions worth scoring in `f32` for `query`: all of them, or the nearest by code.
    fn shortlist(&self, query: &[f32], scan: Scan) -> Vec<usize> {
        let n = self.items.len();
        if n <= scan.exact_up_to.max(scan.rescore) {
            return (0..n).collect();
        }
        let mut code = Vec::with_capacity(code_words(self.dim));
        push_code(query, &mut code);
        let mut distances = Vec::with_capacity(n);
        hamming_all(&code, &self.codes, &mut distances);
        let mut order: Vec<(u32, u32)> = distances
            .iter()
            .enumerate()
            .map(|(i, d)| (*d, i as u32))
            .collect();
        order.select_nth_unstable(scan.rescore - 1);
        order.truncate(scan.rescore);
        order.into_iter().map(|(_, i)| i as usize).collect()
    }
}

/// Where an exact key's question is: its context and item id.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Place {
    context: Key,
    id: u64,
    expires_at: UnixMs,
}

#[derive(Default)]
struct Inner {
    contexts: HashMap<Key, Context>,
    /// The question indexed for each exact key.
    places: HashMap<Key, Place>,
    /// Insertion order, for eviction: exact key and item id (an id replaced since is
    /// skipped when its turn comes).
    order: VecDeque<(Key, u64)>,
    next_id: u64,
    /// Bytes of the vectors held.
    bytes: usize,
}

impl Inner {
    /// Removes `key`'s question, if indexed.
    fn remove_key(&mut self, key: &Key) {
        if let Some(place) = self.places.remove(key) {
            if let Some(ctx) = self.contexts.get_mut(&place.context) {
                if ctx.remove(place.id) {
                    self.bytes -= ctx.dim * 4;
                }
                if ctx.items.is_empty() {
                    self.contexts.remove(&place.context);
                }
            }
        }
    }

    /// Removes the oldest questions until their vectors take at most `max_bytes`, and drops
    /// the order's stale entries when they outnumber the live ones.
    fn bound(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes {
            let Some((key, id)) = self.order.pop_front() else {
                break;
            };
            if self.places.get(&key).is_some_and(|p| p.id == id) {
                self.remove_key(&key);
            }
        }
        if self.order.len() > 2 * self.places.len() + 1024 {
            let places = &self.places;
            self.order
                .retain(|(key, id)| places.get(key).is_some_and(|p| p.id == *id));
        }
    }
}

/// The index of one gateway (in memory).
pub struct SemanticIndex {
    inner: Mutex<Inner>,
    max_bytes: usize,
    scan: Scan,
}

/// A match: the entry's exact key and how similar its question is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// The exact cache's key of the answer.
    pub key: Key,
    /// Cosine similarity of the two questions' embeddings.
    pub similarity: f32,
}

/// A match with its question's text (for a check after the index's, such as a reranker).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The entry's key and similarity.
    pub found: Match,
    /// The stored question.
    pub question: String,
}

impl SemanticIndex {
    /// An empty index of at most `max_bytes` of vectors, scanned the default way.
    pub fn new(max_bytes: usize) -> Self {
        Self::with_scan(max_bytes, Scan::default())
    }

    /// An empty index of at most `max_bytes` of vectors, scanned as `scan` says.
    pub fn with_scan(max_bytes: usize, scan: Scan) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            scan: Scan {
                rescore: scan.rescore.max(1),
                ..scan
            },
        }
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.lock().places.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most similar question of `context` live at `now`, at or above `threshold`, that
    /// `same` accepts (called best first). `vector` is normalised.
    pub fn find(
        &self,
        context: &Key,
        vector: &[f32],
        threshold: f32,
        now: UnixMs,
        same: impl Fn(&str) -> bool,
    ) -> Option<Match> {
        let found = self.candidates(context, vector, (threshold, now), same, 1);
        found.into_iter().next().map(|c| c.found)
    }

    /// The `limit` most similar questions of `context` live at `now`, at or above
    /// `threshold`, that `same` accepts (called best first until `limit` are accepted),
    /// best first. `vector` is normalised.
    pub fn candidates(
        &self,
        context: &Key,
        vector: &[f32],
        (threshold, now): (f32, UnixMs),
        same: impl Fn(&str) -> bool,
        limit: usize,
    ) -> Vec<Candidate> {
        let inner = self.lock();
        let Some(ctx) = inner.contexts.get(context) else {
            return Vec::new();
        };
        if ctx.dim != vector.len() {
            return Vec::new();
        }
        let mut candidates: Vec<(f32, &Item)> = ctx
            .shortlist(vector, self.scan)
            .into_iter()
            .map(|i| (dot(ctx.vector(i), vector), &ctx.items[i]))
            .filter(|(s, item)| *s >= threshold && item.expires_at > now)
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        candidates
            .into_iter()
            .filter(|(_, i)| same(&i.question))
            .take(limit)
            .map(|(similarity, i)| Candidate {
                found: Match {
                    key: i.key,
                    similarity,
                },
                question: i.question.clone(),
            })
            .collect()
    }

    /// Indexes `question`, answered by the entry at `key` until `expires_at`; its vector
    /// is normalised. A question already indexed for `key` is replaced, unless it lives as
    /// long as this one or longer (a record read back from the store after a newer local store).
    /// Another key's question of the same answer in other words replaces nothing: both stay
    /// findable.
    pub fn insert(&self, question: Question, key: Key, expires_at: UnixMs) {
        let mut inner = self.lock();
        let dim = question.vector.len();
        // Another embedding model: the old vectors cannot be compared with the new.
        let stale: Vec<Key> = inner
            .contexts
            .get(&question.context)
            .filter(|ctx| ctx.dim != dim)
            .map(|ctx| ctx.items.iter().map(|it| it.key).collect())
            .unwrap_or_default();
        stale.iter().for_each(|k| inner.remove_key(k));
        if let Some(old) = inner.places.get(&key) {
            if old.expires_at >= expires_at {
                return;
            }
            inner.remove_key(&key);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let item = Item {
            id,
            key,
            question: question.text,
            expires_at,
        };
        inner
            .contexts
            .entry(question.context)
            .or_default()
            .push(&question.vector, item);
        inner.bytes += question.vector.len() * 4;
        inner.places.insert(
            key,
            Place {
                context: question.context,
                id,
                expires_at,
            },
        );
        inner.order.push_back((key, id));
        inner.bound(self.max_bytes);
    }

    /// Whether `key`'s question is indexed.
    pub fn contains(&self, key: &Key) -> bool {
        self.lock().places.contains_key(key)
    }

    /// Removes `key`'s question (its entry is gone from the cache).
    pub fn forget(&self, key: &Key) {
        self.lock().remove_key(key);
    }

    /// Drops everything (the cache was cleared).
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
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

    const NOW: UnixMs = 1_000_000;
    const LATER: UnixMs = NOW + 60_000;

    fn key(n: u8) -> Key {
        [n; 32]
    }

    fn q(context: u8, vector: Vec<f32>, text: impl ToString) -> Question {
        Question {
            context: key(context),
            vector,
            text: text.to_string(),
        }
    }

    #[test]
    fn finds_the_best_accepted_match_in_its_context_only() {
        let index = SemanticIndex::new(10 * 2 * 4);
        index.insert(q(1, normalise(vec![1.0, 0.0]), "a"), key(10), LATER);
        index.insert(q(1, normalise(vec![1.0, 0.2]), "b"), key(11), LATER);
        index.insert(q(2, normalise(vec![1.0, 0.0]), "c"), key(12), LATER);
        let q = normalise(vec![1.0, 0.01]);
        let m = index.find(&key(1), &q, 0.9, NOW, |_| true).unwrap();
        assert_eq!(m.key, key(10));
        assert!(m.similarity > 0.99);
        // The check refuses the best: the next one is served.
        assert_eq!(
            index.find(&key(1), &q, 0.9, NOW, |s| s == "b").unwrap().key,
            key(11)
        );
        // Below the threshold, or another context: nothing.
        assert!(index
            .find(&key(1), &normalise(vec![0.0, 1.0]), 0.9, NOW, |_| true)
            .is_none());
        assert!(index.find(&key(3), &q, 0.1, NOW, |_| true).is_none());
    }

    #[test]
    fn is_bounded_oldest_first_and_expires() {
        let index = SemanticIndex::new(2 * 4);
        for n in 0..3 {
            index.insert(q(1, vec![1.0], n.to_string()), key(n), LATER);
        }
        assert_eq!(index.len(), 2);
        assert!(index
            .find(&key(1), &[1.0], 0.5, NOW, |q| q == "0")
            .is_none());
        assert!(index
            .find(&key(1), &[1.0], 0.5, NOW, |q| q == "2")
            .is_some());
        index.insert(q(4, vec![1.0], "x"), key(9), NOW);
        assert!(index.find(&key(4), &[1.0], 0.5, NOW, |_| true).is_none());
    }

    /// A deterministic pseudo-random unit vector.
    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        normalise(
            (0..dim)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect(),
        )
    }

    #[test]
    fn a_large_context_is_shortlisted_by_code_and_still_finds_the_nearest() {
        let scan = Scan {
            exact_up_to: 8,
            rescore: 4,
        };
        let index = SemanticIndex::with_scan(1000 * 64 * 4, scan);
        for n in 0..200u64 {
            index.insert(
                q(1, unit(n, 64), n.to_string()),
                key((n % 250) as u8),
                LATER,
            );
        }
        // A query close to item 123: found among 200 though only 4 are scored in f32.
        let mut query = unit(123, 64);
        query[0] += 0.05;
        let query = normalise(query);
        let m = index.find(&key(1), &query, 0.9, NOW, |_| true).unwrap();
        assert_eq!(m.key, key(123));
        // Another dimension (the model changed) finds nothing, and replaces the context.
        assert!(index
            .find(&key(1), &unit(1, 32), 0.0, NOW, |_| true)
            .is_none());
        index.insert(q(1, unit(7, 32), "7"), key(7), LATER);
        assert!(index
            .find(&key(1), &unit(7, 32), 0.99, NOW, |_| true)
            .is_some());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn the_bound_is_bytes_so_wider_vectors_fit_fewer() {
        let index = SemanticIndex::new(4 * 16 * 4);
        for n in 0..10u64 {
            index.insert(q(1, unit(n, 16), n.to_string()), key(n as u8), LATER);
        }
        assert_eq!(index.len(), 4);
        // Another context of vectors four times as wide: one fits, the rest go.
        for n in 20..23u64 {
            index.insert(q(2, unit(n, 64), n.to_string()), key(n as u8), LATER);
        }
        assert_eq!(index.len(), 1);
        assert!(index.contains(&key(22)));
        index.forget(&key(22));
        assert!(index.is_empty());
        // What is forgotten is given back: four narrow vectors fit again.
        for n in 30..34u64 {
            index.insert(q(1, unit(n, 16), n.to_string()), key(n as u8), LATER);
        }
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn eviction_keeps_each_vector_with_its_question() {
        let index = SemanticIndex::new(3 * 16 * 4);
        for n in 0..5u64 {
            index.insert(q(1, unit(n, 16), n.to_string()), key(n as u8), LATER);
        }
        // 0 and 1 evicted (the last item moved into their places): 2, 3, 4 found by their
        // own vectors, under their own keys and questions.
        assert_eq!(index.len(), 3);
        for n in 2..5u64 {
            let m = index
                .find(&key(1), &unit(n, 16), 0.999, NOW, |q| q == n.to_string())
                .unwrap();
            assert_eq!(m.key, key(n as u8));
        }
        assert!(index
            .find(&key(1), &unit(0, 16), 0.999, NOW, |_| true)
            .is_none());
    }

    #[test]
    fn a_key_is_indexed_once_and_can_be_forgotten() {
        let index = SemanticIndex::new(2 * 16 * 4);
        index.insert(q(1, unit(1, 16), "old"), key(1), LATER);
        // Indexed again (stored again, or read back from the store): replaced.
        index.insert(q(1, unit(1, 16), "new"), key(1), LATER + 1);
        assert_eq!(index.len(), 1);
        assert!(index
            .find(&key(1), &unit(1, 16), 0.99, NOW, |t| t == "old")
            .is_none());
        assert!(index
            .find(&key(1), &unit(1, 16), 0.99, NOW, |t| t == "new")
            .is_some());
        // A record that expires sooner than what is indexed does not replace it.
        index.insert(q(1, unit(1, 16), "older"), key(1), LATER);
        assert!(index
            .find(&key(1), &unit(1, 16), 0.99, NOW, |t| t == "new")
            .is_some());
        // Replacements do not count against the bound: two keys fit.
        for n in 0..50 {
            index.insert(q(1, unit(2, 16), n), key(2), LATER + n);
        }
        assert_eq!(index.len(), 2);
        assert!(index.contains(&key(1)) && index.contains(&key(2)));
        index.forget(&key(1));
        assert!(!index.contains(&key(1)));
        assert!(index
            .find(&key(1), &unit(1, 16), 0.99, NOW, |_| true)
            .is_none());
        assert_eq!(index.len(), 1);
    }
}
