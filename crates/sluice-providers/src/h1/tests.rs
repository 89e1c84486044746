//! The driven HTTP/1.1 client against a hand-written upstream on loopback, which shows
//! what happens to each connection: reuse, replacement of one the upstream closed, the idle
//! timeout, streaming through the body, and closing when a body is dropped unread.

use super::{Failure, H1Body, H1Client};
use crate::upstream_body::UpstreamBody;
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use sluice_core::config::ProviderConfig;
use sluice_core::env::MapEnv;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How the upstream answers each request on a connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `ok`, and wait for the next request.
    KeepAlive,
    /// `ok`, then close the connection (no `Connection: close` said) once `Upstream::go`
    /// is notified.
    CloseAfterOne,
    /// A chunked body in two pieces: the second once `Upstream::go` is notified.
    TwoPieces,
    /// Promise 10 bytes, send 2, and wait for the client to leave.
    Partial,
}

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    /// Connections the client closed (end of file while waiting for a request).
    closed_by_client: AtomicUsize,
    /// Connections the upstream closed itself.
    closed_by_upstream: AtomicUsize,
    changed: Notify,
}

struct Upstream {
    base_url: String,
    seen: Arc<Seen>,
    go: Arc<Notify>,
}

impl Upstream {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let go = Arc::new(Notify::new());
        let (s, g) = (Arc::clone(&seen), Arc::clone(&go));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.accepted.fetch_add(1, SeqCst);
                tokio::spawn(serve(stream, mode, Arc::clone(&s), Arc::clone(&g)));
            }
        });
        Self { base_url, seen, go }
    }

    fn count(&self, what: fn(&Seen) -> &AtomicUsize) -> usize {
        what(&self.seen).load(SeqCst)
    }

    /// Waits (at most 5 s) until `what` reaches `n`.
    async fn wait_for(&self, what: fn(&Seen) -> &AtomicUsize, n: usize) -> bool {
        let wait = async {
            loop {
                let changed = self.seen.changed.notified();
                if what(&self.seen).load(SeqCst) >= n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_ok()
    }
}

fn bump(seen: &Seen, what: &AtomicUsize) {
    what.fetch_add(1, SeqCst);
    seen.changed.notify_waiters();
}

/// Reads one request head and its `content-length` body; `false` at end of file.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.is_ok()
}

async fn serve(mut stream: TcpStream, mode: Mode, seen: Arc<Seen>, go: Arc<Notify>) {
    loop {
        if !read_request(&mut stream).await {
            bump(&seen, &seen.closed_by_client);
            return;
        }
        bump(&seen, &seen.requests);
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n";
        let io = match mode {
            Mode::KeepAlive | Mode::CloseAfterOne => {
                stream
                    .write_all(format!("{head}content-length: 2\r\n\r\nok").as_bytes())
                    .await
            }
            Mode::TwoPieces => {
                let first = format!("{head}transfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n");
                let _ = stream.write_all(first.as_bytes()).await;
                go.notified().await;
                stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await
            }
            Mode::Partial => {
                let _ = stream
                    .write_all(format!("{head}content-length: 10\r\n\r\nok").as_bytes())
                    .await;
                // Held until the client closes the connection.
                let mut rest = [0u8; 16];
                let _ = stream.read(&mut rest).await;
                bump(&seen, &seen.closed_by_client);
                return;
            }
        };
        if mode == Mode::CloseAfterOne {
            go.notified().await;
        }
        if io.is_err() || mode == Mode::CloseAfterOne {
            drop(stream);
            bump(&seen, &seen.closed_by_upstream);
            return;
        }
    }
}

fn config(base_url: &str, idle_ms: u64, max_idle: usize) -> ProviderConfig {
    let toml = format!(
        "[[providers]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"{base_url}\"\n\
         pool_idle_timeout_ms = {idle_ms}\npool_max_idle_per_host = {max_idle}\n"
    );
    let config = sluice_core::config::Config::from_toml(&toml, &MapEnv::default()).unwrap();
    config.providers[0].clone()
}

fn client(up: &Upstream, idle_ms: u64, max_idle: usize) -> H1Client {
    H1Client::new(&config(&up.base_url, idle_ms, max_idle), 1).expect("a plain http URL")
}

async fn send(client: &H1Client, base_url: &str) -> Result<Response<H1Body>, Failure> {
    let request = http::Request::post(format!("{base_url}/chat/completions"))
        .body(UpstreamBody::new(Bytes::from_static(b"{}")))
        .unwrap();
    client.send(0, request).await
}

