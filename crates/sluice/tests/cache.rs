//! The cache across real processes: two gateways sharing one real Redis, a Redis killed
//! under a running gateway, and `sluice cache stats|clear|warm`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{sluice, temp_dir, unique, Serving};
use serde_json::json;
use sluice_testkit::client::post_json;
use sluice_testkit::FakeUpstream;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn config(dir: &Path, upstream: &str, storage_extra: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "sk-admin"
[storage]
data_dir = "{dir}"
{storage_extra}
[cache]
enabled = true
store_timeout_ms = 200
[routing]
retry = {{ attempts = 1 }}
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
[[models]]
name = "m"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
"#,
        dir = dir.display()
    );
    let path = dir.join("sluice.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

fn chat(content: &str) -> String {
    json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": content}]})
        .to_string()
}

async fn ask(s: &Serving, content: &str) -> (u16, Option<String>) {
    let r = post_json(
        &s.url("/v1/chat/completions"),
        chat(content),
        &[("authorization", "Bearer sk-admin")],
    )
    .await
    .unwrap();
    (r.status, r.header("x-sluice-cache").map(str::to_string))
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_hits_through_one_redis() {
    let fake = FakeUpstream::start().await;
    let prefix = unique("sluice-test");
    let storage = format!(
        "redis_url = \"{}\"\nredis_prefix = \"{prefix}:\"",
        redis_url()
    );
    let a = Serving::start(&config(&temp_dir("a"), &fake.base_url(), &storage));
    let b = Serving::start(&config(&temp_dir("b"), &fake.base_url(), &storage));
    assert_eq!(ask(&a, "shared").await, (200, Some("miss".into())));
    // The store write is in the background: give it a moment to land.
    let mut hit = None;
    for _ in 0..50 {
        let r = ask(&b, "shared").await;
        if r.1.as_deref() == Some("hit") {
            hit = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hit, Some((200, Some("hit".into()))), "b hit a's answer");
    let misses_on_b = fake.request_count() - 1;
    assert!(misses_on_b <= 1, "b called upstream {misses_on_b} times");
    a.stop();
    b.stop();
}

/// A `redis-server` of this test's own, on a free port.
struct OwnRedis(Child);

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        // Owned at once, so that it is killed and reaped whatever happens next.
        let redis = Self(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {port}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_degrades_to_misses_and_no_request_fails() {
    let fake = FakeUpstream::start().await;
    let port = free_port();
    let redis = OwnRedis::start(port);
    let storage = format!("redis_url = \"redis://127.0.0.1:{port}\"");
    let gw = Serving::start(&config(&temp_dir("dead"), &fake.base_url(), &storage));
    assert_eq!(ask(&gw, "before").await, (200, Some("miss".into())));
    assert_eq!(ask(&gw, "before").await, (200, Some("hit".into())));
    drop(redis);
    // Every request still answers; new questions are misses.
    for i in 0..20 {
        let (status, cache) = ask(&gw, &format!("after {i}")).await;
        assert_eq!(status, 200);
        assert_eq!(cache.as_deref(), Some("miss"));
    }
    let metrics = sluice_testkit::client::get(&gw.url("/metrics"))
        .await
        .unwrap()
        .text();
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_cache_store_errors_total{store=\"redis\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors > 0, "{metrics}");
    // Redis back: the gateway uses it again.
    let _redis = OwnRedis::start(port);
    let mut stored = false;
    for i in 0..100 {
        let q = format!("back {i}");
        ask(&gw, &q).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut c = redis_cli(port, &["DBSIZE"]);
        c.retain(|ch| ch.is_ascii_digit());
        if c.parse::<u64>().unwrap_or(0) > 0 {
            stored = true;
            break;
        }
    }
    assert!(stored, "answers reach Redis again once it is back");
    gw.stop();
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_commands_warm_stats_and_clear() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir("cmds");
    let cfg = config(&dir, &fake.base_url(), "");
    let gw = Serving::start(&cfg);
    let file = dir.join("warm.jsonl");
    let lines = [
        chat("one"),
        chat("two"),
        "# a comment".to_string(),
        String::new(),
        chat("one"),
        json!({"model": "m", "temperature": 0.9, "messages": [{"role": "user", "content": "x"}]})
            .to_string(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = sluice()
        .args(["cache", "warm", "--concurrency", "1", "--config"])
        .arg(&cfg)
        .arg(&file)
        .arg("--url")
        .arg(gw.url(""))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("warmed 4 requests")
            && stdout.contains(
                "2 newly cached (miss), 1 already cached (hit), 1 not cacheable (bypass), 0 failed"
            ),
        "{stdout}"
    );
    assert!(stderr.contains("4/4"), "a progress bar: {stderr}");
    assert_eq!(fake.request_count(), 3);

    // Counters reach the store within a second; stop the gateway to flush them for sure.
    gw.stop();
    let out = sluice()
        .args(["cache", "stats", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stats}");
    assert!(stats.contains("entries     2"), "{stats}");
    assert!(stats.contains("hits        1"), "{stats}");
    assert!(stats.contains("misses      2"), "{stats}");
    assert!(stats.contains("hit rate    33.3%"), "{stats}");

    let out = sluice()
        .args(["cache", "clear", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("removed 2 entries"), "{text}");
    let out = sluice()
        .args(["cache", "stats", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("entries     0"));
}
