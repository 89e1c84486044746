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
        wait_for(&self.seen, what, n).await
    }
}

/// Waits (at most 5 s) until `what` of `seen` reaches `n`.
async fn wait_for(seen: &Seen, what: fn(&Seen) -> &AtomicUsize, n: usize) -> bool {
    let wait = async {
        loop {
            let changed = seen.changed.notified();
            if what(seen).load(SeqCst) >= n {
                return;
            }
            changed.await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .is_ok()
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
async fn a_request_whose_write_fails_unsent_on_a_reused_connection_goes_on_a_new_one() {
    let up = Upstream::start(Mode::CloseAfterOne).await;
    let c = client(&up, 90_000, 256);
    assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
    // The idle connection looks alive (nothing to read on it) but cannot be written to.
    c.pools[0].each_idle(super::conn::Conn::shut_sending);
    assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
    assert_eq!(up.count(|s| &s.accepted), 2);
    assert_eq!(up.count(|s| &s.requests), 2);
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
    c.shrink_idle(0, 0);
    assert!(up.wait_for(|s| &s.closed_by_client, 4).await);
}

#[tokio::test]
async fn a_thread_that_is_no_worker_has_a_pool_of_its_own() {
    let up = Upstream::start(Mode::KeepAlive).await;
    let c = client(&up, 90_000, 256);
    assert_eq!(text(send(&c, &up.base_url).await.unwrap()).await, "ok");
    assert_eq!(c.pools[0].idle(), 1);
    // The acceptor's batch lines and health checks: not worker 0's connection.
    let request = http::Request::post(format!("{}/chat/completions", up.base_url))
        .body(UpstreamBody::new(Bytes::from_static(b"{}")))
        .unwrap();
    let answer = c
        .send(crate::provider::NOT_A_WORKER, request)
        .await
        .unwrap();
    assert_eq!(text(answer).await, "ok");
    assert_eq!(up.count(|s| &s.accepted), 2);
    assert_eq!((c.pools[0].idle(), c.pools[1].idle()), (1, 1));
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

/// An upstream that answers the `n`th request on each connection with `answers[n]` (the
/// last one again past them), then, with `close`, closes the connection; `seen` as above.
async fn scripted(answers: Vec<Vec<u8>>, close: bool) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    let answers = Arc::new(answers);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            bump(&s, &s.accepted);
            let (s, answers) = (Arc::clone(&s), Arc::clone(&answers));
            tokio::spawn(async move {
                for n in 0.. {
                    if !read_request(&mut stream).await {
                        bump(&s, &s.closed_by_client);
                        return;
                    }
                    bump(&s, &s.requests);
                    let answer = &answers[n.min(answers.len() - 1)];
                    if stream.write_all(answer).await.is_err() || close {
                        drop(stream);
                        bump(&s, &s.closed_by_upstream);
                        return;
                    }
                }
            });
        }
    });
    (base_url, seen)
}

fn scripted_client(base_url: &str) -> H1Client {
    H1Client::new(&config(base_url, 90_000, 256), 1).unwrap()
}

async fn get(
    client: &H1Client,
    base_url: &str,
    method: http::Method,
) -> Result<Response<H1Body>, Failure> {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{base_url}/models"))
        .body(UpstreamBody::new(Bytes::new()))
        .unwrap();
    client.send(0, request).await
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n\
                   HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (base_url, seen) = scripted(vec![answer.to_vec()], false).await;
    let c = scripted_client(&base_url);
    for _ in 0..2 {
        let response = send(&c, &base_url).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(text(response).await, "ok");
    }
    assert_eq!(seen.accepted.load(SeqCst), 1, "the connection was reused");
}

