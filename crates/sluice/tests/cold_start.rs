//! `sluice serve` with one OpenAI-compatible provider serves from the moment it listens
//! (issue 22): the first connection it accepts gets its chat completion answered 200 and
//! `/health/ready` says `ready`, never a 503 while something warms up. How soon after exec
//! that is (under 20 ms on the release build) is bench/tail.sh's to measure, not a timed test's:
//! the times are printed only.

#![allow(clippy::unwrap_used)]

mod common;

use common::{sluice, temp_dir};
use sluice_testkit::load::{chat_body, get_request, post_request, Conn};
use sluice_testkit::FakeUpstream;
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

const RUNS: usize = 3;

/// A loopback port nothing listens on now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `addr` until a connection is accepted; on that first connection, a chat completion
/// and a readiness probe must both be answered 200. The time from `start` to the chat's answer.
fn first_answer(addr: SocketAddr, start: Instant) -> Duration {
    let chat = post_request(
        addr,
        "/v1/chat/completions",
        None,
        &chat_body("fake-model", false),
    );
    let ready = get_request(addr, "/health/ready");
    let mut conn = loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing listens after 60 s"
        );
        match Conn::open(addr, Duration::from_secs(30)) {
            Ok(c) => break c,
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    };
    let answer = conn.exchange(&chat).unwrap();
    assert_eq!(answer.status, 200, "the first chat completion");
    let probe = conn.exchange(&ready).unwrap();
    assert_eq!(probe.status, 200, "/health/ready on the first connection");
    answer.end - start
}

#[test]
fn serve_with_one_provider_answers_on_the_first_connection_it_accepts() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = runtime.block_on(FakeUpstream::start());
    let dir = temp_dir("cold-start");
    let addr = free_port();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\n[storage]\ndata_dir = \"{}\"\n\
             [[providers]]\nname = \"fake\"\ntype = \"openai\"\nbase_url = \"{}\"\n\
             [[models]]\nname = \"fake-model\"\nprovider = \"fake\"\n",
            dir.join("data").display(),
            fake.base_url()
        ),
    )
    .unwrap();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut child = sluice()
            .args(["serve", "--config"])
            .arg(&config)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let took = first_answer(addr, start);
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(child.wait().unwrap().success());
        times.push(took);
    }
    eprintln!("exec to first answer (not asserted: see bench/tail.sh): {times:?}");
}
