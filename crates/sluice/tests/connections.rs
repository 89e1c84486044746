//! Many keep-alive connections through the real binary (issue 22): 4,096 connections opened
//! and left idle, then each sends two requests, all at once. Within 10 s of the last
//! connection closing, the gateway's resident memory is back to at most 1.5 times its idle
//! figure (with a little slack for a loaded machine: the allocator's pages were handed back)
//! and its open descriptors to its idle count plus the few idle upstream connections each
//! worker keeps after a burst (`trim::KEEP_IDLE`): the thousands the burst opened were closed.
//! The 4,096 requests in flight shared the provider's default `max_connections` (1,024)
//! upstream connections, the rest waiting their turn: at most that many were open at once,
//! plus each worker's idle ones (a request whose slot was just freed may open a connection
//! while the answer's is still on its way back to the pool), and the 8,192 requests reused
//! them: at most one connection accepted for every two requests (the count varies from run
//! to run: a connection beyond a worker's 256 idle ones is closed when it comes back, and
//! may be opened again). The peak is asserted
//! loosely (this is an unoptimised build, and a loaded machine's), and printed: issue 22's
//! 64 MiB peak is bench/tail.sh's to measure on the release build (BENCHMARKS.md).

#![allow(clippy::unwrap_used)]

mod common;

use common::{temp_dir, Serving};
use sluice_testkit::load::{chat_body, post_request, rss_kib, AsyncConn};
use sluice_testkit::FakeUpstream;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 4096;
const MIB: u64 = 1024;
/// Idle upstream connections a worker keeps after a burst (`sluice_server::trim::KEEP_IDLE`).
const KEEP_IDLE: usize = 16;
/// Worker threads of the gateway under test (`common::Serving` passes `--threads 2`).
const WORKERS: usize = 2;
/// Slack over 1.5 times idle after the load (KiB): a loaded machine's timing.
const SLACK_KIB: u64 = 2 * MIB;
/// The provider's default bound on requests in flight (`max_connections`).
const MAX_UPSTREAM: usize = 1024;
/// Idle upstream connections a worker's pool keeps (`pool_max_idle_per_host`'s default, 256).
const POOL_IDLE: usize = 256;
/// Open upstream connections beyond `max_connections`: each worker's idle ones. A request
/// whose slot was just freed may find the answer's connection not yet back in the pool and
/// open another; the one coming back then waits idle (or is closed past the pool's 256).
const OPEN_SLACK: usize = WORKERS * POOL_IDLE;
/// Highest peak accepted on this debug build (KiB): 233 MiB before the bound and the
/// allocator's lazy commit; see the figures this test prints. 200 until 2026-12-05, when the
/// day's pipeline changes (uploads answered while they arrive, answers' validation) brought
/// the peak to 241 MiB, 205 MiB once the upload path's future was boxed: what the rest is has
/// not been found yet (the request future's size is the first suspect). 145 MiB once the
/// client side's HTTP/1.1 became sluice's own (`front`: no buffers held between requests,
/// no HTTP/2 state in HTTP/1 tasks), so the bound is 175.
const PEAK_BOUND_KIB: u64 = PEAK_BOUND_MIB * MIB;
const PEAK_BOUND_MIB: u64 = 175;
/// How long after the close memory may take to come back.
const AFTER: Duration = Duration::from_secs(10);

/// File descriptors this test needs: its connections and the fake upstream's ends of the
/// gateway's, and the gateway the same (it inherits the limit).
const FDS: u64 = 2 * CONNECTIONS as u64 + 512;

/// (soft, hard) limit of open files.
fn nofile() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut n = line
        .split_whitespace()
        .skip(3)
        .map(|v| v.parse().unwrap_or(u64::MAX));
    (n.next().unwrap(), n.next().unwrap())
}

