//! sluice's own HTTP/1.1 server (`front`), on the wire: keep-alive, pipelining, chunked
//! bodies, `Expect: 100-continue`, HTTP/1.0, refused heads, HEAD, a client that leaves.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{chat_with, config_for, setup, start_with, CHAT};
use serde_json::json;
use sluice_testkit::FakeUpstream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one response off `stream`: its head (as text) and its body, de-chunked.
async fn response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        read_more(stream, pending).await;
    };
    let head = String::from_utf8(pending.drain(..head_end).collect()).unwrap();
    let lower = head.to_ascii_lowercase();
    let body = if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let len: usize = len.trim().parse().unwrap();
        while pending.len() < len {
            read_more(stream, pending).await;
        }
        pending.drain(..len).collect()
    } else if lower.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                read_more(stream, pending).await;
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&pending[..line_end]).unwrap().trim(),
                16,
            )
            .unwrap();
            while pending.len() < line_end + 2 + size + 2 {
                read_more(stream, pending).await;
            }
            body.extend_from_slice(&pending[line_end + 2..line_end + 2 + size]);
            pending.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        Vec::new()
    };
    (head, body)
}

async fn read_more(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    assert!(
        n > 0,
        "closed early; so far: {}",
        String::from_utf8_lossy(pending)
    );
    pending.extend_from_slice(&buf[..n]);
}

/// Reads until the server closes; what came.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("closed within 10 s")
        .expect("read");
    out
}

fn post(path: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let (fake, gw) = setup("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut wire = post("/v1/chat/completions", CHAT, "");
    wire.extend_from_slice(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    wire.extend_from_slice(&post("/v1/chat/completions", CHAT, ""));
    s.write_all(&wire).await.unwrap();
    let mut pending = Vec::new();
    for expect in ["chat.completion", "ok", "chat.completion"] {
        let (head, body) = response(&mut s, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
        assert!(String::from_utf8_lossy(&body).contains(expect), "{head}");
    }
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn a_chunked_body_in_small_pieces_and_a_streamed_answer() {
    let (_fake, gw) = setup("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let body = chat_with(json!({}), true);
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for piece in body.as_bytes().chunks(7) {
        s.write_all(format!("{:x};ext=1\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(piece).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        s.flush().await.unwrap();
    }
    s.write_all(b"0\r\nx-trailer: t\r\n\r\n").await.unwrap();
    let mut pending = Vec::new();
    let (head, body) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("chat.completion.chunk"), "{text}");
    assert!(text.contains("data: [DONE]"), "{text}");
    // The connection serves on.
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_wanted() {
    let (_fake, gw) = setup("").await;
    // The head alone (its content-length names a body not sent yet): the interim answer.
    let wire = post("/v1/chat/completions", CHAT, "expect: 100-continue\r\n");
    let mut s2 = TcpStream::connect(gw.addr).await.unwrap();
    let head_len = wire.len() - CHAT.len();
    s2.write_all(&wire[..head_len]).await.unwrap();
    let mut pending = Vec::new();
    let (interim, _) = response(&mut s2, &mut pending).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s2.write_all(CHAT.as_bytes()).await.unwrap();
    let (head, body) = response(&mut s2, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("chat.completion"));
}

#[tokio::test]
async fn a_refused_expectation_gets_its_answer_without_the_interim_one() {
    let fake = FakeUpstream::start().await;
    let toml = config_for(&fake.base_url(), "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_body_bytes = 1000",
    );
    let gw = start_with(&toml).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

#[tokio::test]
async fn http_1_0_keeps_alive_only_when_asked_and_ends_unknown_lengths_by_closing() {
    let (_fake, gw) = setup("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (head, _) = response(&mut s, &mut pending).await;
    assert!(head.contains("connection: keep-alive"), "{head}");
    // A stream to an HTTP/1.0 client: no chunks, the close ends it.
    let body = chat_with(json!({}), true);
    let wire = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nconnection: keep-alive\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(wire.as_bytes()).await.unwrap();
    let mut rest = pending;
    rest.extend(read_to_close(&mut s).await);
    let text = String::from_utf8(rest).unwrap();
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.contains("data: [DONE]"), "{text}");
    // Without keep-alive: closed after the answer.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").await.unwrap();
    let text = String::from_utf8(read_to_close(&mut s).await).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn bad_heads_get_an_error_in_openais_shape_and_a_close() {
    let (fake, gw) = setup("").await;
    let huge = format!(
        "GET /health HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    for (wire, status) in [
        ("POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n".to_string(), "400"),
        ("POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc".to_string(), "400"),
        ("POST /v1/chat/completions HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n".to_string(), "501"),
        ("GARBAGE\r\n\r\n".to_string(), "400"),
        (huge, "431"),
    ] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        let _ = s.write_all(wire.as_bytes()).await;
        let text = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        assert!(text.contains("\"type\":\"invalid_request_error\""), "{text}");
    }
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn head_requests_get_the_length_and_no_body() {
    let (_fake, gw) = setup("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"HEAD /v1/models HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    let (head, body) = {
        // A HEAD's content-length names the GET's body: read the head alone.
        let end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            read_more(&mut s, &mut pending).await;
        };
        let head = String::from_utf8(pending.drain(..end).collect()).unwrap();
        (head, ())
    };
    let () = body;
    assert!(head.starts_with("HTTP/1.1"), "{head}");
    let (next, _) = response(&mut s, &mut pending).await;
    assert!(
        next.starts_with("HTTP/1.1 200"),
        "the next answer follows at once: {next}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_while_its_request_waits_cancels_it() {
    let (fake, gw) = setup("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let body = chat_with(json!({"delay_ms": 3000}), false);
    s.write_all(&post("/v1/chat/completions", &body, ""))
        .await
        .unwrap();
    // Wait for the upstream to have it, then leave.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while fake.request_count() == 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.request_count(), 1);
    drop(s);
    // The request's future is dropped, which closes its upstream connection, long before
    // the upstream's delay.
    assert!(
        fake.wait_cancelled(1, Duration::from_secs(2)).await,
        "the upstream saw its connection close"
    );
}

#[tokio::test]
async fn a_handler_that_answers_without_reading_the_body_keeps_the_connection() {
    let (_fake, gw) = setup("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    // An unknown path with a body: 404, and the body is read and thrown away.
    s.write_all(&post("/v1/nothing-here", &"z".repeat(20_000), ""))
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (head, _) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
