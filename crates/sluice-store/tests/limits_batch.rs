//! The Redis limiter's batches: the admissions of concurrent requests share one round trip
//! (each with its own exact answer), settles not waited for arrive with a later call, and a
//! flush sends what is queued. On the Redis at `REDIS_URL`.

mod common;

use common::{now, redis_url, Prefix};
use sluice_store::limits::RedisLimiter;
use sluice_store::redis::Value;
use sluice_store::{Check, CheckKind, Limiter, RedisClient};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

const OP_TIMEOUT: Duration = Duration::from_secs(5);
const LEASE: Duration = Duration::from_secs(60);

fn checks(limit: u64) -> Vec<Check> {
    let check = |name: &str, kind| Check {
        name: name.into(),
        kind,
    };
    vec![
        check("rpm", CheckKind::Window { limit, cost: 1 }),
        check(
            "tpm",
            CheckKind::Window {
                limit: 1_000_000,
                cost: 100,
            },
        ),
        check("conc", CheckKind::Concurrency { limit: 1_000 }),
        check(
            "day",
            CheckKind::Budget {
                limit: 1_000_000,
                reserve: 50,
                window_ends: Some(now() + 3_600_000),
            },
        ),
    ]
}

fn limiter(prefix: &str) -> (Limiter, RedisClient) {
    let client = RedisClient::new(&redis_url(), OP_TIMEOUT).expect("url");
    let limiter = Limiter::Redis(RedisLimiter::with_client(client.clone(), prefix));
    (limiter, client)
}

async fn get(client: &RedisClient, key: &str) -> Value {
    client.cmd(&[b"GET", key.as_bytes()]).await.expect("get")
}

async fn zcard(client: &RedisClient, key: &str) -> i64 {
    let reply = client
        .cmd(&[b"ZCARD", key.as_bytes()])
        .await
        .expect("zcard");
    reply.as_int().expect("int")
}

/// 40 requests at once on one thread against an rpm of 25: one round trip, 25 admitted,
/// the other 15 refused by the rpm with nothing charged.
#[tokio::test]
async fn concurrent_admissions_share_one_round_trip() {
    let prefix = Prefix::new();
    let (limiter, client) = limiter(&prefix);
    // Loads the script (two round trips: SCRIPT LOAD, EVALSHA).
    let first = limiter
        .admit("warm", &checks(26), now(), LEASE)
        .await
        .expect("never fails")
        .expect("admitted");
    let before = client.round_trips();
    let runs: Vec<_> = (0..40)
        .map(|n| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let id = format!("t{n}");
                limiter.admit(&id, &checks(26), now(), LEASE).await
            })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for run in runs {
        match run.await.expect("task").expect("never fails") {
            Ok(t) => admitted.push(t),
            Err(d) => {
                assert_eq!(d.index, 0, "the rpm refuses");
                refused += 1;
            }
        }
    }
    assert_eq!(client.round_trips() - before, 1);
    assert_eq!((admitted.len(), refused), (25, 15));
    assert_eq!(limiter.fallbacks(), 0);
    // Only the admitted ones hold leases and reservations: 26 of each.
    assert_eq!(zcard(&client, &format!("{prefix}lim:conc")).await, 26);
    let reserved = get(&client, &format!("{prefix}lim:day#reserved")).await;
    assert_eq!(reserved, Value::Bulk(b"1300".to_vec().into()));
    // Settled without waiting, all together: one more round trip, and it all arrives.
    admitted.push(first);
    let before = client.round_trips();
    for t in &admitted {
        limiter.settle_later(t, &checks(26), &[1, 40, 0, 30], now());
    }
    assert!(limiter.flush(Duration::from_secs(5)).await);
    assert_eq!(client.round_trips() - before, 1);
    assert_eq!(zcard(&client, &format!("{prefix}lim:conc")).await, 0);
    let reserved = get(&client, &format!("{prefix}lim:day#reserved")).await;
    assert_eq!(reserved, Value::Bulk(b"0".to_vec().into()));
    assert_eq!(limiter.spent("day").await.expect("spent"), 26 * 30);
    assert_eq!(limiter.settles_dropped(), 0);
}

/// A settle not waited for goes out with the next admission, before it: the lease it gives
/// back is free for that admission, in the same round trip.
#[tokio::test]
async fn a_queued_settle_goes_first_in_the_next_call() {
    let prefix = Prefix::new();
    let (limiter, client) = limiter(&prefix);
    let one = [Check {
        name: "conc".into(),
        kind: CheckKind::Concurrency { limit: 1 },
    }];
    let a = limiter
        .admit("a", &one, now(), LEASE)
        .await
        .expect("never fails")
        .expect("admitted");
    let refused = limiter
        .admit("b", &one, now(), LEASE)
        .await
        .expect("never fails");
    assert!(refused.is_err(), "one lease held");
    // No runtime tick between the two: the settle waits in the queue for the admission.
    let before = client.round_trips();
    limiter.settle_later(&a, &one, &[0], now());
    let b = limiter
        .admit("b", &one, now(), LEASE)
        .await
        .expect("never fails");
    assert!(b.is_ok(), "the settle ran first");
    assert_eq!(client.round_trips() - before, 1);
}

