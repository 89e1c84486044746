//! The semantic index with its records in a real SQLite store: kept across a restart,
//! expired with the entries' TTL, and dropped with entries the store's bound evicted.

use super::entry::{Answer, Meta};
use super::index_record::Question;
use super::semantic::normalise;
use super::Cache;
use bytes::Bytes;
use sluice_core::config::CacheConfig;
use sluice_store::{CacheStore, Key, SqliteCache};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CONTEXT: Key = [9; 32];

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-index-{tag}-{}-{}",
        std::process::id(),
        super::unix_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cache(dir: &Path, memory_bytes: u64, disk_bytes: u64) -> Cache {
    let store = SqliteCache::open(&dir.join("cache.sqlite"), disk_bytes).unwrap();
    let config = CacheConfig {
        memory_bytes,
        disk_bytes,
        ..CacheConfig::default()
    };
    Cache::new(&config, Some(CacheStore::Sqlite(store)))
}

fn key(n: u8) -> Key {
    [n; 32]
}

/// Unit vector `n` of 16: each question far from every other.
fn axis(n: usize) -> Vec<f32> {
    let mut v = vec![0.0; 16];
    v[n % 16] = 1.0;
    normalise(v)
}

fn question(n: usize) -> Question {
    Question {
        context: CONTEXT,
        vector: axis(n),
        text: format!("question {n}"),
    }
}

fn answer(n: usize) -> Answer {
    Answer {
        meta: Meta::default(),
        body: Bytes::from(format!("{{\"answer\":{n}}}")),
    }
}

async fn similar(cache: &Cache, n: usize) -> Option<Bytes> {
    let found = cache.find_similar(&CONTEXT, &axis(n), 0.9, |_| true).await;
    found.map(|(a, _)| a.body)
}

#[tokio::test]
async fn a_restarted_cache_keeps_its_semantic_entries_and_not_expired_ones() {
    let dir = temp_dir("restart");
    let long = (Duration::from_secs(60), 1 << 20);
    {
        let cache = cache(&dir, 1 << 20, 1 << 20);
        cache.insert(key(1), &answer(1), long, Some(question(1)));
        let short = (Duration::from_millis(200), 1 << 20);
        cache.insert(key(2), &answer(2), short, Some(question(2)));
        cache.insert(key(3), &answer(3), long, None);
        assert_eq!(similar(&cache, 2).await, Some(answer(2).body));
        cache.flush().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cache = cache(&dir, 1 << 20, 1 << 20);
    assert_eq!(similar(&cache, 1).await, Some(answer(1).body));
    assert_eq!(similar(&cache, 2).await, None, "expired");
    assert_eq!(similar(&cache, 3).await, None, "stored without a question");
    assert_eq!(cache.semantic.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_entry_evicted_from_both_tiers_no_longer_hits_and_leaves_the_index() {
    let dir = temp_dir("evict");
    // No memory tier; a file of about 6 rows (each charged ~64 + 32 + its value and record).
    let cache = cache(&dir, 0, 6 * 250);
    for n in 0..12 {
        let ttl = Duration::from_secs(60 + n as u64);
        cache.insert(key(n as u8), &answer(n), (ttl, 1 << 20), Some(question(n)));
    }
    cache.flush().await;
    assert_eq!(cache.semantic.len(), 12, "indexed at once");
    assert_eq!(
        similar(&cache, 0).await,
        None,
        "the soonest-expiring row was evicted"
    );
    assert!(!cache.semantic.contains(&key(0)), "and forgotten");
    assert_eq!(similar(&cache, 11).await, Some(answer(11).body));
    let _ = std::fs::remove_dir_all(&dir);
}
