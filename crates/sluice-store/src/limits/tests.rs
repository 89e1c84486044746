//! Unit tests of the memory limiter on virtual time, and a property test running the memory
//! and the Redis limiter (the Redis at `REDIS_URL`) on one random sequence of admissions,
//! settles and time steps, comparing every decision. On Redis, bursts of admissions are made
//! at once (they share a script call) and some settles are queued
//! ([`Limiter::settle_later`]) to ride on the next call: the memory limiter takes the same
//! sequence one by one.

use super::check::BUDGET_GRACE_MS;
use super::*;
use crate::redis::{RedisClient, Value};

const LEASE: Duration = Duration::from_secs(30);
/// A virtual clock's start: second 1,000,000 (early 1970, as far as Redis cares).
const T0: UnixMs = 1_000_000_000;

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

fn budget(name: &str, limit: u64, reserve: u64, window_ends: Option<UnixMs>) -> Check {
    Check {
        name: name.into(),
        kind: CheckKind::Budget {
            limit,
            reserve,
            window_ends,
        },
    }
}

/// A small deterministic PRNG (xorshift64*), so failures replay from the printed seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("LIMITS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| crate::unix_now_ms() ^ (u64::from(std::process::id()) << 32));
        println!("LIMITS_SEED={seed}");
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn admit(m: &MemoryLimiter, id: &str, checks: &[Check], now: UnixMs) -> Result<Ticket, Denial> {
    m.admit(id, checks, now, LEASE)
}

fn denial(index: usize, retry_after_ms: Option<u64>) -> Result<Ticket, Denial> {
    Err(Denial {
        index,
        retry_after_ms,
    })
}

#[test]
fn a_window_admits_its_limit_then_frees_after_61_seconds() {
    let m = MemoryLimiter::new();
    let rpm = [window("rpm", 5, 1)];
    // Second 1,000,000, 400 ms in.
    let t = T0 + 400;
    for n in 0..5 {
        assert!(admit(&m, &format!("a{n}"), &rpm, t).is_ok());
    }
    // Full for the rest of that second and the 60 after it; bucket 1,000,000 leaves the
    // window at second 1,000,061.
    for later in [0, 1, 30_000, 60_599] {
        assert_eq!(
            admit(&m, "x", &rpm, t + later),
            denial(0, Some(61_000 - 400 - later))
        );
    }
    assert!(admit(&m, "b", &rpm, T0 + 61_000).is_ok());
    // A request costing more than the limit never fits.
    assert_eq!(
        admit(&m, "big", &[window("rpm", 5, 6)], T0),
        denial(0, Some(60_000))
    );
}

#[test]
fn a_window_admits_exactly_its_limit_in_any_61_buckets() {
    // Against a model: the units admitted per second; a request fits iff the last 61
    // seconds' units plus its cost are at most the limit.
    let mut rng = Rng::seeded();
    let m = MemoryLimiter::new();
    let limit = 20;
    let mut admitted: Vec<(u64, u64)> = Vec::new();
    let mut now = T0;
    for n in 0..5_000 {
        now += match rng.range(0, 9) {
            0 => rng.range(10_000, 70_000),
            _ => rng.range(0, 1_500),
        };
        let cost = rng.range(0, 6);
        let sec = now / 1_000;
        let used: u64 = admitted
            .iter()
            .filter(|(s, _)| *s + 60 >= sec)
            .map(|(_, c)| c)
            .sum();
        let got = admit(&m, &n.to_string(), &[window("tpm", limit, cost)], now);
        assert_eq!(
            got.is_ok(),
            used + cost <= limit,
            "at {now}: {used} + {cost}"
        );
        match got {
            Ok(_) => admitted.push((sec, cost)),
            Err(d) => {
                // Retrying at the advertised time passes, one ms earlier does not.
                let retry = d.retry_after_ms.expect("windows always retry");
                let fits_at = |t: UnixMs| {
                    let s = t / 1_000;
                    let used: u64 = admitted
                        .iter()
                        .filter(|(b, _)| *b + 60 >= s)
                        .map(|(_, c)| c)
                        .sum();
                    used + cost <= limit
                };
                if cost <= limit {
                    assert!(fits_at(now + retry) && !fits_at(now + retry - 1), "{d:?}");
                } else {
                    assert_eq!(retry, 60_000);
                }
            }
        }
    }
    // Every span of 61 buckets holds at most the limit.
    let first = T0 / 1_000;
    for start in first..=now / 1_000 {
        let span: u64 = admitted
            .iter()
            .filter(|(s, _)| (start..=start + 60).contains(s))
            .map(|(_, c)| c)
            .sum();
        assert!(span <= limit, "{span} in the 61 s from {start}");
    }
}

