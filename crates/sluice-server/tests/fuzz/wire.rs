//! Raw bytes on a client connection (sluice's own HTTP/1.1 server, `front`): whatever a
//! client sends, each answer is a well-formed status line, an error is a 4xx or 5xx that
//! is not a 500, the connection ends once the client has closed its side (no hang), and the
//! server serves on. The one upstream is a closed port (valid requests end in a 502).

use sluice_core::config::Config;
use sluice_core::env::MapEnv;
use sluice_server::Server;
use sluice_testkit::fuzz;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

const ITERS: usize = 1500;

/// A gateway on its own thread and runtime; its address.
fn gateway() -> SocketAddr {
    let dir = std::env::temp_dir().join(format!("sluice-fuzz-wire-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_read_timeout_ms = 2000
[storage]
data_dir = "{dir}"
[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
[[models]]
name = "m"
provider = "fake"
"#,
        dir = dir.display()
    );
    let config = Config::from_toml(&toml, &MapEnv::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(config).await.unwrap();
            tx.send(server.local_addr().unwrap()).unwrap();
            let _ = server.run(std::future::pending::<()>()).await;
        });
    });
    rx.recv().unwrap()
}

/// Sends `input` in the given pieces, closes the sending side, and reads to the end.
fn exchange(addr: SocketAddr, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        // The server may answer and close before taking everything: that is allowed.
        if s.write_all(&input[from..cut]).is_err() {
            break;
        }
        from = cut;
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no end after the client closed: {e}; read {out:?}"),
    }
    out
}

/// Every response in `out` is framed as HTTP/1.1 says and has a status other than 500 (the
/// last one may be cut short: a stream cancelled by the client's close).
fn check(out: &[u8]) {
    let text = || String::from_utf8_lossy(out).into_owned();
    if out.starts_with(b"\x00") {
        // HTTP/2's answer to its preface: a binary frame.
        assert!(out.len() >= 9, "a short HTTP/2 frame: {out:?}");
        return;
    }
    let mut rest = out;
    while !rest.is_empty() {
        assert!(
            rest.starts_with(b"HTTP/1.1 "),
            "not a status line: {}",
            text()
        );
        let status: u16 = std::str::from_utf8(&rest[9..rest.len().min(12)])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a malformed status line: {}", text()));
        assert!((100..600).contains(&status) && status != 500, "{}", text());
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!("a head without its end: {}", text());
        };
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        rest = &rest[end + 4..];
        if status == 100 {
            continue;
        }
        if let Some(n) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            let n: usize = n.trim().parse().unwrap();
            // A HEAD's answer names the length of a body it does not carry.
            let body_follows = !rest.starts_with(b"HTTP/1.1 ")
                || rest[n.min(rest.len())..].starts_with(b"HTTP/1.1 ");
            if body_follows {
                rest = &rest[n.min(rest.len())..];
            }
        } else if head.contains("transfer-encoding: chunked") {
            match rest.windows(5).position(|w| w == b"0\r\n\r\n") {
                Some(at) => rest = &rest[at + 5..],
                None => return,
            }
        } else {
            return;
        }
    }
}

#[test]
fn raw_client_bytes() {
    let addr = gateway();
    fuzz::run("http1-wire", ITERS, move |b, rng| {
        let cuts = rng.splits(b.len());
        check(&exchange(addr, b, &cuts));
    });
    // And it serves on.
    let out = exchange(addr, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n", &[]);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
