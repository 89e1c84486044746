//! A Redis that dies and comes back: calls fail fast (within the op timeout, then at once
//! while backing off), fire-and-forget writes neither block nor panic, and the client
//! recovers once the server is back and the backoff is over. Runs its own `redis-server`.

mod common;

use bytes::Bytes;
use common::{free_port, key, now, Server};
use sluice_store::redis::Value;
use sluice_store::{CacheStore, RedisCache, RedisClient};
use std::time::{Duration, Instant};

const OP_TIMEOUT: Duration = Duration::from_millis(300);
const BACKOFF: Duration = Duration::from_millis(1_000);
/// Scheduling slack for a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_millis(500);

#[tokio::test]
async fn survives_redis_dying_and_recovers_after_the_backoff() {
    let port = free_port();
    let server = Server::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let client = RedisClient::new(&url, OP_TIMEOUT)
        .expect("url")
        .with_backoff(BACKOFF);
    let store = CacheStore::Redis(RedisCache::with_client(client, "down-test:"));

    store.put(key(1), Bytes::from_static(b"before"), now() + 60_000);
    store.flush().await;
    assert!(store.get(&key(1), now()).await.expect("up").is_some());

    server.kill();

    // The pooled connection is dead: the first call fails, within the op timeout.
    let start = Instant::now();
    let err = store.get(&key(1), now()).await.expect_err("redis is down");
    assert!(
        start.elapsed() < OP_TIMEOUT + SLACK,
        "{:?}",
        start.elapsed()
    );
    println!("first failure: {} after {:?}", err.kind(), start.elapsed());

    // Then, backing off, calls fail at once without dialing.
    let _ = store.get(&key(1), now()).await;
    let start = Instant::now();
    let err = store.get(&key(1), now()).await.expect_err("backing off");
    assert_eq!(err.kind(), "unavailable");
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );

    // Fire and forget stays that: no block, no panic; the failures are counted.
    let errors_before = store.errors();
    let start = Instant::now();
    for n in 0..100 {
        store.put(key(n), Bytes::from_static(b"lost"), now() + 60_000);
    }
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "put blocked: {:?}",
        start.elapsed()
    );
    tokio::time::timeout(OP_TIMEOUT * 2, store.flush())
        .await
        .expect("flush does not hang on a dead redis");
    assert_eq!(store.errors(), errors_before + 100);

    // Back on the same port: during the rest of the backoff calls still fail fast...
    let _server = Server::start(port);
    let backing_off = store.get(&key(1), now()).await;
    // ...and once it is over, the client dials again and works.
    tokio::time::sleep(BACKOFF + Duration::from_millis(100)).await;
    assert_eq!(store.get(&key(1), now()).await.expect("recovered"), None);
    store.put(key(2), Bytes::from_static(b"after"), now() + 60_000);
    store.flush().await;
    let (value, _) = store.get(&key(2), now()).await.expect("get").expect("hit");
    assert_eq!(value, Bytes::from_static(b"after"));
    println!(
        "right after the restart: {:?}",
        backing_off.map_err(|e| e.kind())
    );
}

#[tokio::test]
async fn an_unreachable_redis_costs_nothing_per_call() {
    // Nothing listens there: every connect is refused, and after the first one the client
    // does not even try for the backoff.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let store = RedisCache::new(&url, "nothing:", OP_TIMEOUT).expect("url");
    assert_eq!(
        store.get(&key(1), now()).await.expect_err("down").kind(),
        "unavailable"
    );
    let start = Instant::now();
    for _ in 0..1_000 {
        assert!(store.get(&key(1), now()).await.is_err());
    }
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_hung_redis_times_out_then_fails_fast() {
    // Accepts connections and never answers, like a stopped (SIGSTOP) Redis.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("redis://127.0.0.1:{port}");
    let store = RedisCache::new(&url, "hung:", OP_TIMEOUT).expect("url");
    let start = Instant::now();
    let err = store.get(&key(1), now()).await.expect_err("no answer");
    assert_eq!(err.kind(), "timeout");
    let took = start.elapsed();
    assert!(took >= OP_TIMEOUT && took < OP_TIMEOUT + SLACK, "{took:?}");
    let start = Instant::now();
    let err = store.get(&key(1), now()).await.expect_err("backing off");
    assert_eq!(err.kind(), "unavailable");
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
    silent.abort();
}

#[tokio::test]
async fn auth_and_select_from_the_url() {
    let port = free_port();
    let _server = Server::start_with(port, &["--requirepass", "s3cret:pw"]);
    let op = Duration::from_secs(2);
    // Wrong password: the handshake fails, as unavailable.
    let wrong = RedisClient::new(&format!("redis://:nope@127.0.0.1:{port}"), op).expect("url");
    assert_eq!(
        wrong.cmd(&[b"PING"]).await.expect_err("auth").kind(),
        "unavailable"
    );
    // The password (percent-escaped `:`), as the default ACL user, and database 3.
    let db3 = RedisClient::new(
        &format!("redis://default:s3cret%3Apw@127.0.0.1:{port}/3"),
        op,
    )
    .expect("url");
    db3.cmd(&[b"SET", b"where", b"three"]).await.expect("set");
    let db0 = RedisClient::new(&format!("redis://:s3cret%3Apw@127.0.0.1:{port}"), op).expect("url");
    assert_eq!(db0.cmd(&[b"GET", b"where"]).await.expect("get"), Value::Nil);
    assert_eq!(
        db3.cmd(&[b"GET", b"where"]).await.expect("get"),
        Value::Bulk(Bytes::from_static(b"three"))
    );
}