#[test]
fn window_retry_after_waits_for_enough_old_buckets() {
    let m = MemoryLimiter::new();
    let tpm = |cost| [window("tpm", 3, cost)];
    assert!(admit(&m, "a", &tpm(1), T0 + 500).is_ok()); // bucket s
    assert!(admit(&m, "b", &tpm(2), T0 + 10_000).is_ok()); // bucket s + 10
    let now = T0 + 20_300;
    // Cost 1 fits once bucket s leaves (second s + 61).
    assert_eq!(
        admit(&m, "c", &tpm(1), now),
        denial(0, Some(61_000 - 20_300))
    );
    assert!(admit(&m, "c", &tpm(1), T0 + 60_999).is_err());
    // Cost 2 needs bucket s + 10 gone too.
    assert_eq!(
        admit(&m, "d", &tpm(2), now),
        denial(0, Some(71_000 - 20_300))
    );
    assert!(admit(&m, "c", &tpm(1), T0 + 61_000).is_ok());
}

#[test]
fn settling_a_window_corrects_the_tokens_up_and_down() {
    let m = MemoryLimiter::new();
    let tpm = |cost| [window("tpm", 100, cost)];
    let t1 = admit(&m, "t1", &tpm(50), T0).expect("fits");
    // Up: 80 were used, not 50.
    m.settle(&t1, &tpm(50), &[80], T0 + 2_000);
    assert_eq!(
        admit(&m, "x", &tpm(21), T0 + 2_000),
        denial(0, Some(59_000))
    );
    // (A ticket is settled once: the caller's contract. A second settle would correct
    // the window again.)
    let t2 = admit(&m, "t2", &tpm(20), T0 + 2_000).expect("80 + 20 fit");
    // Down: 20 estimated, 5 used: 15 back.
    m.settle(&t2, &tpm(20), &[5], T0 + 3_000);
    assert!(admit(&m, "t3", &tpm(15), T0 + 3_000).is_ok());
    assert!(admit(&m, "t4", &tpm(1), T0 + 3_000).is_err());
    // Never below zero: bucket s + 2 holds 5 (t2's 20 corrected to 5); a ticket charged 40
    // there that used nothing leaves it at 0, not -35.
    let stray = Ticket {
        id: "stray".into(),
        at: T0 + 2_000,
        lease_ends: T0 + 2_000 + 30_000,
        fallback: false,
    };
    m.settle(&stray, &tpm(40), &[0], T0 + 3_000);
    // Buckets now: s: 80, s + 2: 0, s + 3: 15. 95 + 5 fit, 6 do not.
    assert!(admit(&m, "t5", &tpm(6), T0 + 3_000).is_err());
    assert!(admit(&m, "t5", &tpm(5), T0 + 3_000).is_ok());
    // A bucket out of the window is left alone: at second s + 61, bucket s is out.
    let late = Ticket {
        id: "late".into(),
        at: T0,
        lease_ends: T0 + 30_000,
        fallback: false,
    };
    m.settle(&late, &tpm(0), &[1_000], T0 + 61_000);
    // Seen from a clock 1 ms behind, bucket s is still in the window and still 80: the
    // buckets sum to 100, and a request costing 0 fits.
    assert!(admit(&m, "t6", &tpm(0), T0 + 60_999).is_ok());
    // At s + 61 only s + 3's 20 are left.
    assert!(admit(&m, "t7", &tpm(80), T0 + 61_000).is_ok());
    assert!(admit(&m, "t8", &tpm(1), T0 + 61_000).is_err());
}

#[test]
fn concurrency_leases_end_at_settle_or_expiry() {
    let m = MemoryLimiter::new();
    let c = [concurrency("conc", 2)];
    let a = admit(&m, "a", &c, T0).expect("1");
    let _b = m
        .admit("b", &c, T0 + 100, Duration::from_millis(700))
        .expect("2");
    // b's lease ends at T0 + 800: sooner than a second.
    assert_eq!(admit(&m, "c", &c, T0 + 200), denial(0, Some(600)));
    // At its expiry the lease is gone.
    let d = admit(&m, "d", &c, T0 + 800).expect("b expired");
    assert_eq!(admit(&m, "e", &c, T0 + 900), denial(0, Some(1_000)));
    m.settle(&a, &c, &[], T0 + 1_000);
    m.settle(&a, &c, &[], T0 + 1_000); // twice: still one lease ended
    assert!(admit(&m, "e", &c, T0 + 1_000).is_ok());
    assert!(admit(&m, "f", &c, T0 + 1_000).is_err());
    m.settle(&d, &c, &[], T0 + 1_000);
    assert!(admit(&m, "f", &c, T0 + 1_000).is_ok());
    // A limit of 0 admits nothing.
    assert_eq!(
        admit(&m, "g", &[concurrency("none", 0)], T0),
        denial(0, Some(1_000))
    );
}

