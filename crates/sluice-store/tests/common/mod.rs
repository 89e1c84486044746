//! Helpers shared by the store tests: unique names, temp dirs, keys.

// Each test binary uses a different subset, so `expect` would be unfulfilled in some.
#![allow(dead_code)]

use sluice_store::redis::Value;
use sluice_store::{Key, RedisClient};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A name no other test (or test process) is using.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!(
        "{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    )
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("sluice-store-test"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn key(n: u32) -> Key {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&n.to_le_bytes());
    k[31] = 0x5a;
    k
}

pub fn now() -> u64 {
    sluice_store::unix_now_ms()
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A `redis-server` child, killed when dropped.
pub struct Server(Child);

impl Server {
    pub fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts one with extra arguments (`--requirepass x`, ...).
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }

    pub fn kill(mut self) {
        self.0.kill().expect("kill");
        self.0.wait().expect("wait");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub mod request_log;
pub mod split_reports;

/// A test's own key prefix, its keys deleted when dropped (even when the test failed).
pub struct Prefix(String);

impl Prefix {
    pub fn new() -> Self {
        Self(format!("{}:", unique("sluice-test:limits")))
    }
}

impl std::ops::Deref for Prefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // Its own thread and runtime: `drop` may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(delete_keys(&prefix));
        })
        .join();
    }
}

/// Deletes every key under `prefix`.
async fn delete_keys(prefix: &str) {
    let client = RedisClient::new(&redis_url(), Duration::from_secs(5)).expect("url");
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
