//! The SQLite cache store against real files in a temp dir.

mod common;

use bytes::Bytes;
use common::{key, now, TempDir};
use sluice_store::{CacheStore, CounterDelta, SqliteCache, SqliteOptions};
use std::time::Duration;

fn open(dir: &TempDir, max_disk_bytes: u64) -> CacheStore {
    let cache = SqliteCache::open(&dir.0.join("cache.db"), max_disk_bytes).expect("open");
    CacheStore::Sqlite(cache)
}

#[tokio::test]
async fn an_entry_survives_a_restart() {
    let dir = TempDir::new();
    let expires_at = now() + 60_000;
    {
        let store = open(&dir, 1 << 20);
        store.put(key(1), Bytes::from_static(b"cached answer"), expires_at);
        store.flush().await;
        assert_eq!(store.errors(), 0);
    } // dropped: the writer thread stops
    let store = open(&dir, 1 << 20);
    assert_eq!(
        store.get(&key(1), now()).await.expect("get"),
        Some((Bytes::from_static(b"cached answer"), expires_at))
    );
    assert_eq!(store.get(&key(2), now()).await.expect("get"), None);
}

#[tokio::test]
async fn drop_without_flush_still_writes() {
    let dir = TempDir::new();
    let expires_at = now() + 60_000;
    {
        let store = open(&dir, 1 << 20);
        for n in 0..500 {
            store.put(key(n), Bytes::from(vec![7u8; 100]), expires_at);
        }
        store.add_counters(CounterDelta {
            hits: 3,
            ..CounterDelta::default()
        });
    }
    let store = open(&dir, 1 << 20);
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.entries, stats.bytes, stats.hits), (500, 50_000, 3));
}

#[tokio::test]
async fn expired_entries_are_not_returned_and_are_purged() {
    let dir = TempDir::new();
    let cache = SqliteCache::open(&dir.0.join("cache.db"), 1 << 20).expect("open");
    let t = now();
    cache.put(key(1), Bytes::from_static(b"short"), t + 1_000);
    cache.put(key(2), Bytes::from_static(b"long"), t + 60_000);
    cache.put(key(3), Bytes::from_static(b"gone already"), t - 1);
    cache.flush().await;
    // Virtual time: at `t + 1_000` the first is expired.
    assert!(cache.get(&key(1), t + 999).await.expect("get").is_some());
    assert_eq!(cache.get(&key(1), t + 1_000).await.expect("get"), None);
    assert_eq!(cache.get(&key(3), t).await.expect("get"), None);
    assert_eq!(cache.purge_expired(t + 60_000).await.expect("purge"), 1);
    assert_eq!(cache.get(&key(2), t).await.expect("get"), None);
}

#[tokio::test]
async fn disk_bytes_stay_bounded_soonest_expiring_go_first() {
    let dir = TempDir::new();
    let max = 20_000;
    let store = open(&dir, max);
    let t = now() + 60_000;
    for n in 0..100u32 {
        // Later keys expire later.
        store.put(key(n), Bytes::from(vec![1u8; 900]), t + u64::from(n));
    }
    store.flush().await;
    let stats = store.stats().await.expect("stats");
    let charged = stats.bytes + stats.entries * (32 + sluice_store::sqlite::ROW_OVERHEAD);
    assert!(charged <= max, "{stats:?}");
    assert!(stats.entries >= 10, "{stats:?}");
    assert_eq!(store.get(&key(0), now()).await.expect("get"), None);
    assert!(store.get(&key(99), now()).await.expect("get").is_some());
    // An entry larger than the bound is not stored at all.
    store.put(key(500), Bytes::from(vec![1u8; 30_000]), t);
    store.flush().await;
    assert_eq!(store.get(&key(500), now()).await.expect("get"), None);
}

#[tokio::test]
async fn replace_clear_and_counters_persist() {
    let dir = TempDir::new();
    {
        let store = open(&dir, 1 << 20);
        let t = now() + 60_000;
        store.put(key(1), Bytes::from_static(b"one"), t);
        store.put(key(1), Bytes::from_static(b"uno"), t + 1);
        store.put(key(2), Bytes::from_static(b"two"), t);
        store.add_counters(CounterDelta {
            hits: 2,
            misses: 5,
            saved_nano_usd: 1_500,
            saved_ms: 40,
        });
        store.add_counters(CounterDelta {
            hits: 1,
            ..CounterDelta::default()
        });
        store.flush().await;
        assert_eq!(
            store.get(&key(1), now()).await.expect("get"),
            Some((Bytes::from_static(b"uno"), t + 1))
        );
        let stats = store.stats().await.expect("stats");
        assert_eq!((stats.entries, stats.bytes), (2, 6));
        assert_eq!(store.clear().await.expect("clear"), 2);
        assert_eq!(store.get(&key(2), now()).await.expect("get"), None);
    }
    let store = open(&dir, 1 << 20);
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.entries, 0);
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.saved_nano_usd,
            stats.saved_ms
        ),
        (3, 5, 1_500, 40)
    );
}

