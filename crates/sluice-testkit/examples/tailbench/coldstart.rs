//! Cold start: from exec of the gateway to its first answered chat completion.

use crate::args::Args;
use sluice_testkit::load::{chat_body, post_request, Conn};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Between connection attempts while nothing listens.
const POLL: Duration = Duration::from_micros(100);

pub fn run(args: &Args) -> Result<(), String> {
    let name = args.get("name").unwrap_or("gateway");
    let addr: SocketAddr = args
        .get("addr")
        .ok_or("coldstart needs --addr")?
        .parse()
        .map_err(|_| "bad --addr")?;
    let runs: usize = args.num("runs", 10)?;
    let limit = Duration::from_secs_f64(args.num("limit", 120.0)?);
    let (program, rest) = args
        .command
        .split_first()
        .ok_or("coldstart needs -- COMMAND")?;
    let request = post_request(
        addr,
        "/v1/chat/completions",
        Some(args.key()),
        &chat_body(args.model(), false),
    );
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let mut child = Command::new(program)
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{program}: {e}"))?;
        let answered = first_answer(addr, &request, start, limit);
        stop(&mut child);
        let t = answered.ok_or_else(|| format!("{name}: no answer within {limit:?}"))?;
        times.push(t.as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "| {name} | {runs} | {:.2} | {:.2} | {:.2} |",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    eprintln!("{name}: cold start ms {times:.2?}");
    Ok(())
}

/// Polls `addr` until a request gets a 2xx answer; the time since `start`.
fn first_answer(
    addr: SocketAddr,
    request: &[u8],
    start: Instant,
    limit: Duration,
) -> Option<Duration> {
    while start.elapsed() < limit {
        match Conn::open(addr, Duration::from_secs(10)).and_then(|mut c| c.exchange(request)) {
            Ok(a) if a.ok() => return Some(a.end - start),
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => std::thread::sleep(POLL),
        }
    }
    None
}

/// SIGTERM (so that nginx's master stops its workers), then a kill after 10 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