#[test]
fn budgets_reserve_and_settle_the_actual_cost() {
    let m = MemoryLimiter::new();
    let ends = Some(T0 + 5_000);
    let b = |reserve| [budget("day", 1_000, reserve, ends)];
    let t1 = admit(&m, "t1", &b(400), T0).expect("400");
    let t2 = admit(&m, "t2", &b(400), T0).expect("800");
    // 800 + 300 > 1,000: retry when the window ends.
    assert_eq!(admit(&m, "x", &b(300), T0 + 1_000), denial(0, Some(4_000)));
    let t3 = admit(&m, "t3", &b(200), T0 + 1_000).expect("exactly 1,000");
    assert!(admit(&m, "x", &b(0), T0 + 1_000).is_ok()); // + 0 still fits
    assert_eq!(m.spent("day"), 0);
    // t1 cost 100, not 400: spent 100, reserved 600 (t2, t3): 300 fit again.
    m.settle(&t1, &b(400), &[100], T0 + 2_000);
    m.settle(&t1, &b(400), &[100], T0 + 2_000); // twice adds nothing
    assert_eq!(m.spent("day"), 100);
    assert!(admit(&m, "t4", &b(300), T0 + 2_000).is_ok());
    assert!(admit(&m, "t5", &b(1), T0 + 2_000).is_err());
    m.settle(&t2, &b(400), &[400], T0 + 2_000);
    m.settle(&t3, &b(200), &[250], T0 + 2_000); // more than reserved: the actual counts
    assert_eq!(m.spent("day"), 750);
    // A total budget answers no retry.
    let total = [budget("total", 10, 11, None)];
    assert_eq!(admit(&m, "y", &total, T0), denial(0, None));
}

#[test]
fn budget_reservations_end_with_their_lease() {
    let m = MemoryLimiter::new();
    let b = [budget("total", 100, 60, None)];
    let lease = Duration::from_secs(10);
    let t1 = m.admit("t1", &b, T0, lease).expect("60");
    assert!(m.admit("t2", &b, T0 + 9_999, lease).is_err());
    let t2 = m
        .admit("t2", &b, T0 + 10_000, lease)
        .expect("t1's lease ended");
    // A settle after the lease ended adds nothing (the reservation is gone).
    m.settle(&t1, &b, &[60], T0 + 10_000);
    assert_eq!(m.spent("total"), 0);
    m.settle(&t2, &b, &[30], T0 + 10_000);
    assert_eq!(m.spent("total"), 30);
}

#[test]
fn seeding_sets_a_counter_only_if_absent() {
    let m = MemoryLimiter::new();
    m.seed("day", 500, Some(T0 + 86_400_000));
    m.seed("day", 900, Some(T0 + 86_400_000));
    assert_eq!(m.spent("day"), 500);
    let b = |reserve| [budget("day", 1_000, reserve, Some(T0 + 86_400_000))];
    assert!(admit(&m, "a", &b(501), T0).is_err());
    let t = admit(&m, "a", &b(500), T0).expect("500 + 500");
    m.settle(&t, &b(500), &[10], T0);
    assert_eq!(m.spent("day"), 510);
    // A counter that exists (from a settle) is not overwritten either.
    let t = admit(&m, "b", &[budget("other", 100, 5, None)], T0).expect("5");
    m.settle(&t, &[budget("other", 100, 5, None)], &[5], T0);
    m.seed("other", 0, None);
    assert_eq!(m.spent("other"), 5);
}

#[test]
fn a_refused_check_charges_nothing_for_the_others() {
    let m = MemoryLimiter::new();
    let checks = |reserve| {
        [
            window("rpm", 10, 1),
            concurrency("conc", 5),
            budget("b", 100, reserve, None),
        ]
    };
    // The budget (index 2) refuses: nothing is charged to the window or the leases.
    for n in 0..20 {
        assert_eq!(
            admit(&m, &format!("big{n}"), &checks(101), T0),
            denial(2, None)
        );
    }
    // The first check that refuses is the one reported.
    let full = [window("rpm", 10, 11), concurrency("conc", 0)];
    assert_eq!(admit(&m, "x", &full, T0), denial(0, Some(60_000)));
    // All ten requests and five leases are still there to take.
    let mut tickets = Vec::new();
    for n in 0..5 {
        tickets.push(admit(&m, &format!("ok{n}"), &checks(20), T0).expect("fits"));
    }
    // The leases are full now (index 1), and the budget too, but the first refusal counts.
    assert_eq!(admit(&m, "y", &checks(0), T0), denial(1, Some(1_000)));
    for t in &tickets {
        m.settle(t, &checks(20), &[1, 0, 0], T0 + 1);
    }
    // Five units of the window left; the budget's reservations are gone.
    for n in 0..5 {
        assert!(admit(&m, &format!("more{n}"), &checks(20), T0 + 1).is_ok());
    }
    assert_eq!(
        admit(&m, "z", &checks(0), T0 + 1),
        denial(0, Some(61_000 - 1))
    );
    assert_eq!(m.spent("b"), 0);
}

