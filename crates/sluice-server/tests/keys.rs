//! Virtual keys, limits, budgets and the spend log, through a real gateway on loopback in
//! front of the fake upstream, with the embedded ledger (a real SQLite file).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{start_with, Gateway};
use http::Method;
use serde_json::{json, Value};
use sluice_store::Dimension;
use sluice_testkit::client::{post_stream, TestClient, TestResponse};
use sluice_testkit::{Behavior, FakeUpstream, FakeUsage};
use std::path::PathBuf;
use std::time::Duration;

const MASTER: &str = "sk-master-test";

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-keys-{name}-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config with a master key, data in `dir`, models `m` ($1 in, $2 out per million) and
/// `emb` at `upstream`, and `extra` TOML appended.
fn keyed_config(dir: &std::path::Path, upstream: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "{MASTER}"
[storage]
data_dir = "{dir}"
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream"
[[models]]
name = "m"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
[[models]]
name = "emb"
provider = "fake"
{extra}
"#,
        dir = dir.display(),
    )
}

/// A fake upstream and a gateway of [`keyed_config`] in front of it.
async fn gateway(name: &str, extra: &str) -> (FakeUpstream, Gateway, PathBuf) {
    let fake = FakeUpstream::start().await;
    let dir = data_dir(name);
    let gw = start_with(&keyed_config(&dir, &fake.base_url(), extra)).await;
    (fake, gw, dir)
}

async fn call(
    gw: &Gateway,
    method: Method,
    path: &str,
    body: Value,
    key: Option<&str>,
) -> TestResponse {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let body = if body.is_null() {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::from(body.to_string())
    };
    TestClient::new()
        .request(method, &gw.url(path), body, &headers)
        .await
        .expect("request")
}

