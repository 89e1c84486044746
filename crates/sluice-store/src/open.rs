//! Opening the stores a config names, for the server and the CLI alike: the ledger, the
//! cache's persistent store, the limiter and the files. Shared stores (PostgreSQL, Redis) when the
//! config names them, else embedded ones (SQLite files in the data directory, which must
//! exist; the limiter in process).

use crate::files::{Contents, FileIndex, FileStore, PgIndex, SqliteIndex};
use crate::ledger::{Ledger, LedgerOptions};
use crate::limits::Limiter;
use crate::postgres::PgLedger;
use crate::redis_cache::RedisCache;
use crate::responses::{Backend, PgResponses, ResponseOptions, ResponseStore, SqliteResponses};
use crate::samples::{self, PgSamples, SampleStore, SqliteSamples};
use crate::sqlite::SqliteCache;
use crate::sqlite_ledger::SqliteLedger;
use crate::store::CacheStore;
use crate::StoreError;
use sluice_core::config::{
    CacheConfig, FilesConfig, LimitsConfig, ResponsesConfig, SpendConfig, StorageConfig,
};
use std::path::Path;

/// The ledger's file in the data directory, without `storage.database_url`.
pub const LEDGER_FILE: &str = "ledger.sqlite";

/// The cache store's file in the data directory, without `storage.redis_url`.
pub const CACHE_FILE: &str = "cache.sqlite";

/// The files' index in the data directory, without `storage.database_url`.
pub const FILES_FILE: &str = "files.sqlite";

/// The Files API's store: metadata in the `files` table of `storage.database_url` when set,
/// else in [`FILES_FILE`] in `storage.data_dir`; contents in `files.dir` (default
/// `<data_dir>/files`, created if absent). With PostgreSQL and no `files.dir`, replicas
/// would each keep contents of their own: that is logged as a warning. Blocks until the
/// database is reached.
pub fn files(storage: &StorageConfig, files: &FilesConfig) -> Result<FileStore, StoreError> {
    // First: it creates the data directory when the contents live in it.
    let contents = Contents::open(&files.dir_in(&storage.data_dir))?;
    let index = match &storage.database_url {
        Some(url) => {
            if files.dir.is_none() {
                tracing::warn!(
                    "files: metadata is in PostgreSQL but contents in the local `{}`; set \
                     [files] dir to a directory every replica mounts",
                    files.dir_in(&storage.data_dir).display()
                );
            }
            FileIndex::Postgres(PgIndex::open(url.expose())?)
        }
        None => FileIndex::Sqlite(SqliteIndex::open(&storage.data_dir.join(FILES_FILE))?),
    };
    Ok(FileStore::new(index, contents))
}

/// The stored responses' file in the data directory, without `storage.database_url`.
pub const RESPONSES_FILE: &str = "responses.sqlite";

/// The Responses API's stored responses: the `responses` table of `storage.database_url`
/// when set, else [`RESPONSES_FILE`] in `storage.data_dir`; kept and bounded as
/// `responses` says. Blocks until the database is reached.
pub fn responses(
    storage: &StorageConfig,
    responses: &ResponsesConfig,
) -> Result<ResponseStore, StoreError> {
    let backend = match &storage.database_url {
        Some(url) => Backend::Postgres(PgResponses::open(url.expose())?),
        None => Backend::Sqlite(SqliteResponses::open(
            &storage.data_dir.join(RESPONSES_FILE),
        )?),
    };
    let options = ResponseOptions {
        ttl_s: responses.ttl.as_secs().max(1),
        max_bytes: responses.max_bytes,
    };
    Ok(ResponseStore::new(backend, options))
}

/// The sampled payloads' file in the data directory, without `storage.database_url`.
pub const SAMPLES_FILE: &str = "samples.sqlite";

