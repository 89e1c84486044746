//! Keys, limits and the spend log across real processes: a global rate limit over two
//! gateways sharing Redis (and keys in PostgreSQL), a spend log complete after SIGTERM under
//! load with the secret in no log line and no file, and the `keys`, `spend` and `cost`
//! commands on what a gateway recorded.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{drop_schema, postgres_schema, sluice, temp_dir, unique, Serving};
use serde_json::{json, Value};
use sluice_testkit::client::{post_stream, TestClient};
use sluice_testkit::{Behavior, FakeUpstream};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

const MASTER: &str = "sk-admin";

fn config(dir: &Path, upstream: &str, storage_extra: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
shutdown_grace_ms = 10000
[storage]
data_dir = "{dir}"
{storage_extra}
[limits]
# Past this a replica checks its limits in process (documented), and a global limit is not
# exact: a machine busy with the rest of the suite must not get there.
redis_timeout_ms = 2000
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

fn chat(stream: bool) -> String {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

async fn create_key(s: &Serving, spec: Value) -> (String, String) {
    let r = TestClient::new()
        .post_json(
            &s.url("/admin/keys"),
            spec.to_string(),
            &[("authorization", &format!("Bearer {MASTER}"))],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["key"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

async fn ask(url: &str, key: &str) -> u16 {
    TestClient::new()
        .post_json(
            url,
            chat(false),
            &[("authorization", &format!("Bearer {key}"))],
        )
        .await
        .map_or(0, |r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_global_across_two_gateways_sharing_redis() {
    let fake = FakeUpstream::start().await;
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (database, schema) = postgres_schema("sluice_limit");
    let storage = format!(
        "redis_url = \"{redis}\"\nredis_prefix = \"{}:\"\ndatabase_url = \"{database}\"",
        unique("sluice-limit")
    );
    let a = Serving::start(&config(&temp_dir("limit-a"), &fake.base_url(), &storage));
    let b = Serving::start(&config(&temp_dir("limit-b"), &fake.base_url(), &storage));
    // A key made on one replica, used on both (keys live in PostgreSQL).
    let (secret, _) = create_key(&a, json!({"name": "shared", "rpm": 30})).await;
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url("/v1/chat/completions")
            } else {
                b.url("/v1/chat/completions")
            };
            let (secret, admitted, refused) =
                (secret.clone(), Arc::clone(&admitted), Arc::clone(&refused));
            tokio::spawn(async move {
                match ask(&url, &secret).await {
                    200 => admitted.fetch_add(1, Relaxed),
                    429 => refused.fetch_add(1, Relaxed),
                    s => panic!("unexpected status {s}"),
                };
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        admitted.load(Relaxed),
        30,
        "the sum over both replicas is the limit"
    );
    assert_eq!(refused.load(Relaxed), 70);
    assert_eq!(fake.request_count(), 30);
    assert!(a.stop());
    assert!(b.stop());
    drop_schema(&schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_log_is_complete_after_sigterm_under_load() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Behavior::new().with_delay_ms(20));
    let dir = temp_dir("sigterm");
    let cfg = config(&dir, &fake.base_url(), "");
    let s = Serving::start_with(&cfg, &[("SLUICE_LOG", "debug")]);
    let (secret, _) = create_key(&s, json!({"name": "load"})).await;
    let answered = Arc::new(AtomicU64::new(0));
    let url = s.url("/v1/chat/completions");
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (url, secret, answered) = (url.clone(), secret.clone(), Arc::clone(&answered));
            tokio::spawn(async move {
                let auth = format!("Bearer {secret}");
                let client = TestClient::new();
                loop {
                    let ok = if i % 4 == 0 {
                        // A stream counts as answered once it ended with `[DONE]`.
                        match post_stream(&url, chat(true), &[("authorization", &auth)]).await {
                            Ok(mut st) if st.status == 200 => {
                                let (events, err) = st.collect_events().await;
                                err.is_none() && events.last().map(String::as_str) == Some("[DONE]")
                            }
                            Ok(_) => false,
                            Err(_) => break,
                        }
                    } else {
                        match client
                            .post_json(&url, chat(false), &[("authorization", &auth)])
                            .await
                        {
                            Ok(r) => r.status == 200,
                            Err(_) => break,
                        }
                    };
                    if ok {
                        answered.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pid = s.child.id();
    let log = Arc::clone(&s.log);
    let stopper = tokio::task::spawn_blocking(move || s.stop());
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    assert!(stopper.await.unwrap(), "sluice {pid} exits 0 after SIGTERM");
    let answered = answered.load(Relaxed);
    assert!(answered > 50, "only {answered} requests were answered");

    // Every answered request has its record.
    let out = sluice()
        .args([
            "spend", "report", "--by", "key", "--since", "1h", "--json", "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "load")
        .unwrap()
        .clone();
    let requests = row["requests"].as_u64().unwrap();
    let errors = row["errors"].as_u64().unwrap();
    assert_eq!(requests - errors, answered, "{row}");

    // The secret is in no log line and no file; its hash is in the ledger.
    let log = log.lock().unwrap().clone();
    assert!(log.contains("spend log flushed"), "{log}");
    assert!(
        !log.contains(&secret["sk-sluice-".len()..]),
        "the secret was logged"
    );
    let hash = sluice_core::keys::hash(&secret);
    let mut hash_stored = false;
    // Every file under the data directory (the files store keeps a directory there).
    let mut files = Vec::new();
    let mut dirs = vec![dir.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        assert!(
            !text.contains(&secret["sk-sluice-".len()..]),
            "the secret is in a file"
        );
        hash_stored |= text.contains(&hash);
    }
    assert!(hash_stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spend_and_cost_commands_read_what_a_gateway_recorded() {
    let fake = FakeUpstream::start().await;
    let dir = temp_dir("commands");
    let cfg = config(&dir, &fake.base_url(), "");
    // Keys made offline, with the gateway not running.
    let mut secrets = Vec::new();
    for name in ["team-a", "team-b"] {
        let out = sluice()
            .args([
                "keys",
                "create",
                "--name",
                name,
                "--rpm",
                "100",
                "--budget-usd",
                "1",
                "--config",
            ])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let secret = text
            .lines()
            .find(|l| l.starts_with("sk-sluice-"))
            .unwrap()
            .to_string();
        secrets.push(secret);
    }
    let s = Serving::start(&cfg);
    let url = s.url("/v1/chat/completions");
    for (i, secret) in secrets.iter().enumerate() {
        for _ in 0..=i {
            assert_eq!(ask(&url, secret).await, 200);
        }
    }
    // Revoked offline: the gateway trusts its copy for `keys.cache_ttl_ms` (5 s) at most.
    let out = sluice()
        .args(["keys", "revoke", "team-a", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut status, mut answered) = (0, 3);
    for _ in 0..70 {
        status = ask(&url, &secrets[0]).await;
        if status == 401 {
            break;
        }
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
    assert!(s.stop());

    let out = sluice()
        .args(["spend", "report", "--by", "key", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("team-")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    // The fake reports 12 prompt and 9 completion tokens: $0.00003 a request.
    assert!(
        rows.iter()
            .any(|r| r.starts_with("team-b") && r.ends_with("$0.00006")),
        "{table}"
    );
    let team_a = format!(
        "${}",
        sluice_server::admin_keys::usd(30_000 * (answered - 2))
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("team-a") && r.ends_with(&team_a)),
        "{answered} {table}"
    );
    assert!(table.contains("TOTAL"), "{table}");

    let out = sluice()
        .args(["keys", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.contains("revoked") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&secrets[1]), "{list}");

    // The simulator replays the spend log itself: every answered request, at $0.000030.
    let out = sluice()
        .args(["cost", "simulate", "--log"])
        .arg(dir.join("ledger.sqlite"))
        .arg("--config")
        .arg(&cfg)
        .args(["--days", "30"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("Replayed {answered} requests")),
        "{text}"
    );
    let total = text.lines().find(|l| l.starts_with("total")).unwrap();
    assert!(total.contains("$0.00"), "{text}");
}

#[test]
fn keys_commands_set_guardrails_the_config_defines() {
    let dir = temp_dir("key-guards");
    let guards = "[[guardrails]]\nname = \"pii\"\ndetectors = [\"email\"]\naction = \"block\"\n";
    let cfg = config(&dir, "http://127.0.0.1:9", guards);
    let keys = |args: &[&str]| {
        sluice()
            .arg("keys")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = keys(&["create", "--name", "k", "--guardrails", "pii,nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`nope`"), "{err}");
    let out = keys(&["create", "--name", "k", "--guardrails", "pii"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&keys(&["show", "k"]).stdout).unwrap();
    assert_eq!(shown["guardrails"], json!(["pii"]));
    let out = keys(&["update", "k", "--guardrails", "none"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&keys(&["show", "k"]).stdout).unwrap();
    assert_eq!(shown["guardrails"], json!([]));
}
