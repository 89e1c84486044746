//! The response cache: exact lookups in an in-memory tier in front of a persistent store
//! (SQLite in the data directory, or Redis shared by every replica), request coalescing,
//! and the accounting of what hits saved.
//!
//! Stages of one cacheable request (see `pipeline/cache.rs`): key (`sluice_core::cache`), lookup
//! (memory, then the store; then the [`semantic`] stage, on a miss),
//! coalescing ([`flight`]), the upstream call, then the store of a successful, complete
//! answer. A store that fails degrades to a miss and a metric, never to a failed request.

pub mod entry;
pub mod flight;
pub mod index_record;
#[cfg(test)]
mod index_tests;
pub mod same_question;
pub mod semantic;
pub mod text;
pub mod vector_scan;

use crate::metrics::Histogram;
use entry::Answer;
use flight::Flights;
use index_record::Question;
use sluice_core::config::CacheConfig;
use sluice_store::{CacheStore, CounterDelta, IndexCursor, Key, MemoryTier};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheStatus {
    /// Not used (no cache, policy off, not deterministic, `no-cache`).
    #[default]
    Bypass,
    /// Looked up, not found: answered upstream (and stored, when allowed).
    Miss,
    /// Answered from the cache.
    Hit,
    /// Answered by an identical request in flight.
    Coalesced,
    /// Answered from the cache by a question worded differently ([`semantic`]).
    SemanticHit,
}

impl CacheStatus {
    /// The spend log's word for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Miss => "miss",
            Self::Hit => "hit",
            Self::Coalesced => "coalesced",
            Self::SemanticHit => "semantic-hit",
        }
    }

    /// `x-sluice-cache`: a coalesced answer is a hit (with `x-sluice-coalesced: true`).
    pub const fn header(self) -> &'static str {
        match self {
            Self::Coalesced => "hit",
            other => other.as_str(),
        }
    }

    /// Served without an upstream call of its own.
    pub const fn served(self) -> bool {
        matches!(self, Self::Hit | Self::Coalesced | Self::SemanticHit)
    }
}

/// Counters of the cache, in atomics.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    /// Answered from the cache.
    pub hits: AtomicU64,
    /// Looked up, not found.
    pub misses: AtomicU64,
    /// Cache not used (policy off, non-deterministic, directives).
    pub bypasses: AtomicU64,
    /// Answered from an identical request's flight.
    pub coalesced: AtomicU64,
    /// Answered from the cache by a question worded differently.
    pub semantic_hits: AtomicU64,
    /// Semantic candidates at or above the threshold that the wording checks refused.
    pub semantic_refused: AtomicU64,
    /// Semantic candidates past the wording checks that the reranker refused.
    pub semantic_rerank_refused: AtomicU64,
    /// Answers stored.
    pub stores: AtomicU64,
    /// Answers not stored: larger than `max_entry_bytes`.
    pub too_large: AtomicU64,
    /// Store lookups that failed (counted as misses).
    pub store_get_errors: AtomicU64,
    /// Nano-USD that hits and coalesced answers saved.
    pub saved_nano_usd: AtomicU64,
    /// Upstream milliseconds that hits and coalesced answers saved.
    pub saved_ms: AtomicU64,
    /// Time to answer a hit.
    pub hit_latency: Histogram,
}

/// The cache of one gateway.
pub struct Cache {
    memory: MemoryTier,
    store: Option<CacheStore>,
    /// Coalescing.
    pub flights: Arc<Flights>,
    /// Counters.
    pub metrics: CacheMetrics,
    /// What the persisted counters have been sent so far.
    flushed: Mutex<CounterDelta>,
    /// Which store is behind the memory tier (`sqlite`, `redis`).
    pub store_kind: &'static str,
    /// The semantic stage's index.
    pub semantic: semantic::SemanticIndex,
    /// How far the index has read the store's records (see [`Cache::sync_index`]).
    index_cursor: tokio::sync::Mutex<IndexCursor>,
    /// Whether the index has read the store's records once.
    index_loaded: AtomicBool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("store", &self.store_kind)
            .field("memory_entries", &self.memory.len())
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Whether the store behind the memory tier answers a lookup (none: yes).
    pub async fn store_answers(&self) -> Result<(), sluice_store::StoreError> {
        match &self.store {
            None => Ok(()),
            Some(s) => s
                .get(&[0u8; 32], sluice_store::unix_now_ms())
                .await
                .map(drop),
        }
    }

    /// A cache with `store` behind an in-memory tier of `config.memory_bytes`.
    pub fn new(config: &CacheConfig, store: Option<CacheStore>) -> Self {
        let store_kind = match &store {
            Some(CacheStore::Redis(_)) => "redis",
            Some(CacheStore::Sqlite(_)) => "sqlite",
            None => "memory",
        };
        Self {
            memory: MemoryTier::new(config.memory_bytes),
            store,
            flights: Arc::new(Flights::default()),
            metrics: CacheMetrics::default(),
            flushed: Mutex::new(CounterDelta::default()),
            store_kind,
            semantic: semantic::SemanticIndex::new(config.semantic_bytes),
            index_cursor: tokio::sync::Mutex::new(IndexCursor::default()),
            index_loaded: AtomicBool::new(false),
        }
    }

