//! The Redis limiter: global across replicas (two limiters with their own clients, threads
//! and runtimes hammering one limit admit exactly the limit, never more), budgets and seeds
//! on the Redis at `REDIS_URL`, and failing open to the in-process fallback when Redis is
//! down, hung, or restarted (private `redis-server`s, like `redis_down.rs`).

mod common;

use common::{free_port, now, redis_url, Prefix, Server};
use sluice_store::redis::Value;
use sluice_store::{Check, CheckKind, Limiter, RedisClient, Ticket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Generous: a timeout would fail over, and the fallback would admit more than the limit.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const LEASE: Duration = Duration::from_secs(60);
/// For the Redis-down cases.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);
const BACKOFF: Duration = Duration::from_millis(1_000);
/// Scheduling slack for a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_millis(500);

fn window(name: &str, limit: u64, cost: u64) -> Check {
    Check {
        name: name.into(),
        kind: CheckKind::Window { limit, cost },
    }
}

fn concurrency(name: &str, limit: u64) -> Check {
    Check {
        name: name.into(),
        kind: CheckKind::Concurrency { limit },
    }
}

fn budget(name: &str, limit: u64, reserve: u64, window_ends: Option<u64>) -> Check {
    Check {
        name: name.into(),
        kind: CheckKind::Budget {
            limit,
            reserve,
            window_ends,
        },
    }
}

/// Two replicas, each its own `Limiter::redis` (own client) on its own thread and
/// multi-threaded runtime, `tasks` tasks each trying `tries` admissions at once; returns
/// the tickets admitted, all replicas together.
fn hammer(prefix: &str, checks: &[Check], tasks: usize, tries: usize) -> Vec<Ticket> {
    let start = Arc::new(Barrier::new(2));
    let replicas: Vec<_> = (0..2)
        .map(|replica| {
            let (start, prefix, checks) = (Arc::clone(&start), prefix.to_owned(), checks.to_vec());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let limiter = Limiter::redis(&redis_url(), &prefix, OP_TIMEOUT).expect("url");
                start.wait();
                let tickets = runtime.block_on(async {
                    let runs: Vec<_> = (0..tasks)
                        .map(|task| {
                            let (limiter, checks) = (limiter.clone(), checks.clone());
                            tokio::spawn(async move {
                                let mut admitted = Vec::new();
                                for n in 0..tries {
                                    let id = format!("r{replica}-t{task}-{n}");
                                    let got = limiter.admit(&id, &checks, now(), LEASE).await;
                                    if let Ok(ticket) = got.expect("never fails") {
                                        admitted.push(ticket);
                                    }
                                }
                                admitted
                            })
                        })
                        .collect();
                    let mut all = Vec::new();
                    for run in runs {
                        all.extend(run.await.expect("task"));
                    }
                    all
                });
                assert_eq!(limiter.fallbacks(), 0, "replica {replica} fell back");
                tickets
            })
        })
        .collect();
    let tickets: Vec<Ticket> = replicas
        .into_iter()
        .flat_map(|r| r.join().expect("replica"))
        .collect();
    assert!(tickets.iter().all(|t| !t.fallback));
    tickets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_exactly_the_window_limit() {
    let prefix = Prefix::new();
    let limit = 150;
    let rpm = [window("key:k1:rpm", limit, 1)];
    // 2 replicas x 16 tasks x 20 tries = 640 tries within a second or two.
    let tickets = tokio::task::block_in_place(|| hammer(&prefix, &rpm, 16, 20));
    assert_eq!(tickets.len() as u64, limit);
    // Tokens: costs of 7 against 1,000: floor(1,000 / 7) = 142 fit.
    let tpm = [window("key:k1:tpm", 1_000, 7)];
    let tickets = tokio::task::block_in_place(|| hammer(&prefix, &tpm, 16, 20));
    assert_eq!(tickets.len(), 142);
}