#[tokio::test]
async fn answers_without_a_body_leave_the_connection_reusable() {
    let (base_url, seen) = scripted(
        vec![
            b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n".to_vec(),
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        ],
        false,
    )
    .await;
    let c = scripted_client(&base_url);
    let response = get(&c, &base_url, http::Method::GET).await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(http_body::Body::is_end_stream(response.body()));
    assert_eq!(text(response).await, "");
    let response = get(&c, &base_url, http::Method::GET).await.unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(text(response).await, "");
    // An answer to HEAD: its length is the GET's, no body follows.
    let response = get(&c, &base_url, http::Method::HEAD).await.unwrap();
    assert_eq!(response.headers()["content-length"], "9");
    assert_eq!(text(response).await, "");
    assert_eq!(
        text(get(&c, &base_url, http::Method::GET).await.unwrap()).await,
        "ok"
    );
    assert_eq!(seen.accepted.load(SeqCst), 1);
    assert_eq!(seen.requests.load(SeqCst), 4);
}

#[tokio::test]
async fn an_answer_saying_connection_close_is_not_reused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ] {
        let (base_url, seen) = scripted(vec![answer.to_vec()], false).await;
        let c = scripted_client(&base_url);
        for n in 1..=2 {
            assert_eq!(text(send(&c, &base_url).await.unwrap()).await, "ok");
            // Closed by the client, not kept idle.
            assert!(wait_for(&seen, |s| &s.closed_by_client, n).await);
            assert_eq!(c.pools[0].idle(), 0);
        }
        assert_eq!(seen.accepted.load(SeqCst), 2);
    }
}

#[tokio::test]
async fn a_body_delimited_by_the_close_is_read_to_it() {
    let (base_url, seen) = scripted(
        vec![b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end".to_vec()],
        true,
    )
    .await;
    let c = scripted_client(&base_url);
    for _ in 0..2 {
        assert_eq!(
            text(send(&c, &base_url).await.unwrap()).await,
            "until the end"
        );
        assert_eq!(c.pools[0].idle(), 0);
    }
    assert_eq!(seen.accepted.load(SeqCst), 2);
}

#[tokio::test]
async fn a_close_in_the_middle_of_a_body_is_an_error() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n",
    ] {
        let (base_url, _) = scripted(vec![answer.to_vec()], true).await;
        let c = scripted_client(&base_url);
        let mut body = send(&c, &base_url).await.unwrap().into_body();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "ok"
        );
        let error = body.frame().await.unwrap().unwrap_err();
        // As hyper showed it (the conformance goldens carry it); the cause beneath.
        assert_eq!(error.to_string(), "error reading a body from connection");
        assert!(matches!(error, Failure::Body(super::Cause::Closed)));
        assert_eq!(c.pools[0].idle(), 0);
    }
}

#[tokio::test]
async fn a_close_before_the_head_and_a_head_too_large_fail_the_exchange() {
    let (base_url, _) = scripted(vec![b"HTTP/1.1 200 OK\r\ncontent-le".to_vec()], true).await;
    let c = scripted_client(&base_url);
    let failure = send(&c, &base_url).await.unwrap_err();
    assert!(
        matches!(failure, Failure::Exchange(super::Cause::Closed)),
        "{failure:?}"
    );
    assert_eq!(
        failure.to_string(),
        "connection closed before message completed"
    );

    let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    big.resize(100 * 1024, b'a');
    big.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    let (base_url, _) = scripted(vec![big], false).await;
    let c = scripted_client(&base_url);
    let failure = send(&c, &base_url).await.unwrap_err();
    assert!(
        matches!(failure, Failure::Exchange(super::Cause::HeadTooLarge(_))),
        "{failure:?}"
    );
}

#[tokio::test]
async fn bytes_after_an_answer_or_sent_unasked_while_idle_drop_the_connection() {
    // More than the length said: the rest would be read as the next answer.
    let (base_url, seen) = scripted(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n".to_vec()],
        false,
    )
    .await;
    let c = scripted_client(&base_url);
    for _ in 0..2 {
        assert_eq!(text(send(&c, &base_url).await.unwrap()).await, "ok");
    }
    assert_eq!(seen.accepted.load(SeqCst), 2);

    // Sent while the connection was idle.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&accepted);
    let unasked = Arc::new(Notify::new());
    let u = Arc::clone(&unasked);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            a.fetch_add(1, SeqCst);
            let u = Arc::clone(&u);
            tokio::spawn(async move {
                while read_request(&mut stream).await {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    let _ = stream.write_all(ok).await;
                    u.notified().await;
                    let _ = stream.write_all(b"surprise").await;
                }
            });
        }
    });
    let c = scripted_client(&base_url);
    assert_eq!(text(send(&c, &base_url).await.unwrap()).await, "ok");
    assert_eq!(c.pools[0].idle(), 1);
    unasked.notify_one();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(text(send(&c, &base_url).await.unwrap()).await, "ok");
    assert_eq!(accepted.load(SeqCst), 2, "the idle connection was dropped");
}