async fn text(response: Response<H1Body>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_connection_is_reused_once_its_answer_was_read() {
    let up = Upstream::start(Mode::KeepAlive).await;
    let c = client(&up, 90_000, 256);
    for _ in 0..3 {
        assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
    }
    assert_eq!(up.count(|s| &s.accepted), 1);
    assert_eq!(up.count(|s| &s.requests), 3);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let up = Upstream::start(Mode::CloseAfterOne).await;
    let c = client(&up, 90_000, 256);
    for n in 1..=3 {
        assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
        // The connection, idle in the pool, is closed by the upstream.
        up.go.notify_one();
        assert!(up.wait_for(|s| &s.closed_by_upstream, n).await);
    }
    assert_eq!(up.count(|s| &s.accepted), 3);
    assert_eq!(up.count(|s| &s.requests), 3);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let up = Upstream::start(Mode::KeepAlive).await;
    let c = client(&up, 50, 256);
    assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
    assert!(
        up.wait_for(|s| &s.closed_by_client, 1).await,
        "the pool's timer closed the idle connection"
    );
    assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
    assert_eq!(up.count(|s| &s.accepted), 2);
}

#[tokio::test]
async fn no_connection_is_kept_when_the_pool_keeps_none() {
    let up = Upstream::start(Mode::KeepAlive).await;
    let c = client(&up, 90_000, 0);
    for n in 1..=2 {
        assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
        assert!(up.wait_for(|s| &s.closed_by_client, n).await);
    }
    assert_eq!(up.count(|s| &s.accepted), 2);
}

#[tokio::test]
async fn shrinking_closes_the_idle_connections_beyond_the_most_recently_used() {
    let up = Upstream::start(Mode::KeepAlive).await;
    let c = client(&up, 90_000, 256);
    // Four requests at once: four connections, idle in the pool afterwards.
    let answers = futures_join4(&c, &up.base_url).await;
    assert!(answers.iter().all(|a| a == "ok"));
    assert_eq!(up.count(|s| &s.accepted), 4);
    assert_eq!(c.pools[0].idle(), 4);
    c.shrink_idle(0, 1);
    assert!(up.wait_for(|s| &s.closed_by_client, 3).await);
    assert_eq!(c.pools[0].idle(), 1);
    // The one kept still serves.
    assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
    assert_eq!(up.count(|s| &s.accepted), 4);
    c.shrink_idle(7, 0);
    assert!(up.wait_for(|s| &s.closed_by_client, 4).await);
}

async fn futures_join4(c: &H1Client, base_url: &str) -> Vec<String> {
    let (a, b, d, e) = tokio::join!(
        send(c, base_url),
        send(c, base_url),
        send(c, base_url),
        send(c, base_url)
    );
    let mut out = Vec::new();
    for r in [a, b, d, e] {
        out.push(text(r.unwrap()).await);
    }
    out
}

#[tokio::test]
async fn a_body_streams_as_it_arrives_and_its_connection_is_reused() {
    let up = Upstream::start(Mode::TwoPieces).await;
    let c = client(&up, 90_000, 256);
    for _ in 0..2 {
        let mut body = send(&c, &up.base_url).await.unwrap().into_body();
        // The first piece arrives while the upstream still holds the second.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first");
        up.go.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "second");
    }
    assert_eq!(up.count(|s| &s.accepted), 1);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let up = Upstream::start(Mode::Partial).await;
    let c = client(&up, 90_000, 256);
    let mut body = send(&c, &up.base_url).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "ok");
    drop(body);
    assert!(
        up.wait_for(|s| &s.closed_by_client, 1).await,
        "the upstream saw the request cancelled"
    );
    // The next request gets a connection of its own.
    let mut body = send(&c, &up.base_url).await.unwrap().into_body();
    assert!(body.frame().await.is_some());
    assert_eq!(up.count(|s| &s.accepted), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let c = H1Client::new(&config(&base_url, 90_000, 256), 1).unwrap();
    let request = http::Request::post(format!("{base_url}/chat/completions"))
        .body(UpstreamBody::new(Bytes::new()))
        .unwrap();
    assert!(matches!(c.send(0, request).await, Err(Failure::Connect(_))));
}

#[test]
fn only_plain_http_one_point_one_upstreams_are_driven() {
    assert!(H1Client::new(&config("https://api.openai.com/v1", 1, 1), 1).is_none());
    let mut h2c = config("http://127.0.0.1:1/v1", 1, 1);
    h2c.http2_prior_knowledge = true;
    assert!(H1Client::new(&h2c, 1).is_none());
    assert!(H1Client::new(&config("http://127.0.0.1:1/v1", 1, 1), 1).is_some());
}