/// The gateway's acceptance case: two replicas, 100 requests at once against an rpm of 30,
/// exactly 30 admitted (each replica's requests go out in shared calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_exactly_30_of_100_at_once() {
    let prefix = Prefix::new();
    let rpm = [
        window("key:k0:rpm", 30, 1),
        concurrency("key:k0:conc", 1_000),
    ];
    let tickets = tokio::task::block_in_place(|| hammer(&prefix, &rpm, 50, 1));
    assert_eq!(tickets.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_budget_exactly() {
    let prefix = Prefix::new();
    let (limit, reserve) = (10_000, 300);
    let ends = Some(now() + 3_600_000);
    let day = [budget("key:k1:budget:d", limit, reserve, ends)];
    let tickets = tokio::task::block_in_place(|| hammer(&prefix, &day, 16, 10));
    assert_eq!(tickets.len() as u64, limit / reserve); // 33
    let limiter = Limiter::redis(&redis_url(), &prefix, OP_TIMEOUT).expect("url");
    assert_eq!(limiter.spent("key:k1:budget:d").await.expect("spent"), 0);
    // Settled at 250 each (twice: the second adds nothing): spent 8,250, nothing reserved.
    for t in &tickets {
        for _ in 0..2 {
            limiter
                .settle(t, &day, &[250], now())
                .await
                .expect("settle");
        }
    }
    assert_eq!(
        limiter.spent("key:k1:budget:d").await.expect("spent"),
        8_250
    );
    let probe = |reserve| [budget("key:k1:budget:d", limit, reserve, ends)];
    let refused = limiter
        .admit("probe1", &probe(1_751), now(), LEASE)
        .await
        .expect("admit")
        .expect_err("8,250 + 1,751 > 10,000");
    assert_eq!(refused.index, 0);
    let left = refused.retry_after_ms.expect("a windowed budget retries");
    assert!(left > 3_500_000 && left <= 3_600_000, "{left}");
    assert!(limiter
        .admit("probe2", &probe(1_750), now(), LEASE)
        .await
        .expect("admit")
        .is_ok());
    // A total budget: no retry.
    let total = [budget("key:k1:budget:total", 100, 101, None)];
    let refused = limiter
        .admit("probe3", &total, now(), LEASE)
        .await
        .expect("admit")
        .expect_err("101 > 100");
    assert_eq!(refused.retry_after_ms, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hold_exactly_the_concurrency_limit() {
    let prefix = Prefix::new();
    let limit = 7;
    let checks = [
        window("key:k2:rpm", 1_000, 1),
        concurrency("key:k2:conc", limit),
    ];
    let tickets = tokio::task::block_in_place(|| hammer(&prefix, &checks, 8, 10));
    assert_eq!(tickets.len() as u64, limit);
    // The refused ones charged nothing to the window (all or nothing): 993 requests left.
    let limiter = Limiter::redis(&redis_url(), &prefix, OP_TIMEOUT).expect("url");
    let rpm = [window("key:k2:rpm", 1_000, 993)];
    assert!(limiter
        .admit("rest", &rpm, now(), LEASE)
        .await
        .expect("admit")
        .is_ok());
    // Settling a lease frees it, for every replica.
    let refused = limiter
        .admit("late", &checks[1..], now(), LEASE)
        .await
        .expect("admit")
        .expect_err("full");
    assert_eq!(refused.retry_after_ms, Some(1_000));
    limiter
        .settle(&tickets[0], &checks, &[1, 0], now())
        .await
        .expect("settle");
    assert!(limiter
        .admit("late", &checks[1..], now(), LEASE)
        .await
        .expect("admit")
        .is_ok());
}

#[tokio::test]
async fn seed_sets_a_missing_counter_with_its_expiry() {
    let prefix = Prefix::new();
    let limiter = Limiter::redis(&redis_url(), &prefix, OP_TIMEOUT).expect("url");
    let name = "key:k3:budget:d:2026-12-01";
    assert_eq!(limiter.spent(name).await.expect("absent"), 0);
    let ends = now() + 3_600_000;
    limiter.seed(name, 500, Some(ends)).await.expect("seed");
    limiter.seed(name, 900, Some(ends)).await.expect("seed");
    assert_eq!(limiter.spent(name).await.expect("spent"), 500);
    // It expires a day after the window.
    let client = RedisClient::new(&redis_url(), OP_TIMEOUT).expect("url");
    let key = format!("{prefix}lim:{name}");
    let ttl = client
        .cmd(&[b"PTTL", key.as_bytes()])
        .await
        .expect("pttl")
        .as_int()
        .expect("int");
    let want = 3_600_000 + 86_400_000;
    assert!(ttl > want - 60_000 && ttl <= want, "{ttl}");
    // The seeded amount counts: 500 + 501 > 1,000.
    let day = |reserve| [budget(name, 1_000, reserve, Some(ends))];
    assert!(limiter
        .admit("a", &day(501), now(), LEASE)
        .await
        .expect("admit")
        .is_err());
    let t = limiter
        .admit("b", &day(500), now(), LEASE)
        .await
        .expect("admit")
        .expect("500 + 500");
    limiter
        .settle(&t, &day(500), &[42], now())
        .await
        .expect("settle");
    assert_eq!(limiter.spent(name).await.expect("spent"), 542);
    // A total budget's counter has no expiry.
    limiter.seed("key:k3:total", 7, None).await.expect("seed");
    let key = format!("{prefix}lim:key:k3:total");
    assert_eq!(
        client.cmd(&[b"PTTL", key.as_bytes()]).await.expect("pttl"),
        Value::Int(-1)
    );
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_to_the_fallback() {
    // Nothing listens there.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let limiter = Limiter::redis(&url, "down:", SHORT_TIMEOUT).expect("url");
    let checks = [window("rpm", 3, 1), concurrency("conc", 2)];
    let mut tickets = Vec::new();
    for n in 0..2 {
        let start = Instant::now();
        let t = limiter
            .admit(&format!("a{n}"), &checks, now(), LEASE)
            .await
            .expect("never fails")
            .expect("the fallback admits");
        assert!(t.fallback);
        assert!(
            start.elapsed() < SHORT_TIMEOUT + SLACK,
            "{:?}",
            start.elapsed()
        );
        tickets.push(t);
    }
    // The fallback enforces the limits in process: the leases are full...
    let refused = limiter
        .admit("a2", &checks, now(), LEASE)
        .await
        .expect("never fails")
        .expect_err("two leases held");
    assert_eq!(refused.index, 1);
    // ...until a settle (of a fallback ticket: in the fallback) ends one.
    limiter
        .settle(&tickets[0], &checks, &[1, 0], now())
        .await
        .expect("the fallback settles");
    let t = limiter
        .admit("a3", &checks, now(), LEASE)
        .await
        .expect("never fails")
        .expect("a lease is free");
    assert!(t.fallback);
    // Three requests of three: the window is full.
    assert_eq!(
        limiter
            .admit("a4", &checks[..1], now(), LEASE)
            .await
            .expect("never fails")
            .map_err(|d| d.index),
        Err(0)
    );
    assert_eq!(limiter.fallbacks(), 5);
    // Backing off: the calls fail over at once.
    let start = Instant::now();
    for n in 0..100 {
        let _ = limiter.admit(&format!("b{n}"), &checks, now(), LEASE).await;
    }
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    // The counters are another matter: their errors are the caller's.
    assert!(limiter.spent("b").await.is_err());
    assert!(limiter.seed("b", 1, None).await.is_err());
}

#[tokio::test]
async fn a_hung_redis_fails_open_within_the_op_timeout() {
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
    let limiter = Limiter::redis(&url, "hung:", SHORT_TIMEOUT).expect("url");
    let start = Instant::now();
    let t = limiter
        .admit("a", &[window("rpm", 10, 1)], now(), LEASE)
        .await
        .expect("never fails")
        .expect("the fallback admits");
    let took = start.elapsed();
    assert!(t.fallback);
    assert!(
        took >= SHORT_TIMEOUT && took < SHORT_TIMEOUT + SLACK,
        "{took:?}"
    );
    assert_eq!(limiter.fallbacks(), 1);
    silent.abort();
}

#[tokio::test]
async fn survives_redis_dying_and_restarting_without_its_scripts() {
    let port = free_port();
    let server = Server::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let client = RedisClient::new(&url, SHORT_TIMEOUT)
        .expect("url")
        .with_backoff(BACKOFF);
    let limiter = Limiter::Redis(sluice_store::limits::RedisLimiter::with_client(
        client.clone(),
        "restart:",
    ));
    let checks = [
        window("rpm", 100, 1),
        concurrency("conc", 10),
        budget("total", 1_000, 10, None),
    ];
    let up = limiter
        .admit("up", &checks, now(), LEASE)
        .await
        .expect("never fails")
        .expect("admitted");
    assert!(!up.fallback);
    // A flushed script cache: `NOSCRIPT`, then `EVAL`.
    client.cmd(&[b"SCRIPT", b"FLUSH"]).await.expect("flush");
    let t = limiter
        .admit("flushed", &checks, now(), LEASE)
        .await
        .expect("never fails")
        .expect("admitted");
    assert!(!t.fallback);
    limiter
        .settle(&t, &checks, &[1, 0, 10], now())
        .await
        .expect("settle");
    assert_eq!(limiter.spent("total").await.expect("spent"), 10);

    server.kill();

    let start = Instant::now();
    let down = limiter
        .admit("down", &checks, now(), LEASE)
        .await
        .expect("never fails")
        .expect("the fallback admits");
    assert!(down.fallback);
    assert!(
        start.elapsed() < SHORT_TIMEOUT + SLACK,
        "{:?}",
        start.elapsed()
    );
    // A Redis ticket cannot be settled now; a fallback one can.
    assert!(limiter
        .settle(&up, &checks, &[1, 0, 10], now())
        .await
        .is_err());
    limiter
        .settle(&down, &checks, &[1, 0, 10], now())
        .await
        .expect("the fallback settles");
    assert_eq!(limiter.fallbacks(), 1);

    // A new, empty Redis on the same port (no scripts, no counters): after the backoff,
    // the admissions are Redis's again.
    let _server = Server::start(port);
    tokio::time::sleep(BACKOFF + Duration::from_millis(100)).await;
    let back = limiter
        .admit("back", &checks, now(), LEASE)
        .await
        .expect("never fails")
        .expect("admitted");
    assert!(!back.fallback, "{back:?}");
    limiter
        .settle(&back, &checks, &[1, 0, 7], now())
        .await
        .expect("settle");
    assert_eq!(limiter.spent("total").await.expect("spent"), 7);
    println!("fallbacks: {}", limiter.fallbacks());
}

/// `(field, value)` pairs of the hash at `key`.
async fn hash(client: &RedisClient, key: &str) -> Vec<(String, u64)> {
    let reply = client
        .cmd(&[b"HGETALL", key.as_bytes()])
        .await
        .expect("hgetall");
    let Value::Array(parts) = reply else {
        panic!("HGETALL: {reply:?}");
    };
    let text = |v: &Value| match v {
        Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("HGETALL: {other:?}"),
    };
    parts
        .chunks(2)
        .map(|p| (text(&p[0]), text(&p[1]).parse().expect("a number")))
        .collect()
}

async fn pttl(client: &RedisClient, key: &str) -> i64 {
    client
        .cmd(&[b"PTTL", key.as_bytes()])
        .await
        .expect("pttl")
        .as_int()
        .expect("int")
}

#[tokio::test]
async fn the_layout_keeps_totals_and_expiries() {
    let prefix = Prefix::new();
    let client = RedisClient::new(&redis_url(), OP_TIMEOUT).expect("url");
    let limiter = Limiter::Redis(sluice_store::limits::RedisLimiter::with_client(
        client.clone(),
        &prefix,
    ));
    let t0 = now() / 1_000 * 1_000;
    let tpm = |cost| window("tpm", 100, cost);
    let checks = |cost| {
        [
            tpm(cost),
            concurrency("conc", 10),
            budget("day", 1_000, 50, Some(t0 + 3_600_000)),
        ]
    };
    // Three seconds of admissions, then one settled up and one down.
    let mut tickets = Vec::new();
    for (n, (at, cost)) in [(0, 10), (1_000, 20), (1_000, 5), (2_500, 7)]
        .into_iter()
        .enumerate()
    {
        let t = limiter
            .admit(&format!("t{n}"), &checks(cost), t0 + at, LEASE)
            .await
            .expect("never fails")
            .expect("fits");
        tickets.push((t, cost));
    }
    let (t1, _) = &tickets[1];
    limiter
        .settle(t1, &checks(20), &[26, 0, 40], t0 + 3_000)
        .await
        .expect("settle");
    let (t2, _) = &tickets[2];
    limiter
        .settle(t2, &checks(5), &[0, 0, 0], t0 + 3_000)
        .await
        .expect("settle");
    // The window: a bucket per second, their total, the oldest second; 65 s to live.
    let s = t0 / 1_000;
    let key = format!("{prefix}lim:tpm#w");
    let mut fields = hash(&client, &key).await;
    fields.sort();
    let mut want = vec![
        (s.to_string(), 10),
        ((s + 1).to_string(), 26),
        ((s + 2).to_string(), 7),
        ("o".to_string(), s),
        ("t".to_string(), 43),
    ];
    want.sort();
    assert_eq!(fields, want);
    let ttl = pttl(&client, &key).await;
    assert!(ttl > 60_000 && ttl <= 65_000, "{ttl}");
    // Sixty seconds on, bucket s is out: 100 - 33 = 67 fit, 68 do not.
    let later = t0 + 61_000;
    assert!(limiter
        .admit("x", &[tpm(68)], later, LEASE)
        .await
        .expect("never fails")
        .is_err());
    assert!(limiter
        .admit("y", &[tpm(67)], later, LEASE)
        .await
        .expect("never fails")
        .is_ok());
    let fields = hash(&client, &key).await;
    assert!(fields.contains(&("t".to_string(), 100)), "{fields:?}");
    assert!(fields.contains(&("o".to_string(), s + 1)), "{fields:?}");
    assert!(
        !fields.iter().any(|(f, _)| f == &s.to_string()),
        "{fields:?}"
    );
    // Concurrency and reservations: kept a minute or two past the longest lease.
    for suffix in ["conc", "day#leases", "day#reserved"] {
        let ttl = pttl(&client, &format!("{prefix}lim:{suffix}")).await;
        let lease = LEASE.as_millis() as i64;
        assert!(
            ttl > lease + 60_000 && ttl <= lease + 120_000,
            "{suffix}: {ttl}"
        );
    }
    // Two leases and two reservations left (t0, t3); spent 40 + 0.
    assert_eq!(limiter.spent("day").await.expect("spent"), 40);
    let reserved = client
        .cmd(&[b"GET", format!("{prefix}lim:day#reserved").as_bytes()])
        .await
        .expect("get");
    assert_eq!(reserved, Value::Bulk(b"100".to_vec().into()));
    // A hash of buckets without a total (as a settle on a new key leaves it): counted from
    // its fields, which get their total.
    let old = format!("{prefix}lim:old#w");
    let (b1, b2) = ((s - 70).to_string(), (s - 5).to_string());
    client
        .cmd(&[
            b"HSET",
            old.as_bytes(),
            b1.as_bytes(),
            b"50",
            b2.as_bytes(),
            b"30",
        ])
        .await
        .expect("hset");
    let old_check = |cost| [window("old", 100, cost)];
    assert!(limiter
        .admit("o1", &old_check(71), t0, LEASE)
        .await
        .expect("never fails")
        .is_err());
    assert!(limiter
        .admit("o2", &old_check(70), t0, LEASE)
        .await
        .expect("never fails")
        .is_ok());
    let mut fields = hash(&client, &old).await;
    fields.sort();
    let mut want = vec![
        (b2.clone(), 30),
        (s.to_string(), 70),
        ("o".to_string(), s - 5),
        ("t".to_string(), 100),
    ];
    want.sort();
    assert_eq!(fields, want);
}
