//! The Redis client and cache store against the Redis at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`). Each test uses its own random prefix and removes its keys.

mod common;

use bytes::Bytes;
use common::{key, now, redis_url, unique};
use sluice_store::redis::Value;
use sluice_store::{CacheStore, CounterDelta, RedisCache, RedisClient};
use std::time::Duration;

const OP_TIMEOUT: Duration = Duration::from_secs(2);

fn store(prefix: &str) -> RedisCache {
    RedisCache::new(&redis_url(), prefix, OP_TIMEOUT).expect("redis url")
}

/// Removes a test's entries and counters.
async fn cleanup(cache: &RedisCache, prefix: &str) {
    cache.clear().await.expect("clear");
    let stats = format!("{prefix}cache:stats");
    cache
        .client()
        .cmd(&[b"DEL", stats.as_bytes()])
        .await
        .expect("del");
}

#[tokio::test]
async fn client_commands_pipelines_and_replies() {
    let client = RedisClient::new(&redis_url(), OP_TIMEOUT).expect("url");
    let k = unique("sluice-test:client");
    assert_eq!(
        client
            .cmd(&[b"SET", k.as_bytes(), b"v\r\n1"])
            .await
            .expect("set"),
        Value::Simple("OK".into())
    );
    let replies = client
        .pipeline(&[
            &[b"GET", k.as_bytes()],
            &[b"INCR", k.as_bytes()],
            &[b"GET", b"sluice-test:surely-absent"],
            &[b"DEL", k.as_bytes()],
        ])
        .await
        .expect("pipeline");
    assert_eq!(replies[0], Value::Bulk(Bytes::from_static(b"v\r\n1")));
    assert!(
        matches!(&replies[1], Value::Error(e) if e.starts_with("ERR")),
        "{replies:?}"
    );
    assert_eq!(replies[2], Value::Nil);
    assert_eq!(replies[3], Value::Int(1));
    // A script answering a nested array: what issue #6's rate limits will run.
    let nested = client
        .cmd(&[b"EVAL", b"return {1, {2, 'x'}, {}}", b"0"])
        .await
        .expect("eval");
    assert_eq!(
        nested,
        Value::Array(vec![
            Value::Int(1),
            Value::Array(vec![Value::Int(2), Value::Bulk(Bytes::from_static(b"x"))]),
            Value::Array(vec![]),
        ])
    );
    let err = client
        .cmd(&[b"NOSUCHCOMMAND"])
        .await
        .expect_err("error reply");
    assert_eq!(err.kind(), "reply");
    // The connection survived the error reply and went back to this thread's pool.
    assert_eq!(
        client.cmd(&[b"PING"]).await.expect("ping"),
        Value::Simple("PONG".into())
    );
    assert_eq!(client.idle_on_this_thread(), 1);
}

#[tokio::test]
async fn put_get_and_expiry() {
    let prefix = unique("sluice-test:") + ":";
    let cache = store(&prefix);
    let store = CacheStore::Redis(cache.clone());
    let t = now();
    store.put(key(1), Bytes::from_static(b"answer"), t + 60_000);
    store.put(key(2), Bytes::from_static(b"short"), t + 150);
    store.put(key(3), Bytes::from_static(b"expired"), t - 1);
    store.flush().await;
    assert_eq!(store.errors(), 0);
    let (value, expires_at) = store.get(&key(1), now()).await.expect("get").expect("hit");
    assert_eq!(value, Bytes::from_static(b"answer"));
    // The expiry comes back from `PTTL`, to the millisecond give or take the round trip.
    assert!(
        expires_at.abs_diff(t + 60_000) < 1_000,
        "{expires_at} vs {}",
        t + 60_000
    );
    assert_eq!(store.get(&key(3), now()).await.expect("get"), None);
    assert_eq!(store.get(&key(4), now()).await.expect("get"), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.get(&key(2), now()).await.expect("get"),
        None,
        "Redis expired it"
    );
    cleanup(&cache, &prefix).await;
}

/// The semantic index's records on the stream two replicas share: a replica's first read
/// gets every live record (whichever replica wrote it), later reads only the new ones;
/// records of expired entries are skipped, a put without a record adds none, and `clear`
/// removes the stream.
#[tokio::test]
async fn index_records_are_shared_through_the_stream() {
    use sluice_store::IndexCursor;
    let prefix = unique("sluice-test:") + ":";
    let (a, b) = (store(&prefix), store(&prefix));
    // B reads before anything was written (no stream yet), then what A writes.
    let mut on_b = IndexCursor::default();
    assert!(b
        .index_since(&mut on_b, now())
        .await
        .expect("read")
        .is_empty());
    assert!(on_b.started());
    let t = now();
    a.put_indexed(
        key(1),
        Bytes::from_static(b"a1"),
        t + 60_000,
        Some("q1".into()),
    );
    a.put_indexed(
        key(2),
        Bytes::from_static(b"a2"),
        t + 200,
        Some("q2".into()),
    );
    a.put(key(3), Bytes::from_static(b"a3"), t + 60_000);
    a.flush().await;
    assert_eq!(a.errors(), 0);
    let first = b.index_since(&mut on_b, now()).await.expect("read");
    let got: Vec<_> = first.iter().map(|r| (r.key, r.record.clone())).collect();
    assert_eq!(
        got,
        vec![
            (key(1), Bytes::from_static(b"q1")),
            (key(2), Bytes::from_static(b"q2"))
        ]
    );
    assert_eq!(first[0].expires_at, t + 60_000);
    assert!(b
        .index_since(&mut on_b, now())
        .await
        .expect("read")
        .is_empty());
    // B writes one: A's reader (from the start) sees both of B's and A's, B's own sees it.
    b.put_indexed(
        key(4),
        Bytes::from_static(b"a4"),
        t + 60_000,
        Some("q4".into()),
    );
    b.flush().await;
    let next = b.index_since(&mut on_b, now()).await.expect("read");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].key, key(4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut on_a = IndexCursor::default();
    let keys: Vec<_> = a
        .index_since(&mut on_a, now())
        .await
        .expect("read")
        .iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, vec![key(1), key(4)], "key 2 expired");
    cleanup(&a, &prefix).await;
    assert!(a
        .index_since(&mut IndexCursor::default(), now())
        .await
        .expect("read")
        .is_empty());
}