/// Many threads, each its own runtime and lane, on one limiter: every admission answered
/// exactly (the rpm's limit, not one more), and every settle sent.
#[test]
fn threads_share_a_limiter_exactly() {
    let prefix = Prefix::new();
    let (limiter, client) = limiter(&prefix);
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let limiter = limiter.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let runs: Vec<_> = (0..30)
                        .map(|n| {
                            let limiter = limiter.clone();
                            tokio::spawn(async move {
                                let id = format!("th{thread}-{n}");
                                let got = limiter.admit(&id, &checks(77), now(), LEASE).await;
                                let Ok(t) = got.expect("never fails") else {
                                    return 0;
                                };
                                tokio::task::yield_now().await;
                                limiter.settle_later(&t, &checks(77), &[1, 100, 0, 50], now());
                                1
                            })
                        })
                        .collect();
                    let mut admitted = 0;
                    for run in runs {
                        admitted += run.await.expect("task");
                    }
                    // This runtime's last settles may still be queued: sent before it ends.
                    assert!(limiter.flush(Duration::from_secs(5)).await);
                    admitted
                })
            })
        })
        .collect();
    let admitted: u64 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(admitted, 77);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        assert!(limiter.flush(Duration::from_secs(5)).await);
        assert_eq!(zcard(&client, &format!("{prefix}lim:conc")).await, 0);
        assert_eq!(limiter.spent("day").await.expect("spent"), 77 * 50);
        assert_eq!(limiter.fallbacks(), 0);
        assert_eq!(limiter.settles_dropped(), 0);
        // 120 admissions in far fewer calls than 120.
        assert!(client.round_trips() < 100, "{}", client.round_trips());
    });
}

/// A request cancelled while its admission's call is out: the admission still ran on Redis
/// (its rpm keeps the charge), and what it leased is given back by the next call, so its
/// concurrency slot and its reservation are free at once, not when the lease ends.
#[tokio::test]
async fn an_admission_nobody_waits_for_is_given_back() {
    let prefix = Prefix::new();
    let (limiter, client) = limiter(&prefix);
    let checks = [
        Check {
            name: "rpm".into(),
            kind: CheckKind::Window { limit: 10, cost: 1 },
        },
        Check {
            name: "conc".into(),
            kind: CheckKind::Concurrency { limit: 1 },
        },
        Check {
            name: "day".into(),
            kind: CheckKind::Budget {
                limit: 1_000,
                reserve: 600,
                window_ends: None,
            },
        },
    ];
    // Polled once (the admission is queued and its call starts), then dropped.
    let mut cancelled = Box::pin(limiter.admit("gone", &checks, now(), LEASE));
    let first = std::future::poll_fn(|cx| Poll::Ready(cancelled.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "cancelled before its answer");
    drop(cancelled);
    assert!(limiter.flush(Duration::from_secs(5)).await);
    let rpm = client
        .cmd(&[b"HGET", format!("{prefix}lim:rpm#w").as_bytes(), b"t"])
        .await
        .expect("hget");
    assert_eq!(rpm, Value::Bulk(b"1".to_vec().into()), "the admission ran");
    assert_eq!(zcard(&client, &format!("{prefix}lim:conc")).await, 0);
    assert_eq!(zcard(&client, &format!("{prefix}lim:day#leases")).await, 0);
    let reserved = get(&client, &format!("{prefix}lim:day#reserved")).await;
    assert_eq!(reserved, Value::Bulk(b"0".to_vec().into()));
    // The slot and the budget are free for the next request.
    let next = limiter
        .admit("next", &checks, now(), LEASE)
        .await
        .expect("never fails");
    assert!(next.is_ok(), "{next:?}");
    assert_eq!(limiter.settles_dropped(), 0);
}

/// A settle alone waits briefly for an admission to share its call: one client's next
/// request, arriving once the settle's flight has started, costs one round trip, not the
/// settle's and then its own.
#[tokio::test]
async fn a_settle_alone_waits_for_the_next_admission() {
    let prefix = Prefix::new();
    let (limiter, client) = limiter(&prefix);
    let one = [Check {
        name: "conc".into(),
        kind: CheckKind::Concurrency { limit: 1 },
    }];
    let a = limiter
        .admit("a", &one, now(), LEASE)
        .await
        .expect("never fails")
        .expect("admitted");
    let before = client.round_trips();
    limiter.settle_later(&a, &one, &[0], now());
    // The settle's flight starts, and holds it back.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    let b = limiter
        .admit("b", &one, now(), LEASE)
        .await
        .expect("never fails");
    assert!(b.is_ok(), "the settle ran first");
    assert_eq!(client.round_trips() - before, 1);
    // Alone, it goes after the wait.
    limiter.settle_later(&b.expect("admitted"), &one, &[0], now());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.round_trips() - before, 2);
    assert_eq!(zcard(&client, &format!("{prefix}lim:conc")).await, 0);
}
