//! The semantic index: per context (everything of a request but its last user message, as
//! a key), the embeddings of the questions answered in that context and the exact keys of
//! their entries. Entries expire with the exact cache's TTL and the index holds at most
//! `max_items` vectors (the oldest go first).
//!
//! A context's vectors are normalised (cosine is a dot product) and stored end to end, with
//! their 1-bit sign codes beside them. A lookup in a context of at most
//! [`Scan::exact_up_to`] vectors scores every one in `f32`; in a larger one it ranks all
//! codes by Hamming distance and scores only the [`Scan::rescore`] nearest in `f32` (the
//! figures and the recall of that pass are in BENCHMARKS.md). Candidates at or above the
//! threshold are tried best first through a check of the two questions' wording
//! ([`super::same_question`]).

use super::vector_scan::{code_words, dot, hamming_all, push_code};
use sluice_store::Key;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Vectors the index holds by default.
pub const DEFAULT_MAX_ITEMS: usize = 100_000;

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
    expires: Instant,
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

    /// Removes item `id` (the last one takes its place).
    fn remove(&mut self, id: u64) {
        let Some(i) = self.items.iter().position(|it| it.id == id) else {
            return;
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

#[derive(Default)]
struct Inner {
    contexts: HashMap<Key, Context>,
    /// Insertion order, for eviction: (context, item id).
    order: VecDeque<(Key, u64)>,
    next_id: u64,
}

/// The index of one gateway (in memory).
pub struct SemanticIndex {
    inner: Mutex<Inner>,
    max_items: usize,
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

impl SemanticIndex {
    /// An empty index of at most `max_items` vectors, scanned the default way.
    pub fn new(max_items: usize) -> Self {
        Self::with_scan(max_items, Scan::default())
    }

    /// An empty index of at most `max_items` vectors, scanned as `scan` says.
    pub fn with_scan(max_items: usize, scan: Scan) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_items: max_items.max(1),
            scan: Scan {
                rescore: scan.rescore.max(1),
                ..scan
            },
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
    /// accepts (called best first). `vector` is normalised.
    pub fn find(
        &self,
        context: &Key,
        vector: &[f32],
        threshold: f32,
        same: impl Fn(&str) -> bool,
    ) -> Option<Match> {
        let now = Instant::now();
        let inner = self.lock();
        let ctx = inner.contexts.get(context)?;
        if ctx.dim != vector.len() {
            return None;
        }
        let mut candidates: Vec<(f32, &Item)> = ctx
            .shortlist(vector, self.scan)
            .into_iter()
            .map(|i| (dot(ctx.vector(i), vector), &ctx.items[i]))
            .filter(|(s, item)| *s >= threshold && item.expires > now)
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

    /// Adds a question answered by the entry at `key`, for `ttl`; `vector` is normalised.
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
            key,
            question,
            expires: Instant::now() + ttl,
        };
        // The same answer asked again in other words replaces nothing: both stay findable.
        inner
            .contexts
            .entry(context)
            .or_default()
            .push(&vector, item);
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

fn remove(contexts: &mut HashMap<Key, Context>, context: &Key, id: u64) {
    if let Some(ctx) = contexts.get_mut(context) {
        ctx.remove(id);
        if ctx.items.is_empty() {
            contexts.remove(context);
        }
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
        let index = SemanticIndex::with_scan(1000, scan);
        let ttl = Duration::from_secs(60);
        for n in 0..200u64 {
            index.insert(
                key(1),
                unit(n, 64),
                key((n % 250) as u8),
                n.to_string(),
                ttl,
            );
        }
        // A query close to item 123: found among 200 though only 4 are scored in f32.
        let mut q = unit(123, 64);
        q[0] += 0.05;
        let q = normalise(q);
        let m = index.find(&key(1), &q, 0.9, |_| true).unwrap();
        assert_eq!(m.key, key(123));
        // Another dimension (the model changed) finds nothing, and replaces the context.
        assert!(index.find(&key(1), &unit(1, 32), 0.0, |_| true).is_none());
        index.insert(key(1), unit(7, 32), key(7), "7".into(), ttl);
        assert!(index.find(&key(1), &unit(7, 32), 0.99, |_| true).is_some());
    }

    #[test]
    fn eviction_keeps_each_vector_with_its_question() {
        let index = SemanticIndex::new(3);
        let ttl = Duration::from_secs(60);
        for n in 0..5u64 {
            index.insert(key(1), unit(n, 16), key(n as u8), n.to_string(), ttl);
        }
        // 0 and 1 evicted (the last item moved into their places): 2, 3, 4 found by their
        // own vectors, under their own keys and questions.
        assert_eq!(index.len(), 3);
        for n in 2..5u64 {
            let m = index
                .find(&key(1), &unit(n, 16), 0.999, |q| q == n.to_string())
                .unwrap();
            assert_eq!(m.key, key(n as u8));
        }
        assert!(index.find(&key(1), &unit(0, 16), 0.999, |_| true).is_none());
    }
}
