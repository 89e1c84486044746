//! Resident memory under many keep-alive connections: at idle, with N connections open and
//! idle, at its peak while all N send requests back to back, and some seconds after the
//! last connections closed.

use crate::args::{Args, Target};
use sluice_testkit::load::{chat_body, post_request, rss_kib, AsyncConn};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections opened at once (a burst of thousands overflows a listen backlog).
const CONNECT_BATCH: usize = 128;

/// One level of the sweep.
struct Level {
    conns: usize,
    idle_open_kib: u64,
    peak_kib: u64,
    requests: usize,
    errors: usize,
}

pub fn run(args: &Args) -> Result<(), String> {
    let levels = args.list("levels", &[64, 256, 1024, 4096])?;
    let busy = Duration::from_secs_f64(args.num("busy", 3.0)?);
    let after = Duration::from_secs_f64(args.num("after", 10.0)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!("| target | idle MiB | conns | open, idle MiB | peak busy MiB | requests | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut summary = Vec::new();
    for t in &args.targets {
        let pid = t
            .pid
            .ok_or_else(|| format!("{}: memory needs NAME=ADDR@PID", t.name))?;
        let request = post_request(
            t.addr,
            "/v1/chat/completions",
            Some(args.key()),
            &chat_body(args.model(), false),
        );
        // Idle: after one request (the first connection to the upstream is open).
        runtime.block_on(async {
            let mut c = AsyncConn::open(t.addr).await.map_err(|e| e.to_string())?;
            c.exchange(&request).await.map_err(|e| e.to_string())
        })?;
        std::thread::sleep(Duration::from_secs(2));
        let idle = rss_kib(pid);
        let mut rows = Vec::new();
        for &n in &levels {
            let level = runtime.block_on(level(t, pid, n, busy, &request))?;
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                mib(idle),
                n,
                mib(level.idle_open_kib),
                mib(level.peak_kib),
                level.requests,
                level.errors
            );
            rows.push(level);
            std::thread::sleep(Duration::from_secs(1));
        }
        // The last level's connections closed when it returned.
        let closed = Instant::now();
        let mut samples = Vec::new();
        for s in [1u64, 5, after.as_secs().max(1)] {
            let at = closed + Duration::from_secs(s);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            samples.push((s, rss_kib(pid)));
        }
        let peak = rows.iter().map(|l| l.peak_kib).max().unwrap_or(0);
        let last = samples.last().map_or(0, |s| s.1);
        summary.push(format!(
            "- {}: idle {} MiB, peak {} MiB at {} connections, after the load {} ({} s: {} MiB = {:.2}x idle)",
            t.name,
            mib(idle),
            mib(peak),
            rows.last().map_or(0, |l| l.conns),
            samples.iter().map(|(s, k)| format!("{s} s {} MiB", mib(*k))).collect::<Vec<_>>().join(", "),
            after.as_secs(),
            mib(last),
            last as f64 / idle.max(1) as f64
        ));
    }
    println!();
    for s in summary {
        println!("{s}");
    }
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Opens `n` connections, waits a second, then has each send requests back to back for
/// `busy` while a thread samples the process's memory every 10 ms; closes them all.
async fn level(
    t: &Target,
    pid: u32,
    n: usize,
    busy: Duration,
    request: &[u8],
) -> Result<Level, String> {
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let batch = (n - conns.len()).min(CONNECT_BATCH);
        let opening: Vec<_> = (0..batch).map(|_| AsyncConn::open(t.addr)).collect();
        for c in futures_join(opening).await {
            conns.push(c.map_err(|e| format!("{}: connect: {e}", t.name))?);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_open_kib = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while sampling.load(Relaxed) {
                peak.fetch_max(rss_kib(pid), Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let requests = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + busy;
    let request: Arc<[u8]> = request.into();
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        let (request, requests, errors) = (
            Arc::clone(&request),
            Arc::clone(&requests),
            Arc::clone(&errors),
        );
        tasks.spawn(async move {
            // Every connection sends at least one request, however slow the target.
            loop {
                match tokio::time::timeout(Duration::from_secs(60), c.exchange(&request)).await {
                    Ok(Ok(a)) if a.ok() => requests.fetch_add(1, Relaxed),
                    Ok(Ok(_)) => errors.fetch_add(1, Relaxed),
                    _ => {
                        errors.fetch_add(1, Relaxed);
                        return;
                    }
                };
                if Instant::now() >= end {
                    return;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    sampling.store(false, Relaxed);
    let _ = sampler.join();
    Ok(Level {
        conns: n,
        idle_open_kib,
        peak_kib: peak.load(Relaxed),
        requests: requests.load(Relaxed),
        errors: errors.load(Relaxed),
    })
}

/// Runs the futures side by side on this task and gives their outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
