//! The semantic cache across real processes, on the local all-MiniLM-L6-v2: two gateways
//! sharing one Redis (a question answered on one is a semantic hit on the other, and stops
//! being one when its entry expires), and a gateway restarted on its SQLite cache keeping
//! its semantic entries.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{temp_dir, unique, Serving};
use serde_json::json;
use sluice_testkit::client::post_json;
use sluice_testkit::FakeUpstream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_MINILM_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/models/all-MiniLM-L6-v2"),
        PathBuf::from,
    );
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not at {}: run `scripts/install-minilm.sh target/models` or set \
         SLUICE_MINILM_DIR",
        dir.display()
    );
    dir
}

fn config(dir: &Path, upstream: &str, storage_extra: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
{storage_extra}
[cache]
store_timeout_ms = 500
[routing]
retry = {{ attempts = 1 }}
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
[[providers]]
name = "here"
type = "local"
[[models]]
name = "minilm"
provider = "here"
path = "{minilm}"
[[models]]
name = "m"
provider = "fake"
cache = {{ enabled = true, semantic = {{ model = "minilm", threshold = 0.8 }} }}
"#,
        dir = dir.display(),
        minilm = minilm_dir().display(),
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Asks `question` with an `x-sluice-cache` directive (if any); the `x-sluice-cache` header.
async fn ask(s: &Serving, question: &str, directive: Option<&str>) -> String {
    let body = json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": question}]});
    let headers: Vec<(&str, &str)> = directive
        .map(|d| ("x-sluice-cache", d))
        .into_iter()
        .collect();
    let r = post_json(&s.url("/v1/chat/completions"), body.to_string(), &headers)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-sluice-cache").unwrap().to_string()
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_on_one_replica_is_a_semantic_hit_on_the_other_until_it_expires() {
    let fake = FakeUpstream::start().await;
    let prefix = unique("sluice-test-semantic");
    let storage = format!(
        "redis_url = \"{}\"\nredis_prefix = \"{prefix}:\"",
        redis_url()
    );
    let a = Serving::start(&config(&temp_dir("sem-a"), &fake.base_url(), &storage));
    let b = Serving::start(&config(&temp_dir("sem-b"), &fake.base_url(), &storage));
    assert_eq!(
        ask(&a, "What is the capital of France?", Some("ttl=6")).await,
        "miss"
    );
    // The entry was stored before the answer came back: it expires within 6 s from here.
    let asked = Instant::now();
    // B reads the records the replicas add every second (its misses meanwhile not stored,
    // so that the next try is a lookup again).
    let mut on_b = Vec::new();
    for _ in 0..40 {
        let r = ask(&b, "Tell me the capital of France.", Some("no-store")).await;
        on_b.push(r.clone());
        if r == "semantic-hit" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        on_b.last().map(String::as_str),
        Some("semantic-hit"),
        "{on_b:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{on_b:?} took {:?}",
        asked.elapsed()
    );
    assert_eq!(fake.request_count(), on_b.len(), "{on_b:?}");
    // Past the entry's TTL, on either replica: a miss.
    let left = Duration::from_millis(6_500).saturating_sub(asked.elapsed());
    tokio::time::sleep(left).await;
    for (name, s) in [("a", &a), ("b", &b)] {
        let r = ask(s, "What's the capital city of France?", Some("no-store")).await;
        assert_eq!(r, "miss", "{name} at {:?}", asked.elapsed());
    }
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_keeps_its_semantic_entries() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir("sem-restart");
    let cfg = config(&dir, &fake.base_url(), "");
    let gw = Serving::start(&cfg);
    assert_eq!(ask(&gw, "How tall is Mount Everest?", None).await, "miss");
    assert!(gw.stop(), "a clean stop");
    let gw = Serving::start(&cfg);
    assert_eq!(
        ask(&gw, "What is the height of Mount Everest?", None).await,
        "semantic-hit"
    );
    assert_eq!(fake.request_count(), 1);
    gw.stop();
}
