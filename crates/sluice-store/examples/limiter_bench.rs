//! Redis CPU per limiter call: runs admissions and settles of a gateway-like request on the
//! Redis limiter and reads Redis's own accounting (`INFO commandstats`, the `usec` and
//! `calls` of `evalsha` and `eval`) around each phase, so admit and settle are measured
//! apart. Two requests: the 4-check one (rpm and tpm windows, concurrency, a day budget)
//! and an rpm-only one.
//!
//! `cargo run --release -p sluice-store --example limiter_bench -- [URL] [REQUESTS] [TASKS]`
//! (defaults `redis://127.0.0.1:6379`, 40,000, 16). Use a Redis of your own: it reads the
//! counters as deltas (no `CONFIG RESETSTAT`), but other clients' scripts would count too.
//!
//! Time is virtual (the limiter's `now` is the caller's): the requests are spread over
//! `SPAN_MS`, longer than a window, so the windows hold a full minute of buckets, as under
//! a sustained load. Each round, every task admits `BATCH` requests (so up to
//! `TASKS * BATCH` are in flight, holding leases and reservations), then settles them.

#![allow(clippy::print_stdout)]

use sluice_store::redis::Value;
use sluice_store::{Check, CheckKind, Limiter, RedisClient, Ticket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Virtual time the run covers.
const SPAN_MS: u64 = 120_000;
/// Requests each task admits before settling them.
const BATCH: usize = 16;
/// API keys the requests are spread over (each its own rpm, tpm, concurrency, budget).
const KEYS: u64 = 4;
const LEASE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    FourChecks,
    RpmOnly,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Self::FourChecks => "4-check (rpm, tpm, concurrency, budget)",
            Self::RpmOnly => "rpm-only",
        }
    }

    /// The checks of request `n`, and what each really took.
    fn request(self, tag: &str, n: u64, day_ends: u64) -> (Vec<Check>, Vec<u64>) {
        let key = n % KEYS;
        let check = |what: &str, kind| Check {
            name: format!("{tag}:key:{key}:{what}"),
            kind,
        };
        let rpm = check(
            "rpm",
            CheckKind::Window {
                limit: 1 << 40,
                cost: 1,
            },
        );
        if self == Self::RpmOnly {
            return (vec![rpm], vec![1]);
        }
        let estimate = 500 + (n % 7) * 100;
        let checks = vec![
            rpm,
            check(
                "tpm",
                CheckKind::Window {
                    limit: 1 << 40,
                    cost: estimate,
                },
            ),
            check("conc", CheckKind::Concurrency { limit: 100_000 }),
            check(
                "budget:d",
                CheckKind::Budget {
                    limit: 1 << 50,
                    reserve: estimate * 2_000,
                    window_ends: Some(day_ends),
                },
            ),
        ];
        let tokens = estimate / 2 + (n % 13) * 17;
        (checks, vec![1, tokens, 0, tokens * 2_000])
    }
}

/// `evalsha` + `eval`: (calls, usec) so far, and the CPU time of Redis's main thread (user
/// + sys, µs: the commands' work plus reading and answering them).
async fn script_stats(client: &RedisClient) -> (u64, u64, u64) {
    let reply = client.cmd(&[b"INFO", b"all"]).await.expect("INFO all");
    let Value::Bulk(text) = reply else {
        panic!("INFO: {reply:?}");
    };
    let text = String::from_utf8_lossy(&text);
    let (mut calls, mut usec, mut cpu) = (0, 0, 0.0);
    for line in text.lines() {
        if let Some(v) = line
            .strip_prefix("used_cpu_user_main_thread:")
            .or_else(|| line.strip_prefix("used_cpu_sys_main_thread:"))
        {
            cpu += v.trim().parse::<f64>().expect("cpu seconds");
        }
        let Some(rest) = line
            .strip_prefix("cmdstat_evalsha:")
            .or_else(|| line.strip_prefix("cmdstat_eval:"))
        else {
            continue;
        };
        for field in rest.split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => calls += v.parse::<u64>().expect("calls"),
                Some(("usec", v)) => usec += v.parse::<u64>().expect("usec"),
                _ => {}
            }
        }
    }
    (calls, usec, (cpu * 1e6) as u64)
}

#[derive(Default)]
struct Phase {
    calls: u64,
    usec: u64,
    cpu: u64,
}

