//! The state behind the gateway, each store embedded in one process or shared by replicas:
//!
//! - the response cache: opaque bytes under 32-byte keys the caller made (BLAKE3 hashes),
//!   each with an absolute expiry, in an in-memory tier ([`MemoryTier`]) before a
//!   persistent store ([`CacheStore`]: a SQLite file, or Redis), with the semantic index's
//!   records beside their entries ([`IndexRecord`]);
//! - the ledger ([`Ledger`]): virtual keys and the spend log, with daily roll-ups and budget
//!   windows (a SQLite file, or PostgreSQL);
//! - the limiter ([`Limiter`]): rate limits, concurrency limits and budgets, checked and
//!   charged together per request (in process, or on Redis);
//! - the small RESP2 client ([`RedisClient`]) the Redis stores use;
//! - the Files API's files ([`FileStore`]): metadata in SQLite or PostgreSQL, contents in
//!   a directory;
//! - the Batch API's batches ([`BatchStore`]): beside the files' metadata;
//! - the Responses API's stored responses ([`ResponseStore`]): SQLite or PostgreSQL;
//! - the embedded gateway's canary rollouts ([`RoutingFile`]), kept across restarts;
//! - [`open`]: the functions that open each of them from sluice's config, for the server
//!   and the CLI alike.
//!
//! The SQLite files and the PostgreSQL connection each live on a thread of their own, so
//! the gateway's single-threaded runtimes never block on them. Time is passed in (Unix ms,
//! [`UnixMs`]) wherever a decision depends on it, so the logic runs on virtual time in
//! tests. The only sluice crate this one depends on is `sluice-core`, for the config types
//! [`open`] reads.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod batches;
mod cache_stats;
pub mod error;
pub mod files;
pub mod hex;
pub mod index_records;
pub mod ledger;
pub mod limits;
pub mod memory;
pub mod open;
mod pg_worker;
pub mod postgres;
pub mod redis;
pub mod redis_cache;
pub mod responses;
pub mod routing_file;
pub mod samples;
mod sql_int;
pub mod sqlite;
mod sqlite_file;
pub mod sqlite_ledger;
mod sqlite_worker;
pub mod store;

pub use batches::BatchStore;
pub use error::StoreError;
pub use files::{FileIndex, FileObject, FileStore, NewFile, Owner, Purpose, Upload};
pub use index_records::{IndexCursor, IndexRecord};
pub use ledger::{
    BudgetPeriod, Dimension, KeyRecord, Ledger, LedgerOptions, Report, ReportRow, SpendRecord,
};
pub use limits::{Check, CheckKind, Denial, LimitId, Limiter, Ticket};
pub use memory::MemoryTier;
pub use redis::RedisClient;
pub use redis_cache::RedisCache;
pub use responses::{ResponseOptions, ResponseStore};
pub use routing_file::RoutingFile;
pub use samples::SampleStore;
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