#[tokio::test]
async fn a_full_queue_drops_puts_instead_of_growing() {
    let dir = TempDir::new();
    let mut options = SqliteOptions::new(1 << 30);
    options.max_queued_puts = 10;
    let cache = SqliteCache::open_with(&dir.0.join("cache.db"), options).expect("open");
    let value = Bytes::from(vec![0u8; 10]);
    for n in 0..10_000 {
        cache.put(key(n), value.clone(), now() + 60_000);
    }
    cache.flush().await;
    assert!(cache.dropped() > 0, "the writer kept up with 10k puts?");
    let stats = cache.stats().await.expect("stats");
    assert_eq!(stats.entries + cache.dropped(), 10_000);
}

#[tokio::test]
async fn shutdown_then_calls_fail_cleanly() {
    let dir = TempDir::new();
    let cache = SqliteCache::open(&dir.0.join("cache.db"), 1 << 20).expect("open");
    cache.put(key(1), Bytes::from_static(b"v"), now() + 60_000);
    cache.shutdown();
    let err = cache.get(&key(1), now()).await.expect_err("stopped");
    assert_eq!(err.kind(), "unavailable");
    cache.put(key(2), Bytes::from_static(b"v"), now() + 60_000);
    tokio::time::timeout(Duration::from_secs(1), cache.flush())
        .await
        .expect("flush returns at once");
    let reopened = SqliteCache::open(&dir.0.join("cache.db"), 1 << 20).expect("reopen");
    assert!(reopened.get(&key(1), now()).await.expect("get").is_some());
}

#[tokio::test]
async fn a_newer_schema_is_refused_not_clobbered() {
    let dir = TempDir::new();
    let path = dir.0.join("cache.db");
    drop(SqliteCache::open(&path, 1 << 20).expect("create"));
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", 2).expect("bump");
    }
    let err = SqliteCache::open(&path, 1 << 20).expect_err("newer schema");
    assert_eq!(err.kind(), "unavailable");
}

/// The semantic index's records live in their entries' rows: read back after a restart
/// (every live one on a cursor's first read, nothing after), gone when their entry expires,
/// is replaced by a put without one, or is evicted by the byte bound.
#[tokio::test]
async fn index_records_live_and_die_with_their_entries() {
    use sluice_store::IndexCursor;
    let dir = TempDir::new();
    let t = now();
    {
        let store = open(&dir, 1 << 20);
        store.put_indexed(key(1), Bytes::from_static(b"a1"), t + 60_000, "q1".into());
        store.put_indexed(key(2), Bytes::from_static(b"a2"), t + 300, "q2".into());
        store.put_indexed(key(3), Bytes::from_static(b"a3"), t + 60_000, "q3".into());
        store.put(key(3), Bytes::from_static(b"a3 again"), t + 60_000);
        store.put(key(4), Bytes::from_static(b"a4"), t + 60_000);
        store.flush().await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let store = open(&dir, 1 << 20);
    let mut cursor = IndexCursor::default();
    let records = store.index_since(&mut cursor, now()).await.expect("read");
    let got: Vec<_> = records.iter().map(|r| (r.key, r.record.clone())).collect();
    assert_eq!(got, vec![(key(1), Bytes::from_static(b"q1"))]);
    assert_eq!(records[0].expires_at, t + 60_000);
    assert!(cursor.started());
    assert!(store
        .index_since(&mut cursor, now())
        .await
        .expect("read")
        .is_empty());

    // Records are charged with their rows: the byte bound evicts the soonest-expiring
    // rows, records included.
    let bounded = TempDir::new();
    let store = open(&bounded, 10_000);
    for n in 0..20u32 {
        let record = Bytes::from(vec![b'r'; 1_000]);
        store.put_indexed(
            key(n),
            Bytes::from_static(b"a"),
            t + 60_000 + u64::from(n),
            record,
        );
    }
    store.flush().await;
    let stats = store.stats().await.expect("stats");
    assert!(stats.entries < 20, "{stats:?}");
    let left = store
        .index_since(&mut IndexCursor::default(), now())
        .await
        .expect("read");
    assert_eq!(left.len() as u64, stats.entries);
    assert!(left.iter().all(|r| r.key != key(0)), "the oldest evicted");
    assert!(left.iter().any(|r| r.key == key(19)));
}

/// A file made before the semantic column gains it in place, keeps its entries and its
/// version (an older sluice still opens it).
#[tokio::test]
async fn an_older_file_gains_the_semantic_column() {
    let dir = TempDir::new();
    let path = dir.0.join("cache.db");
    let t = now();
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE cache_entries (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL,
                 expires_at INTEGER NOT NULL);
             CREATE INDEX cache_entries_expires_at ON cache_entries (expires_at);
             CREATE TABLE cache_counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
             PRAGMA user_version = 1;",
        )
        .expect("old schema");
        conn.execute(
            "INSERT INTO cache_entries VALUES (?1, ?2, ?3)",
            rusqlite::params![&key(1)[..], &b"old"[..], (t + 60_000) as i64],
        )
        .expect("old row");
    }
    let store = open(&dir, 1 << 20);
    assert_eq!(
        store.get(&key(1), now()).await.expect("get"),
        Some((Bytes::from_static(b"old"), t + 60_000))
    );
    store.put_indexed(key(2), Bytes::from_static(b"new"), t + 60_000, "q".into());
    store.flush().await;
    assert_eq!(store.errors(), 0);
    let records = store
        .index_since(&mut sluice_store::IndexCursor::default(), now())
        .await
        .expect("read");
    assert_eq!(records.len(), 1);
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 1);
}