impl Phase {
    fn add(&mut self, before: (u64, u64, u64), after: (u64, u64, u64)) {
        self.calls += after.0 - before.0;
        self.usec += after.1 - before.1;
        self.cpu += after.2 - before.2;
    }

    fn per_call(&self, n: u64) -> String {
        if self.calls == 0 {
            return "-".into();
        }
        format!("{:.2}", n as f64 / self.calls as f64)
    }
}

async fn run(url: &str, shape: Shape, requests: u64, tasks: usize) {
    let tag = format!(
        "bench-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    );
    let client = RedisClient::new(url, Duration::from_secs(5)).expect("url");
    let limiter = Limiter::Redis(sluice_store::limits::RedisLimiter::with_client(
        client.clone(),
        "sluice-bench:",
    ));
    let start = sluice_store::unix_now_ms();
    let day_ends = start + 86_400_000;
    let issued = Arc::new(AtomicU64::new(0));
    // The virtual clock: requests issued so far, spread over `SPAN_MS`.
    let clock = {
        let issued = Arc::clone(&issued);
        move || start + issued.load(Relaxed) * SPAN_MS / requests
    };
    let per_round = (tasks * BATCH) as u64;
    let rounds = requests.div_ceil(per_round);
    let barrier = Arc::new(Barrier::new(tasks + 1));
    let denied = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let (limiter, barrier, issued, denied, clock, tag) = (
                limiter.clone(),
                Arc::clone(&barrier),
                Arc::clone(&issued),
                Arc::clone(&denied),
                clock.clone(),
                tag.clone(),
            );
            tokio::spawn(async move {
                for round in 0..rounds {
                    barrier.wait().await; // admit
                    let mut held: Vec<(Ticket, Vec<Check>, Vec<u64>)> = Vec::new();
                    for b in 0..BATCH {
                        let n = (round * per_round) + (task * BATCH + b) as u64;
                        let (checks, actual) = shape.request(&tag, n, day_ends);
                        let now = clock();
                        issued.fetch_add(1, Relaxed);
                        match limiter
                            .admit(&format!("{tag}-{n}"), &checks, now, LEASE)
                            .await
                            .expect("never fails")
                        {
                            Ok(ticket) => held.push((ticket, checks, actual)),
                            Err(_) => {
                                denied.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    barrier.wait().await; // admitted
                    barrier.wait().await; // settle
                    for (ticket, checks, actual) in held {
                        assert!(!ticket.fallback, "fell back to the in-process limiter");
                        limiter
                            .settle(&ticket, &checks, &actual, clock())
                            .await
                            .expect("settle");
                    }
                    barrier.wait().await; // settled
                }
            })
        })
        .collect();
    let (mut admit, mut settle) = (Phase::default(), Phase::default());
    let began = Instant::now();
    for _ in 0..rounds {
        let s0 = script_stats(&client).await;
        barrier.wait().await;
        barrier.wait().await;
        let s1 = script_stats(&client).await;
        barrier.wait().await;
        barrier.wait().await;
        let s2 = script_stats(&client).await;
        admit.add(s0, s1);
        settle.add(s1, s2);
    }
    let took = began.elapsed();
    for w in workers {
        w.await.expect("worker");
    }
    let done = rounds * per_round;
    println!("{}:", shape.name());
    println!(
        "  {done} requests from {tasks} tasks in {:.2} s ({:.0} req/s incl. the stats calls), {} denied",
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64(),
        denied.load(Relaxed)
    );
    for (what, p) in [("admit: ", &admit), ("settle:", &settle)] {
        println!(
            "  {what} {:>7} calls  usec_per_call={}  (main-thread CPU per call, with I/O: {} us)",
            p.calls,
            p.per_call(p.usec),
            p.per_call(p.cpu),
        );
    }
    println!(
        "  evalsha usec per request (admit + settle): {:.2}",
        (admit.usec + settle.usec) as f64 / done as f64
    );
    if admit.calls + settle.calls > 0 {
        println!(
            "  evalsha usec_per_call over both: {:.2}",
            (admit.usec + settle.usec) as f64 / (admit.calls + settle.calls) as f64
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let requests = args.next().map_or(40_000, |s| s.parse().expect("REQUESTS"));
    let tasks = args.next().map_or(16, |s| s.parse().expect("TASKS"));
    for shape in [Shape::FourChecks, Shape::RpmOnly] {
        run(&url, shape, requests, tasks).await;
    }
}
