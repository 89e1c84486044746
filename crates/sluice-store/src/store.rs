//! The persistent cache stores behind the memory tier, as one closed enum: no `dyn` on the
//! hot path. Both variants share the semantics documented on [`CacheStore`].

pub use crate::cache_stats::{CacheStats, CounterDelta};

use crate::index_records::{IndexCursor, IndexRecord};
use crate::redis_cache::RedisCache;
use crate::sqlite::SqliteCache;
use crate::{Key, StoreError, UnixMs};
use bytes::Bytes;

/// A persistent cache store: embedded SQLite, or Redis shared by replicas.
///
/// - `get` answers from the store; expired entries are never returned.
/// - `put` and `add_counters` never block and never fail to the caller: they are queued
///   (SQLite: to its writer thread; Redis: a task on the current tokio runtime), and their
///   failures are counted in [`CacheStore::errors`] (and logged at debug). When the store
///   falls behind, puts are dropped and counted in [`CacheStore::dropped`].
/// - `flush` waits until every `put` and `add_counters` issued before it is durable.
#[derive(Debug, Clone)]
pub enum CacheStore {
    /// Embedded: a SQLite file, written by one dedicated thread.
    Sqlite(SqliteCache),
    /// Shared: Redis, over sluice's own RESP2 client.
    Redis(RedisCache),
}

// === impl CacheStore ===

impl CacheStore {
    /// The value under `key` and its expiry, if present and live at `now`.
    pub async fn get(&self, key: &Key, now: UnixMs) -> Result<Option<(Bytes, UnixMs)>, StoreError> {
        match self {
            Self::Sqlite(s) => s.get(key, now).await,
            Self::Redis(r) => r.get(key, now).await,
        }
    }

    /// Stores `value` under `key` until `expires_at`; fire and forget.
    pub fn put(&self, key: Key, value: Bytes, expires_at: UnixMs) {
        match self {
            Self::Sqlite(s) => s.put(key, value, expires_at),
            Self::Redis(r) => r.put(key, value, expires_at),
        }
    }

    /// [`Self::put`] with the semantic index's record of the entry, stored beside it and
    /// gone with it (SQLite: in its row; Redis: in the semantic stream, see
    /// [`crate::redis_cache`]).
    pub fn put_indexed(&self, key: Key, value: Bytes, expires_at: UnixMs, index: Bytes) {
        match self {
            Self::Sqlite(s) => s.put_indexed(key, value, expires_at, Some(index)),
            Self::Redis(r) => r.put_indexed(key, value, expires_at, Some(index)),
        }
    }

    /// The index records written since `cursor` (every live one on its first read; SQLite:
    /// nothing after that, Redis: what the replicas appended since) whose entries are live
    /// at `now`.
    pub async fn index_since(
        &self,
        cursor: &mut IndexCursor,
        now: UnixMs,
    ) -> Result<Vec<IndexRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.index_since(cursor, now).await,
            Self::Redis(r) => r.index_since(cursor, now).await,
        }
    }

    /// Removes every entry (counters stay); returns how many were removed.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.clear().await,
            Self::Redis(r) => r.clear().await,
        }
    }

    /// Entries, bytes and the persisted counters (pending increments included).
    pub async fn stats(&self) -> Result<CacheStats, StoreError> {
        match self {
            Self::Sqlite(s) => s.stats().await,
            Self::Redis(r) => r.stats().await,
        }
    }

    /// Adds to the persisted counters; fire and forget, batched.
    pub fn add_counters(&self, d: CounterDelta) {
        match self {
            Self::Sqlite(s) => s.add_counters(d),
            Self::Redis(r) => r.add_counters(d),
        }
    }

    /// Waits until every `put` and `add_counters` issued before is durable (or failed and
    /// counted).
    pub async fn flush(&self) {
        match self {
            Self::Sqlite(s) => s.flush().await,
            Self::Redis(r) => r.flush().await,
        }
    }

    /// Puts and counter writes that failed, since the store was made.
    pub fn errors(&self) -> u64 {
        match self {
            Self::Sqlite(s) => s.errors(),
            Self::Redis(r) => r.errors(),
        }
    }

    /// Puts dropped because the store was behind, since the store was made.
    pub fn dropped(&self) -> u64 {
        match self {
            Self::Sqlite(s) => s.dropped(),
            Self::Redis(r) => r.dropped(),
        }
    }

    /// A fixed label for metrics: `sqlite` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Redis(_) => "redis",
        }
    }
}