async fn create_key(gw: &Gateway, spec: Value) -> (String, Value) {
    let r = call(gw, Method::POST, "/admin/keys", spec, Some(MASTER)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (v["key"].as_str().expect("secret").to_string(), v)
}

fn chat(model: &str, extra: Value) -> Value {
    let mut v = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for (k, x) in extra.as_object().expect("object") {
        v[k] = x.clone();
    }
    v
}

async fn chat_as(gw: &Gateway, key: &str, body: Value) -> TestResponse {
    call(gw, Method::POST, "/v1/chat/completions", body, Some(key)).await
}

fn error_of(r: &TestResponse) -> (String, String) {
    let v = r.json();
    (
        v["error"]["type"].as_str().unwrap_or_default().to_string(),
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn key_lifecycle() {
    let (_fake, gw, _dir) = gateway("lifecycle", "").await;

    // No key, a wrong key, a key for the admin API that is not the master key.
    let r = call(
        &gw,
        Method::POST,
        "/v1/chat/completions",
        chat("m", json!({})),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        error_of(&r),
        ("authentication_error".into(), "invalid_api_key".into())
    );
    let r = chat_as(&gw, "sk-sluice-nope", chat("m", json!({}))).await;
    assert_eq!(r.status, 401);

    let spec = json!({"name": "team-a", "budget_usd": 5.0, "rpm": 60, "tpm": 100000,
                      "models": ["m"], "metadata": {"owner": "ana"}});
    let r = call(
        &gw,
        Method::POST,
        "/admin/keys",
        spec.clone(),
        Some("sk-sluice-nope"),
    )
    .await;
    assert_eq!(r.status, 401);
    let (secret, created) = create_key(&gw, spec).await;
    assert!(secret.starts_with("sk-sluice-"));
    assert_eq!(created["name"], "team-a");
    assert_eq!(created["budget_usd"], 5.0);
    assert_eq!(created["status"], "active");
    assert_eq!(created["metadata"]["owner"], "ana");
    let id = created["id"].as_str().unwrap().to_string();

    // The key works for its model, not for another (403), and the master key for all.
    let r = chat_as(&gw, &secret, chat("m", json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(
        &gw,
        Method::POST,
        "/v1/embeddings",
        json!({"model": "emb", "input": "x"}),
        Some(&secret),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(error_of(&r).0, "permission_error");
    let r = call(
        &gw,
        Method::POST,
        "/v1/embeddings",
        json!({"model": "emb", "input": "x"}),
        Some(MASTER),
    )
    .await;
    assert_eq!(r.status, 200);
    // Anthropic's SDK sends `x-api-key`.
    let r = TestClient::new()
        .post_json(
            &gw.url("/v1/chat/completions"),
            chat("m", json!({})).to_string(),
            &[("x-api-key", secret.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // Listing shows the key, never the secret; `/v1/models` only what the key may use.
    let r = call(&gw, Method::GET, "/admin/keys", Value::Null, Some(MASTER)).await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(&secret));
    assert_eq!(r.json()["data"][0]["id"], id.as_str());
    let r = call(&gw, Method::GET, "/v1/models", Value::Null, Some(&secret)).await;
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["m"]);
    let r = call(&gw, Method::GET, "/v1/models", Value::Null, None).await;
    assert_eq!(r.status, 401);

    // Update: now `emb` too; a bad update is refused whole.
    let path = format!("/admin/keys/{id}");
    let r = call(
        &gw,
        Method::PATCH,
        &path,
        json!({"models": ["m", "emb"], "rpm": null}),
        Some(MASTER),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rpm"], Value::Null);
    let r = call(
        &gw,
        Method::POST,
        "/v1/embeddings",
        json!({"model": "emb", "input": "x"}),
        Some(&secret),
    )
    .await;
    assert_eq!(r.status, 200);
    for bad in [
        json!({"rpm": 0}),
        json!({"colour": "red"}),
        json!({"budget_period": "week"}),
    ] {
        let r = call(&gw, Method::PATCH, &path, bad, Some(MASTER)).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let r = call(
        &gw,
        Method::POST,
        "/admin/keys",
        json!({"rpm": 5}),
        Some(MASTER),
    )
    .await;
    assert_eq!(r.status, 400, "a key needs a name");
    let r = call(
        &gw,
        Method::GET,
        "/admin/keys/key_missing",
        Value::Null,
        Some(MASTER),
    )
    .await;
    assert_eq!(r.status, 404);

    // Revoked: 401 at once on this replica.
    let r = call(&gw, Method::DELETE, &path, Value::Null, Some(MASTER)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "revoked");
    let r = chat_as(&gw, &secret, chat("m", json!({}))).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));

    // An operator's own secret (a key moved from another gateway), once only.
    let own = "sk-moved-from-elsewhere-0001";
    let (given, _) = create_key(&gw, json!({"name": "moved", "key": own})).await;
    assert_eq!(given, own);
    assert_eq!(chat_as(&gw, own, chat("m", json!({}))).await.status, 200);
    let r = call(
        &gw,
        Method::POST,
        "/admin/keys",
        json!({"name": "again", "key": own}),
        Some(MASTER),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = call(
        &gw,
        Method::POST,
        "/admin/keys",
        json!({"name": "short", "key": "sk-1"}),
        Some(MASTER),
    )
    .await;
    assert_eq!(r.status, 400);

    // Expired.
    let (old, _) = create_key(&gw, json!({"name": "old", "expires_at": 1})).await;
    let r = chat_as(&gw, &old, chat("m", json!({}))).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[tokio::test]
async fn the_secret_is_stored_only_as_its_hash() {
    let (_fake, gw, dir) = gateway("hash", "").await;
    let (secret, _) = create_key(&gw, json!({"name": "hashed"})).await;
    for _ in 0..3 {
        assert_eq!(
            chat_as(&gw, &secret, chat("m", json!({}))).await.status,
            200
        );
    }
    gw.state.ledger.as_ref().unwrap().flush().await;
    let hash = sluice_core::keys::hash(&secret);
    let random = &secret["sk-sluice-".len()..];
    let mut seen_hash = false;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // The Files API's contents (`files/`): none uploaded here.
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(random),
            "the secret is in the data directory"
        );
        seen_hash |= text.contains(&hash);
    }
    assert!(seen_hash, "the hash is stored");
}

#[tokio::test]
async fn requests_per_minute_answer_429_with_retry_after() {
    let (_fake, gw, _dir) = gateway("rpm", "").await;
    let (secret, _) = create_key(&gw, json!({"name": "rpm", "rpm": 3})).await;
    for _ in 0..3 {
        assert_eq!(
            chat_as(&gw, &secret, chat("m", json!({}))).await.status,
            200
        );
    }
    let r = chat_as(&gw, &secret, chat("m", json!({}))).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        error_of(&r),
        ("rate_limit_error".into(), "rate_limit_exceeded".into())
    );
    let after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=61).contains(&after), "{after}");
    // The master key is not limited by the key's limits.
    assert_eq!(chat_as(&gw, MASTER, chat("m", json!({}))).await.status, 200);
}

#[tokio::test]
async fn tokens_per_minute_are_estimated_then_corrected() {
    let (_fake, gw, _dir) = gateway("tpm", "").await;
    let (secret, _) = create_key(&gw, json!({"name": "tpm", "tpm": 100})).await;
    // 5 prompt tokens (estimated) + 200 can never fit in 100.
    let r = chat_as(&gw, &secret, chat("m", json!({"max_tokens": 200}))).await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("100 tokens per minute"));
    // 5 + 60 = 65 estimated; the fake uses 12 + 9 = 21.
    assert_eq!(
        chat_as(&gw, &secret, chat("m", json!({"max_tokens": 60})))
            .await
            .status,
        200
    );
    // Uncorrected, 65 + 65 > 100 would refuse this one; corrected, 21 + 65 fits.
    let mut status = 0;
    for _ in 0..50 {
        status = chat_as(&gw, &secret, chat("m", json!({"max_tokens": 60})))
            .await
            .status;
        if status == 200 {
            break;
        }
        // The correction is settled just after the answer: give it a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    // 21 + 21 + 65 > 100.
    assert_eq!(
        chat_as(&gw, &secret, chat("m", json!({"max_tokens": 60})))
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn concurrent_requests_are_limited() {
    let (_fake, gw, _dir) = gateway("conc", "").await;
    let (secret, _) = create_key(&gw, json!({"name": "conc", "max_concurrent": 2})).await;
    let slow = chat(
        "m",
        json!({"x_fake": Behavior::new().with_delay_ms(600).to_json()}),
    );
    let a = tokio::spawn({
        let (url, s, b) = (
            gw.url("/v1/chat/completions"),
            secret.clone(),
            slow.to_string(),
        );
        async move {
            let auth = format!("Bearer {s}");
            TestClient::new()
                .post_json(&url, b, &[("authorization", &auth)])
                .await
                .unwrap()
                .status
        }
    });
    let b = tokio::spawn({
        let (url, s, b) = (
            gw.url("/v1/chat/completions"),
            secret.clone(),
            slow.to_string(),
        );
        async move {
            let auth = format!("Bearer {s}");
            TestClient::new()
                .post_json(&url, b, &[("authorization", &auth)])
                .await
                .unwrap()
                .status
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = chat_as(&gw, &secret, chat("m", json!({}))).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_concurrent"));
    assert_eq!(a.await.unwrap(), 200);
    assert_eq!(b.await.unwrap(), 200);
    let mut status = 0;
    for _ in 0..50 {
        status = chat_as(&gw, &secret, chat("m", json!({}))).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "slots are freed when requests end");
}

#[tokio::test]
async fn a_models_own_limits_apply_over_every_key() {
    let (_fake, gw, _dir) = gateway("model-limits", "limits = { rpm = 2 }").await;
    let (one, _) = create_key(&gw, json!({"name": "one"})).await;
    let (two, _) = create_key(&gw, json!({"name": "two"})).await;
    let body = json!({"model": "emb", "input": "x"});
    let emb = |key: String| {
        let gw_url = gw.url("/v1/embeddings");
        let body = body.to_string();
        async move {
            let auth = format!("Bearer {key}");
            TestClient::new()
                .post_json(&gw_url, body, &[("authorization", &auth)])
                .await
                .unwrap()
        }
    };
    assert_eq!(emb(one.clone()).await.status, 200);
    assert_eq!(emb(two.clone()).await.status, 200);
    let r = emb(one.clone()).await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the model `emb`"));
    // Another model is not affected.
    assert_eq!(chat_as(&gw, &two, chat("m", json!({}))).await.status, 200);
}

/// Each request costs exactly its estimate: 5 prompt tokens (estimated from "hi") at $1 and
/// `max_tokens` 9 completion tokens at $2 per million = 23,000 nano-USD.
const PER_REQUEST: u64 = 5 * 1_000 + 9 * 2_000;

fn exact_chat() -> Value {
    let usage = FakeUsage {
        prompt_tokens: 5,
        completion_tokens: 9,
        ..FakeUsage::default()
    };
    let mut b = Behavior::new();
    b.usage = Some(usage);
    chat("m", json!({"max_tokens": 9, "x_fake": b.to_json()}))
}

#[tokio::test]
async fn a_budget_refuses_at_the_boundary_under_concurrent_requests() {
    let (_fake, gw, _dir) = gateway("budget", "").await;
    // Room for exactly 10 requests.
    let budget_usd = (10 * PER_REQUEST) as f64 / 1e9;
    let (secret, created) = create_key(&gw, json!({"name": "b", "budget_usd": budget_usd})).await;
    let url = gw.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (url, s, body) = (url.clone(), secret.clone(), exact_chat().to_string());
            tokio::spawn(async move {
                let auth = format!("Bearer {s}");
                TestClient::new()
                    .post_json(&url, body, &[("authorization", &auth)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(r.header("x-sluice-cost-usd"), Some("0.000023"));
            }
            429 => {
                assert_eq!(
                    error_of(&r),
                    ("insufficient_quota".into(), "budget_exceeded".into())
                );
                assert!(
                    r.header("retry-after").is_none(),
                    "a total budget never resets"
                );
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(ok, 10, "exactly the budget's worth of requests is admitted");
    // Once settled, the spend is the budget exactly, and the next request is refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = chat_as(&gw, &secret, exact_chat()).await;
    assert_eq!(r.status, 429);
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let now = sluice_store::unix_now_ms();
    let report = ledger
        .report(Dimension::Key, now - 60_000, now)
        .await
        .unwrap();
    let row = report
        .rows
        .iter()
        .find(|r| r.group == "b")
        .expect("a row for the key");
    assert_eq!(row.cost_nano_usd, 10 * PER_REQUEST);
    assert_eq!(row.requests, 41, "refused requests are logged too");
    assert_eq!(row.errors, 31);
    let id = created["id"].as_str().unwrap();
    let r = call(
        &gw,
        Method::GET,
        &format!("/admin/keys/{id}"),
        Value::Null,
        Some(MASTER),
    )
    .await;
    assert_eq!(r.json()["spend_usd"], budget_usd);
}

#[tokio::test]
async fn budget_and_spend_survive_a_restart() {
    let (fake, gw, dir) = gateway("restart", "").await;
    let budget_usd = (3 * PER_REQUEST) as f64 / 1e9;
    let (secret, _) = create_key(
        &gw,
        json!({"name": "r", "budget_usd": budget_usd, "budget_period": "month"}),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(chat_as(&gw, &secret, exact_chat()).await.status, 200);
    }
    let mut gw = gw;
    gw.begin_shutdown().await.unwrap().unwrap();
    // A new gateway on the same data directory: one request's worth is left.
    let toml = keyed_config(&dir, &fake.base_url(), "");
    let gw = start_with(&toml).await;
    assert_eq!(chat_as(&gw, &secret, exact_chat()).await.status, 200);
    let r = chat_as(&gw, &secret, exact_chat()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "a monthly budget resets");
}

fn priced_gateway_extra() -> &'static str {
    r#"
[[providers]]
name = "claude"
type = "anthropic"
base_url = "UPSTREAM"
api_key = "sk-ant"
[[models]]
name = "gpt-4o"
provider = "fake"
price = { input = 2.5, cached_input = 1.25, output = 10.0 }
[[models]]
name = "sonnet"
provider = "claude"
price = { input = 3.0, cached_input = 0.3, cache_write = 3.75, output = 15.0 }
"#
}

#[tokio::test]
async fn streamed_and_prompt_cached_usage_is_priced_exactly() {
    let fake = FakeUpstream::start().await;
    let dir = data_dir("exact");
    let extra = priced_gateway_extra().replace("UPSTREAM", &fake.base_url().replace("/v1", ""));
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
{extra}
"#,
        dir = dir.display(),
        upstream = fake.base_url(),
    );
    let gw = start_with(&toml).await;
    // OpenAI: 1,000 prompt tokens of which 600 cached, 50 completion of which 20 reasoning.
    // (1000-600) x $2.50 + 600 x $1.25 + 50 x $10 per million = 2,250,000 nano-USD.
    let openai = FakeUsage {
        prompt_tokens: 1_000,
        cached_tokens: 600,
        completion_tokens: 50,
        reasoning_tokens: 20,
        ..FakeUsage::default()
    };
    // Anthropic: 2,000 prompt tokens: 1,200 cache reads, 500 cache writes, 300 plain; 100
    // output. 300 x $3 + 1200 x $0.30 + 500 x $3.75 + 100 x $15 per million = 4,635,000.
    let anthropic = FakeUsage {
        prompt_tokens: 2_000,
        cached_tokens: 1_200,
        cache_write_tokens: 500,
        completion_tokens: 100,
        ..FakeUsage::default()
    };
    let body = |model: &str, usage: FakeUsage, stream: bool| {
        let mut b = Behavior::new();
        b.usage = Some(usage);
        chat(model, json!({"stream": stream, "x_fake": b.to_json()})).to_string()
    };
    for (model, usage, nano) in [
        ("gpt-4o", openai, "0.00225"),
        ("sonnet", anthropic, "0.004635"),
    ] {
        let r = TestClient::new()
            .post_json(
                &gw.url("/v1/chat/completions"),
                body(model, usage, false),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-sluice-cost-usd"), Some(nano), "{model}");
        let mut s = post_stream(
            &gw.url("/v1/chat/completions"),
            body(model, usage, true),
            &[],
        )
        .await
        .unwrap();
        // The stream's cost comes last, as an SSE comment after `[DONE]`.
        let body = String::from_utf8(s.collect_body().await.unwrap().to_vec()).unwrap();
        assert!(
            body.ends_with(&format!("data: [DONE]\n\n: x-sluice-cost-usd {nano}\n\n")),
            "{body}"
        );
    }
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let now = sluice_store::unix_now_ms();
    let report = ledger
        .report(Dimension::Model, now - 60_000, now)
        .await
        .unwrap();
    let row = |m: &str| report.rows.iter().find(|r| r.group == m).unwrap().clone();
    let gpt = row("gpt-4o");
    assert_eq!(gpt.requests, 2);
    assert_eq!(
        gpt.cost_nano_usd,
        2 * 2_250_000,
        "whole and streamed, exact"
    );
    assert_eq!((gpt.prompt_tokens, gpt.cached_tokens), (2_000, 1_200));
    assert_eq!((gpt.completion_tokens, gpt.reasoning_tokens), (100, 40));
    let sonnet = row("sonnet");
    assert_eq!(
        sonnet.cost_nano_usd,
        2 * 4_635_000,
        "whole and streamed, exact"
    );
    assert_eq!(
        (
            sonnet.prompt_tokens,
            sonnet.cached_tokens,
            sonnet.cache_write_tokens
        ),
        (4_000, 2_400, 1_000)
    );
    assert_eq!(sonnet.completion_tokens, 200);
}

#[tokio::test]
async fn every_answered_request_has_its_record() {
    let (_fake, gw, _dir) = gateway("records", "").await;
    let (secret, _) = create_key(&gw, json!({"name": "rec"})).await;
    let auth = format!("Bearer {secret}");
    for i in 0..20 {
        if i % 2 == 0 {
            let r = chat_as(&gw, &secret, chat("m", json!({}))).await;
            assert_eq!(r.status, 200);
        } else {
            let body = chat("m", json!({"stream": true})).to_string();
            let mut s = post_stream(
                &gw.url("/v1/chat/completions"),
                body,
                &[("authorization", &auth)],
            )
            .await
            .unwrap();
            let (_, err) = s.collect_events().await;
            assert!(err.is_none());
        }
    }
    // An upstream failure is recorded with its status.
    let failing = chat(
        "m",
        json!({"x_fake": Behavior::new().with_status(400).to_json()}),
    );
    assert_eq!(chat_as(&gw, &secret, failing).await.status, 400);
    let r = call(
        &gw,
        Method::GET,
        "/admin/spend?by=key&since=1h",
        Value::Null,
        Some(MASTER),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "rec")
        .unwrap()
        .clone();
    assert_eq!(row["requests"], 21);
    assert_eq!(row["errors"], 1);
    // The fake reports 12 prompt tokens; 9 completion tokens whole, 3 pieces streamed.
    assert_eq!(row["prompt_tokens"], 20 * 12, "the refused call used none");
    let r = call(
        &gw,
        Method::GET,
        "/admin/spend?by=colour",
        Value::Null,
        Some(MASTER),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = call(&gw, Method::GET, "/admin/spend", Value::Null, Some(&secret)).await;
    assert_eq!(r.status, 401);
    let metrics = call(&gw, Method::GET, "/metrics", Value::Null, None)
        .await
        .text();
    assert!(
        metrics.contains("sluice_spend_log_records_total{store=\"sqlite\",result=\"written\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_spend_usd_total"));
}

#[tokio::test]
async fn a_budget_reserves_what_a_media_request_will_cost() {
    // $15 per million characters: 1,000 characters cost $0.015.
    let extra = "[[models]]\nname = \"tts\"\nprovider = \"fake\"\nprice = { character = 15.0 }\n";
    let (fake, gw, _dir) = gateway("media-budget", extra).await;
    let (key, _) = create_key(&gw, json!({"name": "voice", "budget_usd": 0.01})).await;
    let speech =
        |chars: usize| json!({"model": "tts", "voice": "alloy", "input": "a".repeat(chars)});
    // 1,000 characters would cost more than the whole budget: refused before any upstream call.
    let r = call(
        &gw,
        Method::POST,
        "/v1/audio/speech",
        speech(1_000),
        Some(&key),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "insufficient_quota");
    assert_eq!(fake.request_count(), 0);
    // 100 characters ($0.0015) fit.
    let r = call(
        &gw,
        Method::POST,
        "/v1/audio/speech",
        speech(100),
        Some(&key),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.body.len(),
        100 * sluice_testkit::media::AUDIO_BYTES_PER_CHAR
    );
}