    /// Looks `key` up: the memory tier, then the store (whose hits are kept in memory).
    pub async fn lookup(&self, key: &Key) -> Option<Answer> {
        let now = unix_ms();
        if let Some((raw, _)) = self.memory.get(key, now) {
            return Answer::decode(&raw);
        }
        let store = self.store.as_ref()?;
        match store.get(key, now).await {
            Ok(Some((raw, expires_at))) => {
                let answer = Answer::decode(&raw)?;
                self.memory.insert(*key, raw, expires_at, now);
                Some(answer)
            }
            Ok(None) => None,
            Err(e) => {
                self.metrics.store_get_errors.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "cache store lookup failed; counted as a miss");
                None
            }
        }
    }

    /// Stores `answer` under `key` for `ttl`, unless it is over `max_bytes`, with the
    /// `question` it answers for the semantic stage (indexed, and kept with the entry in
    /// the store). The memory tier and the index have it at once; the store gets it in the
    /// background.
    pub fn insert(
        &self,
        key: Key,
        answer: &Answer,
        (ttl, max_bytes): (Duration, u64),
        question: Option<Question>,
    ) -> bool {
        let raw = answer.encode();
        if raw.len() as u64 > max_bytes {
            self.metrics.too_large.fetch_add(1, Relaxed);
            return false;
        }
        let now = unix_ms();
        let expires_at = now.saturating_add(ttl.as_millis() as u64);
        self.memory.insert(key, raw.clone(), expires_at, now);
        match (&self.store, question) {
            (Some(store), Some(q)) => {
                store.put_indexed(key, raw, expires_at, q.encode());
                self.semantic.insert(q, key, expires_at);
            }
            (Some(store), None) => store.put(key, raw, expires_at),
            (None, Some(q)) => self.semantic.insert(q, key, expires_at),
            (None, None) => {}
        }
        self.metrics.stores.fetch_add(1, Relaxed);
        true
    }

    /// The answer of the most similar question of `context` at or above `threshold` that
    /// `same` accepts, and its similarity (see [`Self::similar`] and [`Self::indexed`]).
    pub async fn find_similar(
        &self,
        context: &Key,
        vector: &[f32],
        threshold: f32,
        same: impl Fn(&str) -> bool,
    ) -> Option<(Answer, f32)> {
        for c in self.similar(context, vector, threshold, same).await {
            if let Some(answer) = self.indexed(&c.found.key).await {
                return Some((answer, c.found.similarity));
            }
        }
        None
    }

    /// The [`semantic::MAX_CANDIDATES`] questions of `context` most similar to `vector` at
    /// or above `threshold` that `same` accepts, best first; the store's records are read
    /// first if they never were.
    pub async fn similar(
        &self,
        context: &Key,
        vector: &[f32],
        threshold: f32,
        same: impl Fn(&str) -> bool,
    ) -> Vec<semantic::Candidate> {
        self.load_index().await;
        let at = (threshold, unix_ms());
        self.semantic
            .candidates(context, vector, at, same, semantic::MAX_CANDIDATES)
    }

    /// The answer of an indexed question's entry; when the entry is gone from the cache
    /// (expired, or evicted from both tiers), the question leaves the index.
    pub async fn indexed(&self, key: &Key) -> Option<Answer> {
        let answer = self.lookup(key).await;
        if answer.is_none() {
            self.semantic.forget(key);
        }
        answer
    }

    /// Reads the store's index records into the index once, before the first semantic
    /// lookup (a restarted gateway keeps its semantic entries); later calls return at once.
    pub async fn load_index(&self) {
        if !self.index_loaded.load(Relaxed) {
            let mut cursor = self.index_cursor.lock().await;
            if !self.index_loaded.load(Relaxed) {
                self.read_index(&mut cursor).await;
            }
        }
    }

    /// Reads the index records the store has gained since the last read (on Redis, those
    /// the other replicas wrote); skipped when a read is already under way. Run every
    /// second by the gateway's background task.
    pub async fn sync_index(&self) {
        if let Ok(mut cursor) = self.index_cursor.try_lock() {
            self.read_index(&mut cursor).await;
        }
    }

    async fn read_index(&self, cursor: &mut IndexCursor) {
        let Some(store) = &self.store else {
            self.index_loaded.store(true, Relaxed);
            return;
        };
        match store.index_since(cursor, unix_ms()).await {
            Ok(records) => {
                for r in records {
                    if let Some(q) = Question::decode(&r.record) {
                        self.semantic.insert(q, r.key, r.expires_at);
                    }
                }
                self.index_loaded.store(true, Relaxed);
            }
            Err(e) => {
                self.metrics.store_get_errors.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "semantic index: reading the store's records failed");
                // Not retried per request: the background task tries again.
                self.index_loaded.store(true, Relaxed);
            }
        }
    }

    /// Counts an answer served without an upstream call.
    pub fn saved(&self, answer: &Answer) {
        self.metrics
            .saved_nano_usd
            .fetch_add(answer.meta.cost_nano_usd, Relaxed);
        self.metrics
            .saved_ms
            .fetch_add(answer.meta.latency_ms, Relaxed);
    }

    /// Drops every entry of the memory tier and of the store; how many the store held.
    pub async fn clear(&self) -> Result<u64, sluice_store::StoreError> {
        self.memory.clear();
        self.semantic.clear();
        match &self.store {
            Some(s) => s.clear().await,
            None => Ok(0),
        }
    }

    /// The store's entries, bytes and persisted counters.
    pub async fn stats(&self) -> Result<sluice_store::CacheStats, sluice_store::StoreError> {
        match &self.store {
            Some(s) => s.stats().await,
            None => Ok(sluice_store::CacheStats::default()),
        }
    }

    /// Sends the counters gathered since the last call to the store (where `sluice cache
    /// stats` reads them).
    pub fn flush_counters(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let m = &self.metrics;
        let now = CounterDelta {
            hits: m.hits.load(Relaxed) + m.coalesced.load(Relaxed),
            misses: m.misses.load(Relaxed),
            saved_nano_usd: m.saved_nano_usd.load(Relaxed),
            saved_ms: m.saved_ms.load(Relaxed),
        };
        let mut last = self
            .flushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let delta = CounterDelta {
            hits: now.hits - last.hits,
            misses: now.misses - last.misses,
            saved_nano_usd: now.saved_nano_usd - last.saved_nano_usd,
            saved_ms: now.saved_ms - last.saved_ms,
        };
        *last = now;
        drop(last);
        if delta != CounterDelta::default() {
            store.add_counters(delta);
        }
    }

    /// Flushes counters and waits until the store has every write (at shutdown).
    pub async fn flush(&self) {
        self.flush_counters();
        if let Some(s) = &self.store {
            s.flush().await;
        }
    }

    /// Appends the cache's series to a Prometheus exposition.
    pub fn render(&self, out: &mut String) {
        let m = &self.metrics;
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "sluice_cache_hits_total",
                "Requests answered from the cache.",
                &m.hits,
            ),
            (
                "sluice_cache_misses_total",
                "Cacheable requests not found in the cache.",
                &m.misses,
            ),
            (
                "sluice_cache_bypass_total",
                "Requests that did not use the cache (policy off, non-deterministic, directives).",
                &m.bypasses,
            ),
            (
                "sluice_cache_coalesced_total",
                "Requests answered by waiting for an identical request in flight.",
                &m.coalesced,
            ),
            (
                "sluice_cache_semantic_hits_total",
                "Requests answered from the cache by a question worded differently (semantic stage).",
                &m.semantic_hits,
            ),
            (
                "sluice_cache_semantic_refused_total",
                "Semantic candidates above the threshold that the wording checks refused.",
                &m.semantic_refused,
            ),
            (
                "sluice_cache_semantic_rerank_refused_total",
                "Semantic candidates past the wording checks that the reranker scored below rerank_threshold.",
                &m.semantic_rerank_refused,
            ),
            ("sluice_cache_stores_total", "Answers stored.", &m.stores),
            (
                "sluice_cache_too_large_total",
                "Answers not stored because they exceed `max_entry_bytes`.",
                &m.too_large,
            ),
            (
                "sluice_cache_saved_milliseconds_total",
                "Upstream time saved by hits and coalesced requests.",
                &m.saved_ms,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_cache_saved_usd_total USD that hits and coalesced requests saved (price table).\n# TYPE sluice_cache_saved_usd_total counter\nsluice_cache_saved_usd_total {}",
            m.saved_nano_usd.load(Relaxed) as f64 / 1e9
        );
        let store_errors =
            self.store.as_ref().map_or(0, CacheStore::errors) + m.store_get_errors.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP sluice_cache_store_errors_total Operations on the cache store that failed (each degraded to a miss or a skipped store).\n# TYPE sluice_cache_store_errors_total counter\nsluice_cache_store_errors_total{{store=\"{}\"}} {store_errors}",
            self.store_kind
        );
        let _ = writeln!(
            out,
            "# HELP sluice_cache_memory_bytes Bytes held by the in-memory tier.\n# TYPE sluice_cache_memory_bytes gauge\nsluice_cache_memory_bytes {}\n# HELP sluice_cache_memory_entries Entries in the in-memory tier.\n# TYPE sluice_cache_memory_entries gauge\nsluice_cache_memory_entries {}\n# HELP sluice_cache_flights Coalesced flights in the air.\n# TYPE sluice_cache_flights gauge\nsluice_cache_flights {}",
            self.memory.bytes(),
            self.memory.len(),
            self.flights.len()
        );
        out.push_str("# HELP sluice_cache_hit_duration_seconds Time to answer a cache hit.\n# TYPE sluice_cache_hit_duration_seconds histogram\n");
        m.hit_latency
            .render(out, "sluice_cache_hit_duration_seconds", "endpoint=\"all\"");
    }

    /// Entries and bytes of the memory tier.
    pub fn memory_usage(&self) -> (usize, u64) {
        (self.memory.len(), self.memory.bytes())
    }
}

pub use crate::money::cost_nano_usd;