#[tokio::test]
async fn the_request_goes_out_with_its_head_and_length() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let c = scripted_client(&base_url);
    let request = http::Request::post(format!("{base_url}/chat/completions?x=1"))
        .header("content-type", "application/json")
        .header("content-length", "999")
        .body(UpstreamBody::new(Bytes::from_static(b"{\"a\":1}")))
        .unwrap();
    let sending = tokio::spawn(async move { text(c.send(0, request).await.unwrap()).await });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"{\"a\":1}") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let host = base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    assert_eq!(
        String::from_utf8(got).unwrap(),
        format!(
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\ncontent-type: application/json\r\n\
             host: {host}\r\ncontent-length: 7\r\n\r\n{{\"a\":1}}"
        )
    );
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(sending.await.unwrap(), "ok");
}

/// The `Host` carries no userinfo of the base URL; hop-by-hop fields this client does not
/// speak and `Expect` are not written.
#[tokio::test]
async fn the_host_has_no_userinfo_and_hop_by_hop_fields_stay_behind() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = scripted_client(&format!("http://user:secret@{addr}/v1"));
    let request = http::Request::post(format!("http://{addr}/v1/x"))
        .header("expect", "100-continue")
        .header("te", "trailers")
        .header("upgrade", "h2c")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-kept", "1")
        .body(UpstreamBody::new(Bytes::from_static(b"{}")))
        .unwrap();
    let sending = tokio::spawn(async move { text(c.send(0, request).await.unwrap()).await });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"{}") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        String::from_utf8(got).unwrap(),
        format!(
            "POST /v1/x HTTP/1.1\r\nx-kept: 1\r\nhost: {addr}\r\ncontent-length: 2\r\n\r\n{{}}"
        )
    );
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .unwrap();
    assert_eq!(sending.await.unwrap(), "ok");
}

/// A request that says `Connection: close` does not leave its connection for another
/// (RFC 9112 section 9.6), whatever the answer says.
#[tokio::test]
async fn a_request_saying_connection_close_is_not_reused() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    let (base_url, seen) = scripted(vec![answer], false).await;
    let c = scripted_client(&base_url);
    for n in 1..=2 {
        let request = http::Request::post(format!("{base_url}/x"))
            .header("connection", "keep-alive, Close")
            .body(UpstreamBody::new(Bytes::from_static(b"{}")))
            .unwrap();
        assert_eq!(text(c.send(0, request).await.unwrap()).await, "ok");
        assert!(wait_for(&seen, |s| &s.closed_by_client, n).await);
        assert_eq!(c.pools[0].idle(), 0);
    }
    assert_eq!(seen.accepted.load(SeqCst), 2);
}

/// An HTTP/1.0 answer with `Transfer-Encoding` has faulty framing (RFC 9112 section 6.1):
/// refused.
#[tokio::test]
async fn an_http_1_0_answer_with_transfer_encoding_is_refused() {
    let answer = b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    let (base_url, _seen) = scripted(vec![answer.to_vec()], false).await;
    let c = scripted_client(&base_url);
    let failure = send(&c, &base_url).await.unwrap_err();
    assert!(
        matches!(failure, Failure::Exchange(super::Cause::MalformedHead(_))),
        "{failure:?}"
    );
}

/// An idle connection is its socket (and a flag): no buffer of its own, inline or behind
/// a pointer, is kept between requests.
#[test]
fn an_idle_connection_holds_its_socket_and_nothing_else() {
    let size = std::mem::size_of::<super::conn::Conn>();
    assert!(size <= std::mem::size_of::<TcpStream>() + 8, "{size} bytes");
}