/// Raises this process's soft limit of open files to its hard limit when it is below [`FDS`].
fn raise_fd_limit() {
    let (soft, hard) = nofile();
    if soft < FDS {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
    }
    let (soft, _) = nofile();
    assert!(
        soft >= FDS,
        "this test needs {FDS} open files (ulimit -n); the limit is {soft}"
    );
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn config(dir: &std::path::Path, upstream: &str) -> std::path::PathBuf {
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{data}"
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
[[models]]
name = "fake-model"
provider = "fake"
"#,
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// Opens `n` connections, 128 at a time (a burst of thousands overflows a listen backlog).
async fn open(addr: SocketAddr, n: usize) -> Vec<AsyncConn> {
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let batch = (n - conns.len()).min(128);
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..batch {
            opening.spawn(AsyncConn::open(addr));
        }
        while let Some(c) = opening.join_next().await {
            conns.push(c.unwrap().unwrap());
        }
    }
    conns
}

/// The highest resident memory of `pid` while the sampler runs, sampled every 10 ms.
struct Sampler {
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let running = Arc::new(AtomicBool::new(true));
        let (p, r) = (Arc::clone(&peak), Arc::clone(&running));
        let thread = std::thread::spawn(move || {
            while r.load(Relaxed) {
                p.fetch_max(rss_kib(pid), Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            peak,
            running,
            thread,
        }
    }

    fn stop(self) -> u64 {
        self.running.store(false, Relaxed);
        self.thread.join().unwrap();
        self.peak.load(Relaxed)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn after_4096_busy_keep_alive_connections_memory_and_descriptors_come_back() {
    raise_fd_limit();
    let fake = FakeUpstream::start().await;
    let dir = temp_dir("connections");
    let serving = Serving::start(&config(&dir, &fake.base_url()));
    let pid = serving.child.id();
    let addr: SocketAddr = serving.addr.parse().unwrap();
    let request: Arc<[u8]> = post_request(
        addr,
        "/v1/chat/completions",
        None,
        &chat_body("fake-model", false),
    )
    .into();

    let mut first = AsyncConn::open(addr).await.unwrap();
    assert_eq!(first.exchange(&request).await.unwrap().status, 200);
    drop(first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);
    let idle_fds = fds(pid);

    let sampler = Sampler::start(pid);
    let conns = open(addr, CONNECTIONS).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // All busy at once: each connection sends two requests, one after the other.
    let mut busy = tokio::task::JoinSet::new();
    for mut c in conns {
        let request = Arc::clone(&request);
        busy.spawn(async move {
            for _ in 0..2 {
                let answer = c.exchange(&request).await.unwrap();
                assert_eq!(answer.status, 200);
            }
        });
    }
    while let Some(done) = busy.join_next().await {
        done.unwrap();
    }
    let peak = sampler.stop();

    // Every connection is closed now; memory comes back within AFTER.
    let closed = Instant::now();
    let bound = idle * 3 / 2 + SLACK_KIB;
    // Its own idle upstream connection was among those kept; one more for a late accept.
    let fd_bound = idle_fds + WORKERS * KEEP_IDLE + 1;
    let (mut after, mut after_fds) = (rss_kib(pid), fds(pid));
    while (after > bound || after_fds > fd_bound) && closed.elapsed() < AFTER {
        tokio::time::sleep(Duration::from_millis(250)).await;
        (after, after_fds) = (rss_kib(pid), fds(pid));
    }
    let upstream = fake.connections_accepted();
    let upstream_open = fake.peak_open_connections();
    eprintln!(
        "idle {idle} KiB, {idle_fds} descriptors; peak with {CONNECTIONS} connections {peak} KiB, \
         {upstream} upstream connections accepted, at most {upstream_open} open at once; \
         {:.1} s after they closed {after} KiB, {after_fds} descriptors",
        closed.elapsed().as_secs_f64()
    );
    assert!(
        upstream_open <= MAX_UPSTREAM + OPEN_SLACK,
        "{upstream_open} upstream connections open at once for {CONNECTIONS} requests in flight, \
         above max_connections ({MAX_UPSTREAM}) + {OPEN_SLACK}"
    );
    assert!(
        upstream <= CONNECTIONS,
        "{upstream} upstream connections accepted for {} requests: connections were not reused",
        2 * CONNECTIONS
    );
    assert!(
        peak <= PEAK_BOUND_KIB,
        "peak {peak} KiB with {CONNECTIONS} busy connections, above {PEAK_BOUND_MIB} MiB"
    );
    assert!(
        after <= bound,
        "{after} KiB {AFTER:?} after the connections closed, above 1.5 x idle ({idle} KiB) + slack"
    );
    assert!(
        after_fds <= fd_bound,
        "{after_fds} descriptors {AFTER:?} after the connections closed, above {fd_bound}"
    );
    assert!(serving.stop());
}