#[tokio::test]
async fn clear_touches_only_its_prefix() {
    let (a, b) = (
        unique("sluice-test:a") + ":",
        unique("sluice-test:b*") + ":",
    );
    let (store_a, store_b) = (store(&a), store(&b));
    let t = now() + 60_000;
    for n in 0..1_500 {
        store_a.put(key(n), Bytes::from_static(b"a"), t);
        if n % 500 == 499 {
            // At most `MAX_IN_FLIGHT` (1,024) puts wait at once; more would be dropped.
            store_a.flush().await;
        }
    }
    store_b.put(key(1), Bytes::from_static(b"b"), t);
    store_a.add_counters(CounterDelta {
        hits: 1,
        ..CounterDelta::default()
    });
    store_a.flush().await;
    store_b.flush().await;
    assert_eq!((store_a.dropped(), store_a.errors()), (0, 0));
    assert_eq!(store_a.clear().await.expect("clear"), 1_500);
    assert_eq!(store_a.get(&key(1), now()).await.expect("get"), None);
    assert!(store_b.get(&key(1), now()).await.expect("get").is_some());
    // The counters are not entries: they survive a clear.
    assert_eq!(store_a.stats().await.expect("stats").hits, 1);
    cleanup(&store_a, &a).await;
    cleanup(&store_b, &b).await;
}

#[tokio::test]
async fn stats_and_counters_persist() {
    let prefix = unique("sluice-test:") + ":";
    let cache = store(&prefix);
    let store = CacheStore::Redis(cache.clone());
    let t = now() + 60_000;
    store.put(key(1), Bytes::from(vec![0u8; 100]), t);
    store.put(key(2), Bytes::from(vec![0u8; 20]), t);
    for _ in 0..10 {
        store.add_counters(CounterDelta {
            hits: 1,
            misses: 2,
            saved_nano_usd: 300,
            saved_ms: 4,
        });
    }
    store.flush().await;
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.entries, stats.bytes), (2, 120));
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.saved_nano_usd,
            stats.saved_ms
        ),
        (10, 20, 3_000, 40)
    );
    // Another store (another replica) on the same prefix sees the same counters.
    let other = RedisCache::new(&redis_url(), &prefix, OP_TIMEOUT).expect("url");
    assert_eq!(other.stats().await.expect("stats").hits, 10);
    cleanup(&cache, &prefix).await;
}

#[tokio::test]
async fn counters_are_written_without_a_flush() {
    let prefix = unique("sluice-test:") + ":";
    let cache = store(&prefix);
    cache.add_counters(CounterDelta {
        misses: 7,
        ..CounterDelta::default()
    });
    // The batch task writes them after its window; read Redis directly to see it did.
    let stats_key = format!("{prefix}cache:stats");
    let mut seen = Value::Nil;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = cache
            .client()
            .cmd(&[b"HGET", stats_key.as_bytes(), b"misses"])
            .await
            .expect("hget");
        if seen != Value::Nil {
            break;
        }
    }
    assert_eq!(seen, Value::Bulk(Bytes::from_static(b"7")));
    cleanup(&cache, &prefix).await;
}

#[test]
fn pools_are_per_thread_across_runtimes() {
    let prefix = unique("sluice-test:") + ":";
    let cache = store(&prefix);
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    for round in 0..50u32 {
                        let k = key(t * 1_000 + round);
                        cache.put(k, Bytes::from(format!("{t}/{round}")), now() + 60_000);
                        cache.flush().await;
                        let (v, _) = cache.get(&k, now()).await.expect("get").expect("hit");
                        assert_eq!(v, Bytes::from(format!("{t}/{round}")));
                    }
                    assert_eq!(cache.errors(), 0);
                    // Sequential use on this thread needs one connection, kept idle here.
                    assert_eq!(cache.client().idle_on_this_thread(), 1);
                });
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // This thread never ran a command: its pool is empty.
    assert_eq!(cache.client().idle_on_this_thread(), 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        assert_eq!(cache.stats().await.expect("stats").entries, 100);
        cleanup(&cache, &prefix).await;
    });
}

#[test]
fn a_new_runtime_on_the_same_thread_gets_fresh_connections() {
    let client = RedisClient::new(&redis_url(), OP_TIMEOUT).expect("url");
    for round in 0..3 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The connection pooled by the previous (now dropped) runtime is dead here.
        let pong = runtime.block_on(client.cmd(&[b"PING"])).expect("ping");
        assert_eq!(pong, Value::Simple("PONG".into()), "round {round}");
        assert_eq!(client.idle_on_this_thread(), 1);
    }
}
