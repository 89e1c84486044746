//! The state behind the gateway: the response cache's in-memory tier ([`MemoryTier`]) and
//! its persistent stores ([`CacheStore`]: SQLite embedded, or Redis shared by replicas), and
//! the small RESP2 client ([`redis::RedisClient`]) that the limits and budgets will use too.
//!
//! Everything here stores opaque bytes under 32-byte keys that the caller made (BLAKE3
//! hashes), with an absolute expiry in Unix milliseconds. Time is always passed in, so the
//! logic runs on virtual time in tests. No other sluice crate is a dependency.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cache_stats;
pub mod error;
pub mod hex;
pub mod ledger;
pub mod limits;
pub mod memory;
pub mod open;
pub mod postgres;
pub mod redis;
pub mod redis_cache;
pub mod sqlite;
mod sqlite_file;
pub mod sqlite_ledger;
pub mod store;

pub use error::StoreError;
pub use ledger::{
    BudgetPeriod, Dimension, KeyRecord, Ledger, LedgerOptions, Report, ReportRow, SpendRecord,
};
pub use limits::{Check, CheckKind, Denial, Limiter, Ticket};
pub use memory::MemoryTier;
pub use redis::RedisClient;
pub use redis_cache::RedisCache;
pub use sqlite::{SqliteCache, SqliteOptions};
pub use store::{CacheStats, CacheStore, CounterDelta};

/// A cache key: 32 bytes, a hash the caller computed.
pub type Key = [u8; 32];

/// Milliseconds since the Unix epoch; passed in everywhere so tests run on virtual time.
pub type UnixMs = u64;

/// The wall clock as [`UnixMs`] (0 before the epoch).
pub fn unix_now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