#[test]
fn the_sweep_keeps_memory_bounded() {
    let m = MemoryLimiter::new();
    let lease = Duration::from_secs(5);
    for n in 0..1_000 {
        let checks = [
            window(&format!("w{n}"), 10, 1),
            concurrency(&format!("c{n}"), 10),
            budget(&format!("b{n}"), 10, 1, Some(T0 + 1_000)),
        ];
        assert!(m.admit(&n.to_string(), &checks, T0, lease).is_ok());
    }
    assert_eq!(m.names(), 3_000);
    // A day and a minute later every window, lease, reservation and counter is over.
    let later = T0 + 1_000 + BUDGET_GRACE_MS + 61_000;
    assert!(m.admit("x", &[], later, lease).is_ok());
    assert_eq!(m.names(), 0);
    // A total budget's counter is kept.
    let total = [budget("total", 10, 1, None)];
    let t = m.admit("t", &total, later, lease).expect("fits");
    m.settle(&t, &total, &[1], later);
    m.admit("y", &[], later + 2 * BUDGET_GRACE_MS, lease)
        .expect("no checks");
    assert_eq!((m.names(), m.spent("total")), (1, 1));
}

// === The memory and the Redis limiter on one sequence ===

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Deletes every key under `prefix`.
async fn delete_keys(client: &RedisClient, prefix: &str) {
    let pattern = format!("{prefix}*");
    let mut cursor = b"0".to_vec();
    loop {
        let reply = client
            .cmd(&[
                b"SCAN",
                &cursor,
                b"MATCH",
                pattern.as_bytes(),
                b"COUNT",
                b"1000",
            ])
            .await
            .expect("scan");
        let Value::Array(mut parts) = reply else {
            panic!("SCAN: {reply:?}");
        };
        let (Some(Value::Array(keys)), Some(Value::Bulk(next))) = (parts.pop(), parts.pop()) else {
            panic!("SCAN: {parts:?}");
        };
        for key in keys {
            if let Value::Bulk(k) = key {
                client.cmd(&[b"DEL", &k]).await.expect("del");
            }
        }
        if &next[..] == b"0" {
            return;
        }
        cursor = next.to_vec();
    }
}

fn kind_index(kind: &CheckKind) -> usize {
    match kind {
        CheckKind::Window { .. } => 0,
        CheckKind::Concurrency { .. } => 1,
        CheckKind::Budget { .. } => 2,
    }
}

/// Deletes the keys under its prefix when dropped, even when the test failed.
struct DeleteOnDrop(String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // Its own thread and runtime: `drop` may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = RedisClient::new(&redis_url(), Duration::from_secs(5)).expect("url");
            runtime.block_on(delete_keys(&client, &prefix));
        })
        .join();
    }
}