/// The sampled payloads (`[observability] sample_rate`): the `samples` table of
/// `storage.database_url` when set, else [`SAMPLES_FILE`] in `storage.data_dir`. Blocks
/// until the database is reached.
pub fn samples(storage: &StorageConfig) -> Result<SampleStore, StoreError> {
    let backend = match &storage.database_url {
        Some(url) => samples::Backend::Postgres(PgSamples::open(url.expose())?),
        None => {
            samples::Backend::Sqlite(SqliteSamples::open(&storage.data_dir.join(SAMPLES_FILE))?)
        }
    };
    Ok(SampleStore::new(backend))
}

/// The ledger (virtual keys and the spend log): PostgreSQL at `storage.database_url` when
/// set, else SQLite at [`LEDGER_FILE`] in `storage.data_dir`; batched, bounded and
/// retained as `spend` says. Blocks until the database is reached and its schema checked.
pub fn ledger(storage: &StorageConfig, spend: &SpendConfig) -> Result<Ledger, StoreError> {
    let options = LedgerOptions {
        batch_size: spend.batch_size,
        max_queued: spend.max_queued,
        retention_days: spend.retention_days,
        rollup_retention_days: spend.rollup_retention_days,
        ..LedgerOptions::default()
    };
    match &storage.database_url {
        Some(url) => Ok(Ledger::Postgres(PgLedger::open(url.expose(), options)?)),
        None => Ok(Ledger::Sqlite(SqliteLedger::open(
            &storage.data_dir.join(LEDGER_FILE),
            options,
        )?)),
    }
}

/// Whether `target` is a PostgreSQL URL (`postgres://`, `postgresql://`) rather than a path.
pub fn is_database_url(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

/// A ledger named by a path or a URL, opened to be read (a spend log to replay, say):
/// PostgreSQL when `target` is a URL ([`is_database_url`]), else the SQLite file at the
/// path when its header says it is one. `None` when it is neither (a file of another kind,
/// or none). Nothing is pruned: its retention is off (`retention_days = 0`).
pub fn ledger_at(target: &Path) -> Result<Option<Ledger>, StoreError> {
    let options = LedgerOptions {
        retention_days: 0,
        ..LedgerOptions::default()
    };
    let text = target.to_string_lossy();
    if is_database_url(&text) {
        return Ok(Some(Ledger::Postgres(PgLedger::open(&text, options)?)));
    }
    if !is_sqlite_file(target) {
        return Ok(None);
    }
    Ok(Some(Ledger::Sqlite(SqliteLedger::open(target, options)?)))
}

/// Whether the file at `path` starts with SQLite's header.
fn is_sqlite_file(path: &Path) -> bool {
    let mut magic = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"SQLite format 3\0"
}

/// The cache's persistent store: Redis at `storage.redis_url` when set (keys under
/// `storage.redis_prefix`, each call limited to `cache.store_timeout`; it connects at first
/// use), else SQLite at [`CACHE_FILE`] in `storage.data_dir`, bounded by
/// `cache.disk_bytes`.
pub fn cache_store(storage: &StorageConfig, cache: &CacheConfig) -> Result<CacheStore, StoreError> {
    match &storage.redis_url {
        Some(url) => Ok(CacheStore::Redis(RedisCache::new(
            url.expose(),
            &storage.redis_prefix,
            cache.store_timeout,
        )?)),
        None => Ok(CacheStore::Sqlite(SqliteCache::open(
            &storage.data_dir.join(CACHE_FILE),
            cache.disk_bytes,
        )?)),
    }
}

/// The limiter: on Redis at `storage.redis_url` when set (global across replicas, keys under
/// `storage.redis_prefix`, each call limited to `limits.redis_timeout`; it connects at first
/// use), else in process.
pub fn limiter(storage: &StorageConfig, limits: &LimitsConfig) -> Result<Limiter, StoreError> {
    match &storage.redis_url {
        Some(url) => Limiter::redis(url.expose(), &storage.redis_prefix, limits.redis_timeout),
        None => Ok(Limiter::memory()),
    }
}