#[tokio::test]
async fn memory_and_redis_decide_alike() {
    let prefix = format!(
        "sluice-test:limits-prop-{}-{}:",
        std::process::id(),
        crate::unix_now_ms()
    );
    let _cleanup = DeleteOnDrop(prefix.clone());
    let client = RedisClient::new(&redis_url(), Duration::from_secs(5)).expect("url");
    let redis = Limiter::Redis(RedisLimiter::with_client(client.clone(), &prefix));
    let memory = Limiter::memory();
    let mut rng = Rng::seeded();
    // Virtual time from the wall clock, so the budgets' windows end in the future for Redis
    // too (their counters' expiries are relative to `now`, but stay sensible).
    let start = crate::unix_now_ms();
    let mut now = start;
    let day_ends = Some(start + 3_600_000);
    let mut outstanding: Vec<(Ticket, Vec<Check>)> = Vec::new();
    let (mut admitted, mut refused, mut settled) = (0, [0; 3], 0);
    for step in 0..8_000 {
        // New budgets now and then, as windows roll over, so that they don't stay spent.
        let (day, total) = (
            format!("day-{}", step / 500),
            format!("total-{}", step / 1_000),
        );
        match rng.range(0, 99) {
            0..=49 => {
                // Now and then a burst: on Redis, one script call for all of them.
                let burst = if rng.chance(30) { rng.range(2, 8) } else { 1 };
                let mut asked = Vec::new();
                for n in 0..burst {
                    let mut pool = vec![
                        window("rpm", 12, rng.range(0, 3)),
                        window("tpm", 60, rng.range(0, 30)),
                        concurrency("conc", 2),
                        budget(&day, 3_000, rng.range(0, 400), day_ends),
                        budget(&total, 8_000, rng.range(0, 300), None),
                    ];
                    // A random subset, in a random order.
                    let mut checks = Vec::new();
                    while !pool.is_empty() && (checks.is_empty() || rng.chance(60)) {
                        let i =
                            usize::try_from(rng.range(0, pool.len() as u64 - 1)).expect("index");
                        checks.push(pool.swap_remove(i));
                    }
                    // Whole quarter seconds, like the time steps: expiries meet `now` exactly.
                    let lease = Duration::from_millis(250 * rng.range(1, 40));
                    asked.push((format!("t{step}-{n}"), checks, lease));
                }
                // Spawned in order, so queued in order (this runtime has one thread).
                let runs: Vec<_> = asked
                    .iter()
                    .map(|(id, checks, lease)| {
                        let (redis, id, checks, lease) =
                            (redis.clone(), id.clone(), checks.clone(), *lease);
                        tokio::spawn(async move { redis.admit(&id, &checks, now, lease).await })
                    })
                    .collect();
                for ((id, checks, lease), run) in asked.into_iter().zip(runs) {
                    let m = memory
                        .admit(&id, &checks, now, lease)
                        .await
                        .expect("memory");
                    let r = run.await.expect("task").expect("redis");
                    assert_eq!(m, r, "step {step}: admit {checks:?} at +{}", now - start);
                    match m {
                        Ok(ticket) => {
                            admitted += 1;
                            outstanding.push((ticket, checks));
                        }
                        Err(d) => refused[kind_index(&checks[d.index].kind)] += 1,
                    }
                }
            }
            50..=79 if !outstanding.is_empty() => {
                let i = usize::try_from(rng.range(0, outstanding.len() as u64 - 1)).expect("i");
                let (ticket, checks) = if rng.chance(15) {
                    // Settled again later: off the once-per-ticket contract, but both
                    // still agree (a window is corrected again, a lease or a
                    // reservation ends once).
                    outstanding[i].clone()
                } else {
                    outstanding.swap_remove(i)
                };
                let actual: Vec<u64> = checks
                    .iter()
                    .map(|c| match c.kind {
                        CheckKind::Window { cost, .. } => rng.range(0, 2 * cost + 3),
                        CheckKind::Concurrency { .. } => 0,
                        CheckKind::Budget { reserve, .. } => rng.range(0, reserve + 100),
                    })
                    .collect();
                memory
                    .settle(&ticket, &checks, &actual, now)
                    .await
                    .expect("memory");
                if rng.chance(50) {
                    // Goes with the next call, before its admissions.
                    redis.settle_later(&ticket, &checks, &actual, now);
                } else {
                    redis
                        .settle(&ticket, &checks, &actual, now)
                        .await
                        .expect("redis");
                }
                settled += 1;
            }
            80..=81 => {
                // A seed is a call of its own: what is queued goes first.
                assert!(redis.flush(Duration::from_secs(5)).await);
                let spent = rng.range(0, 1_500);
                for l in [&memory, &redis] {
                    l.seed(&day, spent, day_ends).await.expect("seed");
                }
            }
            _ => {
                now += match rng.range(0, 19) {
                    0 => rng.range(20_000, 70_000),
                    1..=9 => rng.range(0, 2_000),
                    _ => 250 * rng.range(0, 8),
                };
            }
        }
        if step % 100 == 0 {
            assert!(redis.flush(Duration::from_secs(5)).await);
            for name in [&day, &total] {
                assert_eq!(
                    memory.spent(name).await.expect("memory"),
                    redis.spent(name).await.expect("redis"),
                    "step {step}: spent {name}"
                );
            }
        }
    }
    println!(
        "admitted {admitted}, refused (window, concurrency, budget) {refused:?}, settled {settled}"
    );
    assert!(
        admitted > 300 && refused.iter().all(|&n| n > 10),
        "{admitted} / {refused:?}"
    );
    assert_eq!(redis.fallbacks(), 0);
    assert_eq!(redis.settles_dropped(), 0);
}
