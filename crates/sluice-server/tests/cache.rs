//! The response cache and request coalescing over real loopback HTTP, against the fake
//! upstream, with the embedded store (memory tier in front of SQLite) in a fresh data
//! directory per test.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;
use serde_json::{json, Value};
use sluice_testkit::client::{get, post_json, post_stream};
use sluice_testkit::{Behavior, FakeUpstream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The master key: with `server.master_key` set, every `/v1` request needs a key.
const AUTH: &[(&str, &str)] = &[("authorization", "Bearer sk-admin")];

/// A fresh data directory.
fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-cache-test-{name}-{}-{}",
        std::process::id(),
        sluice_core::rng::next_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Model `m` on the fake upstream, with `[cache]` and `extra` TOML.
fn cache_config(upstream: &str, dir: &std::path::Path, cache: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "sk-admin"
[storage]
data_dir = "{dir}"
[cache]
{cache}
[routing]
retry = {{ attempts = 1 }}
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
[[models]]
name = "m"
provider = "fake"
upstream = "upstream-m"
price = {{ input = 1.0, output = 2.0 }}
[[models]]
name = "emb"
provider = "fake"
{extra}
"#,
        dir = dir.display()
    )
}

async fn cached_gateway(cache: &str, extra: &str) -> (FakeUpstream, Gateway, PathBuf) {
    let fake = FakeUpstream::start().await;
    let dir = data_dir("gw");
    let gw = start_with(&cache_config(&fake.base_url(), &dir, cache, extra)).await;
    (fake, gw, dir)
}

fn chat(content: &str, extra: Value) -> String {
    let mut v = json!({
        "model": "m",
        "temperature": 0,
        "messages": [{"role": "user", "content": content}],
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

async fn post(
    gw: &Gateway,
    body: &str,
    headers: &[(&str, &str)],
) -> sluice_testkit::client::TestResponse {
    let mut all = AUTH.to_vec();
    all.extend_from_slice(headers);
    post_json(&gw.url("/v1/chat/completions"), body.to_string(), &all)
        .await
        .unwrap()
}

/// The assistant content of a streamed answer, and its event count.
async fn stream_content(gw: &Gateway, body: &str) -> (String, Option<String>, usize) {
    let mut s = post_stream(&gw.url("/v1/chat/completions"), body.to_string(), AUTH)
        .await
        .unwrap();
    let cache = s.header("x-sluice-cache").map(str::to_string);
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut content = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
    }
    (content, cache, events.len())
}

#[tokio::test]
async fn a_repeated_question_is_answered_from_the_cache() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    let first = post(&gw, &chat("hello", json!({})), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    let second = post(&gw, &chat("hello", json!({})), &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-sluice-cache"), Some("hit"));
    assert_eq!(second.header("x-sluice-model"), Some("m"));
    assert_eq!(second.header("x-sluice-attempts"), Some("0"));
    assert!(second.header("x-sluice-cache-age").is_some());
    assert_eq!(
        second.json(),
        first.json(),
        "the same answer, byte for byte"
    );
    assert_eq!(fake.request_count(), 1);

    // Key order, `user`, the stream flag's absence and an equal temperature written as a
    // float do not change the key; another question does.
    let reordered = r#"{"messages":[{"content":"hello","role":"user"}],"user":"u-1","temperature":0.0,"model":"m"}"#;
    assert_eq!(
        post(&gw, reordered, &[]).await.header("x-sluice-cache"),
        Some("hit")
    );
    let other = post(&gw, &chat("hello!", json!({})), &[]).await;
    assert_eq!(other.header("x-sluice-cache"), Some("miss"));
    assert_eq!(fake.request_count(), 2);

    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(metrics.contains("sluice_cache_hits_total 2"), "{metrics}");
    assert!(metrics.contains("sluice_cache_misses_total 2"), "{metrics}");
    assert!(
        metrics.contains("sluice_cache_saved_usd_total"),
        "{metrics}"
    );
    // The hits saved what the first answer cost: the fake reports usage, `m` is priced.
    let saved: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_cache_saved_usd_total "))
        .unwrap()
        .parse()
        .unwrap();
    let u = &first.json()["usage"];
    let cost = u["prompt_tokens"].as_f64().unwrap() * 1.0 / 1e6
        + u["completion_tokens"].as_f64().unwrap() * 2.0 / 1e6;
    assert!(
        (saved - 2.0 * cost).abs() < 1e-12,
        "saved {saved}, cost {cost}"
    );
}

#[tokio::test]
async fn streaming_and_non_streaming_requests_share_entries() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    // Stored from a stream...
    let (streamed, status, _) = stream_content(&gw, &chat("s", json!({"stream": true}))).await;
    assert_eq!(status.as_deref(), Some("miss"));
    assert!(!streamed.is_empty());
    // ...served as JSON...
    let whole = post(&gw, &chat("s", json!({})), &[]).await;
    assert_eq!(whole.header("x-sluice-cache"), Some("hit"));
    let v = whole.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], streamed);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // ...and replayed as a stream, with the usage chunk only when asked for.
    let (replayed, status, _) = stream_content(&gw, &chat("s", json!({"stream": true}))).await;
    assert_eq!(status.as_deref(), Some("hit"));
    assert_eq!(replayed, streamed);
    let mut s = post_stream(
        &gw.url("/v1/chat/completions"),
        chat(
            "s",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
        AUTH,
    )
    .await
    .unwrap();
    let (events, _) = s.collect_events().await;
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(fake.request_count(), 1);

    // Stored from JSON, replayed as a stream.
    let first = post(&gw, &chat("j", json!({})), &[]).await;
    let (replayed, status, _) = stream_content(&gw, &chat("j", json!({"stream": true}))).await;
    assert_eq!(status.as_deref(), Some("hit"));
    assert_eq!(replayed, first.json()["choices"][0]["message"]["content"]);
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn policy_decides_what_is_cached() {
    let extra = r#"
[[models]]
name = "free"
provider = "fake"
cache = { nondeterministic = true }
[[models]]
name = "off"
provider = "fake"
cache = { enabled = false }
"#;
    let (fake, gw, _dir) = cached_gateway("enabled = true", extra).await;
    // Temperature above 0 without a seed: not cached by default.
    let body = r#"{"model":"m","temperature":0.7,"messages":[{"role":"user","content":"x"}]}"#;
    assert_eq!(
        post(&gw, body, &[]).await.header("x-sluice-cache"),
        Some("bypass")
    );
    assert_eq!(
        post(&gw, body, &[]).await.header("x-sluice-cache"),
        Some("bypass")
    );
    // A seed makes it repeatable.
    let seeded =
        r#"{"model":"m","temperature":0.7,"seed":3,"messages":[{"role":"user","content":"x"}]}"#;
    assert_eq!(
        post(&gw, seeded, &[]).await.header("x-sluice-cache"),
        Some("miss")
    );
    assert_eq!(
        post(&gw, seeded, &[]).await.header("x-sluice-cache"),
        Some("hit")
    );
    // A model that caches non-deterministic requests, and one with the cache off.
    let free = body.replace("\"m\"", "\"free\"");
    assert_eq!(
        post(&gw, &free, &[]).await.header("x-sluice-cache"),
        Some("miss")
    );
    assert_eq!(
        post(&gw, &free, &[]).await.header("x-sluice-cache"),
        Some("hit")
    );
    let off = chat("x", json!({"model": "off"}));
    assert_eq!(
        post(&gw, &off, &[]).await.header("x-sluice-cache"),
        Some("bypass")
    );
    assert_eq!(
        post(&gw, &off, &[]).await.header("x-sluice-cache"),
        Some("bypass")
    );
    assert_eq!(fake.request_count(), 6);
}

#[tokio::test]
async fn request_directives() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    let body = chat("d", json!({}));
    // no-store: looked up, not stored.
    let r = post(&gw, &body, &[("x-sluice-cache", "no-store")]).await;
    assert_eq!(r.header("x-sluice-cache"), Some("miss"));
    assert_eq!(
        post(&gw, &body, &[]).await.header("x-sluice-cache"),
        Some("miss")
    );
    // Now stored. no-cache: upstream again (and stored again).
    let r = post(&gw, &body, &[("x-sluice-cache", "no-cache")]).await;
    assert_eq!(r.header("x-sluice-cache"), Some("miss"));
    assert_eq!(
        post(&gw, &body, &[]).await.header("x-sluice-cache"),
        Some("hit")
    );
    assert_eq!(fake.request_count(), 3);
    // Both: bypass.
    let r = post(&gw, &body, &[("x-sluice-cache", "no-cache, no-store")]).await;
    assert_eq!(r.header("x-sluice-cache"), Some("bypass"));
    // A short ttl: gone after it.
    let short = chat("ttl", json!({}));
    post(&gw, &short, &[("x-sluice-cache", "ttl=1")]).await;
    assert_eq!(
        post(&gw, &short, &[]).await.header("x-sluice-cache"),
        Some("hit")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post(&gw, &short, &[]).await.header("x-sluice-cache"),
        Some("miss")
    );
    // A bad directive is the client's error.
    let r = post(&gw, &body, &[("x-sluice-cache", "forever")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn only_successful_complete_answers_are_stored() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    // An upstream error is not stored.
    fake.push(Behavior::new().with_status(500));
    let body = chat("e", json!({}));
    assert_eq!(post(&gw, &body, &[]).await.status, 502);
    let ok = post(&gw, &body, &[]).await;
    assert_eq!(
        (ok.status, ok.header("x-sluice-cache")),
        (200, Some("miss"))
    );
    assert_eq!(
        post(&gw, &body, &[]).await.header("x-sluice-cache"),
        Some("hit")
    );

    // A stream cut midway is not stored.
    let cut = chat(
        "c",
        json!({"stream": true, "x_fake": {"cut_after_chunks": 2}}),
    );
    let mut s = post_stream(&gw.url("/v1/chat/completions"), cut.clone(), AUTH)
        .await
        .unwrap();
    let (events, _) = s.collect_events().await;
    assert!(
        events.last().unwrap().contains("stream_interrupted"),
        "{events:?}"
    );
    let before = fake.request_count();
    let mut s = post_stream(&gw.url("/v1/chat/completions"), cut, AUTH)
        .await
        .unwrap();
    assert_eq!(s.header("x-sluice-cache"), Some("miss"));
    let _ = s.collect_events().await;
    assert_eq!(
        fake.request_count(),
        before + 1,
        "the cut stream was not stored"
    );
}

#[tokio::test]
async fn answers_over_max_entry_bytes_are_not_stored() {
    let (fake, gw, _dir) = cached_gateway("enabled = true\nmax_entry_bytes = 64", "").await;
    let body = chat("big", json!({}));
    assert_eq!(
        post(&gw, &body, &[]).await.header("x-sluice-cache"),
        Some("miss")
    );
    assert_eq!(
        post(&gw, &body, &[]).await.header("x-sluice-cache"),
        Some("miss")
    );
    assert_eq!(fake.request_count(), 2);
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains("sluice_cache_too_large_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn embeddings_are_cached() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    let body = r#"{"model":"emb","input":["a","b"]}"#;
    let url = gw.url("/v1/embeddings");
    let first = post_json(&url, body, AUTH).await.unwrap();
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    let second = post_json(&url, body, AUTH).await.unwrap();
    assert_eq!(second.header("x-sluice-cache"), Some("hit"));
    assert_eq!(second.json(), first.json());
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn anthropic_clients_share_the_cache() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    let body = r#"{"model":"m","max_tokens":100,"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    let url = gw.url("/v1/messages");
    let first = post_json(&url, body, AUTH).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    let second = post_json(&url, body, AUTH).await.unwrap();
    assert_eq!(second.header("x-sluice-cache"), Some("hit"));
    assert_eq!(second.json()["content"], first.json()["content"]);
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn entries_survive_a_restart() {
    let fake = FakeUpstream::start().await;
    let dir = data_dir("restart");
    let toml = cache_config(&fake.base_url(), &dir, "enabled = true", "");
    let body = chat("persist", json!({}));
    let first = {
        let mut gw = start_with(&toml).await;
        let r = post(&gw, &body, &[]).await;
        assert_eq!(r.header("x-sluice-cache"), Some("miss"));
        // A clean shutdown flushes the store.
        gw.begin_shutdown().await.unwrap().unwrap();
        r.json()
    };
    let gw = start_with(&toml).await;
    let r = post(&gw, &body, &[]).await;
    assert_eq!(r.header("x-sluice-cache"), Some("hit"));
    assert_eq!(r.json(), first);
    assert_eq!(fake.request_count(), 1);
    // The admin API clears it.
    let clear = sluice_testkit::TestClient::new()
        .request(
            http::Method::DELETE,
            &gw.url("/admin/cache"),
            bytes::Bytes::new(),
            &[("authorization", "Bearer sk-admin")],
        )
        .await
        .unwrap();
    assert_eq!(clear.status, 200, "{}", clear.text());
    assert_eq!(
        post(&gw, &body, &[]).await.header("x-sluice-cache"),
        Some("miss")
    );
}

/// `n` identical requests at once.
async fn concurrent(
    gw: &Arc<Gateway>,
    body: &str,
    n: usize,
) -> Vec<sluice_testkit::client::TestResponse> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (gw, body) = (Arc::clone(gw), body.to_string());
        tasks.push(tokio::spawn(async move { post(&gw, &body, &[]).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_hundred_identical_requests_make_one_upstream_call() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    let gw = Arc::new(gw);
    // The upstream takes a second: long enough for all 100 to arrive while it answers,
    // even on a loaded machine (a late one would be a plain hit, still no upstream call).
    let body = chat("together", json!({"x_fake": {"delay_ms": 1000}}));
    let answers = concurrent(&gw, &body, 100).await;
    assert_eq!(fake.request_count(), 1);
    let first = answers[0].json();
    for a in &answers {
        assert_eq!(a.status, 200);
        assert_eq!(a.json(), first);
    }
    let coalesced = answers
        .iter()
        .filter(|a| a.header("x-sluice-coalesced") == Some("true"))
        .count();
    assert!(coalesced >= 50, "{coalesced} of 100 waited for the leader");
    let hits = answers
        .iter()
        .filter(|a| a.header("x-sluice-cache") == Some("hit"))
        .count();
    assert_eq!(hits, 99, "one miss (the leader), every other answer shared");
}

#[tokio::test]
async fn a_hundred_identical_streams_make_one_upstream_call() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    let gw = Arc::new(gw);
    let body = chat(
        "streams",
        json!({"stream": true, "x_fake": {"delay_ms": 1000, "chunk_delay_ms": 20}}),
    );
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (gw, body) = (Arc::clone(&gw), body.clone());
        tasks.push(tokio::spawn(
            async move { stream_content(&gw, &body).await },
        ));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(fake.request_count(), 1);
    let (content, _, events) = &results[0];
    assert!(!content.is_empty());
    for (c, _, e) in &results {
        assert_eq!(
            c, content,
            "every stream has the whole answer, from the start"
        );
        assert_eq!(e, events);
    }
    // A non-streamed request for the same question is now a hit.
    let r = post(
        &gw,
        &chat(
            "streams",
            json!({"x_fake": {"delay_ms": 1000, "chunk_delay_ms": 20}}),
        ),
        &[],
    )
    .await;
    assert_eq!(r.header("x-sluice-cache"), Some("hit"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], *content);
}

#[tokio::test]
async fn a_failing_leader_does_not_fail_its_followers() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    let gw = Arc::new(gw);
    // The first upstream call fails slowly; every later one answers.
    fake.push(Behavior {
        delay_ms: 300,
        status: Some(500),
        ..Behavior::default()
    });
    fake.set_default(Behavior {
        delay_ms: 100,
        ..Behavior::default()
    });
    let body = chat("fails first", json!({}));
    let answers = concurrent(&gw, &body, 50).await;
    let failed = answers.iter().filter(|a| a.status != 200).count();
    assert_eq!(failed, 1, "only the leader gets the leader's error");
    assert_eq!(
        fake.request_count(),
        2,
        "the followers' new leader called once"
    );
}

#[tokio::test]
async fn a_stream_outlives_its_leaders_client() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    let gw = Arc::new(gw);
    let body = chat(
        "leaver",
        json!({"stream": true, "x_fake": {"chunk_delay_ms": 100}}),
    );
    // The leader's client reads one event and leaves.
    let mut leader = post_stream(&gw.url("/v1/chat/completions"), body.clone(), AUTH)
        .await
        .unwrap();
    assert!(leader.next_event().await.is_some());
    let follower = {
        let (gw, body) = (Arc::clone(&gw), body.clone());
        tokio::spawn(async move { stream_content(&gw, &body).await })
    };
    // Let the follower join (the stream runs for about 0.7 s), then the leader's client leaves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(leader);
    let (content, status, _) = follower.await.unwrap();
    assert_eq!(status.as_deref(), Some("hit"));
    assert!(!content.is_empty());
    assert_eq!(fake.request_count(), 1);
    assert_eq!(fake.cancelled_count(), 0, "the follower still wanted it");
}

/// Creates a virtual key with the secret `secret` (as an operator may supply it).
async fn tenant(gw: &Gateway, secret: &str) {
    let spec = json!({"name": secret, "key": secret}).to_string();
    let r = post_json(&gw.url("/admin/keys"), spec, AUTH).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
}

async fn post_as(gw: &Gateway, secret: &str, body: &str) -> sluice_testkit::client::TestResponse {
    let auth = format!("Bearer {secret}");
    post_json(
        &gw.url("/v1/chat/completions"),
        body.to_string(),
        &[("authorization", auth.as_str())],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_key_is_only_served_answers_cached_for_it() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", "").await;
    tenant(&gw, "sk-tenant-a-0123456789abcdef").await;
    tenant(&gw, "sk-tenant-b-0123456789abcdef").await;
    let question = chat("what did I tell you?", json!({}));
    let a = post_as(&gw, "sk-tenant-a-0123456789abcdef", &question).await;
    assert_eq!(a.header("x-sluice-cache"), Some("miss"));
    assert_eq!(
        post_as(&gw, "sk-tenant-a-0123456789abcdef", &question)
            .await
            .header("x-sluice-cache"),
        Some("hit"),
        "the same key is served its own answer"
    );
    let b = post_as(&gw, "sk-tenant-b-0123456789abcdef", &question).await;
    assert_eq!(
        b.header("x-sluice-cache"),
        Some("miss"),
        "another key never gets the first key's answer"
    );
    assert_eq!(fake.request_count(), 2);
    // Streams and coalesced requests are scoped the same way: B's stream is B's entry.
    let (_, cache, _) = stream_content_as(&gw, "sk-tenant-b-0123456789abcdef", &question).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn a_global_scope_shares_answers_across_keys() {
    let (fake, gw, _dir) = cached_gateway("enabled = true\nscope = \"global\"", "").await;
    tenant(&gw, "sk-tenant-a-0123456789abcdef").await;
    tenant(&gw, "sk-tenant-b-0123456789abcdef").await;
    let question = chat("shared", json!({}));
    assert_eq!(
        post_as(&gw, "sk-tenant-a-0123456789abcdef", &question)
            .await
            .header("x-sluice-cache"),
        Some("miss")
    );
    assert_eq!(
        post_as(&gw, "sk-tenant-b-0123456789abcdef", &question)
            .await
            .header("x-sluice-cache"),
        Some("hit")
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn a_models_own_scope_overrides_the_default() {
    let extra = "cache = { scope = \"global\" }";
    let (fake, gw, _dir) = cached_gateway("enabled = true", extra).await;
    tenant(&gw, "sk-tenant-a-0123456789abcdef").await;
    tenant(&gw, "sk-tenant-b-0123456789abcdef").await;
    let body = json!({"model": "emb", "input": "shared text"}).to_string();
    for (secret, want) in [
        ("sk-tenant-a-0123456789abcdef", "miss"),
        ("sk-tenant-b-0123456789abcdef", "hit"),
    ] {
        let auth = format!("Bearer {secret}");
        let r = post_json(
            &gw.url("/v1/embeddings"),
            body.clone(),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
        assert_eq!(r.header("x-sluice-cache"), Some(want), "{secret}");
    }
    assert_eq!(fake.request_count(), 1);
}

async fn stream_content_as(
    gw: &Gateway,
    secret: &str,
    body: &str,
) -> (String, Option<String>, usize) {
    let mut v: Value = serde_json::from_str(body).unwrap();
    v["stream"] = json!(true);
    let auth = format!("Bearer {secret}");
    let mut s = post_stream(
        &gw.url("/v1/chat/completions"),
        v.to_string(),
        &[("authorization", auth.as_str())],
    )
    .await
    .unwrap();
    let cache = s.header("x-sluice-cache").map(str::to_string);
    let (events, err) = s.collect_events().await;
    assert!(err.is_none(), "{err:?}");
    (events.join(""), cache, events.len())
}

/// `tts` on the fake at $15 per million characters.
const TTS: &str = r#"
[[models]]
name = "tts"
provider = "fake"
upstream = "tts-1"
price = { character = 15.0 }
"#;

fn speech(input: &str, extra: Value) -> String {
    let mut v = json!({"model": "tts", "input": input, "voice": "alloy"});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

async fn say(gw: &Gateway, body: &str, id: &str) -> sluice_testkit::client::TestResponse {
    let mut headers = AUTH.to_vec();
    headers.push(("x-request-id", id));
    post_json(&gw.url("/v1/audio/speech"), body.to_string(), &headers)
        .await
        .unwrap()
}

#[tokio::test]
async fn speech_is_cached_as_the_same_bytes() {
    use sluice_testkit::media::fake_audio;
    let (fake, gw, _dir) = cached_gateway("enabled = true", TTS).await;
    let input = "Read this lesson aloud, please, in a calm voice.";
    let body = speech(input, json!({}));
    let first = say(&gw, &body, "tts-first").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    assert_eq!(&first.body[..], &fake_audio(input)[..]);
    let second = say(&gw, &body, "tts-second").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-sluice-cache"), Some("hit"));
    assert_eq!(second.header("content-type"), Some("audio/mpeg"));
    assert_eq!(second.body, first.body, "the same bytes");
    assert_eq!(fake.request_count(), 1, "no upstream call for the hit");

    // Another voice, speed or format is another answer.
    for other in [
        json!({"voice": "nova"}),
        json!({"speed": 1.25}),
        json!({"response_format": "opus"}),
    ] {
        let r = say(&gw, &speech(input, other.clone()), "tts-other").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-sluice-cache"), Some("miss"), "{other}");
    }
    assert_eq!(fake.request_count(), 4);

    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(metrics.contains("sluice_cache_hits_total 1"), "{metrics}");
    assert!(metrics.contains("sluice_cache_misses_total 4"), "{metrics}");
    // The hit saved what the first answer cost: characters at $15 per million.
    let saved: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_cache_saved_usd_total "))
        .unwrap()
        .parse()
        .unwrap();
    let cost = input.len() as f64 * 15.0 / 1e6;
    assert!((saved - cost).abs() < 1e-9, "saved {saved}, cost {cost}");

    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let find = |id: &str| records.iter().find(|r| r.request_id == id).unwrap();
    let (miss, hit) = (find("tts-first"), find("tts-second"));
    assert_eq!((miss.cache.as_str(), hit.cache.as_str()), ("miss", "hit"));
    assert_eq!(miss.cost_nano_usd, (input.len() * 15_000) as u64);
    assert_eq!(hit.cost_nano_usd, 0, "a hit costs nothing");
    assert_eq!(hit.endpoint, "speech");
}

#[tokio::test]
async fn speech_as_sse_events_is_cached_and_replayed_as_the_same_events() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", TTS).await;
    let input = "A lesson read aloud as events.";
    let sse = speech(input, json!({"stream_format": "sse"}));
    let first = say(&gw, &sse, "tts-sse-first").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-sluice-cache"), Some("miss"));
    let events = first.text();
    assert!(events.contains("speech.audio.delta"), "{events}");
    assert!(events.contains("speech.audio.done"), "{events}");
    let second = say(&gw, &sse, "tts-sse-second").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-sluice-cache"), Some("hit"));
    assert!(
        second
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        second.header("content-type")
    );
    assert_eq!(second.body, first.body, "the same events, byte for byte");
    assert_eq!(fake.request_count(), 1, "no upstream call for the hit");
    // The hit saved what the first answer cost: characters at $15 per million.
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    let saved: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_cache_saved_usd_total "))
        .unwrap()
        .parse()
        .unwrap();
    let cost = input.len() as f64 * 15.0 / 1e6;
    assert!((saved - cost).abs() < 1e-9, "saved {saved}, cost {cost}");

    // The same text as audio bytes is another answer (`stream_format` is in the key), and
    // its entry never serves the events.
    let audio = speech(input, json!({}));
    let raw = say(&gw, &audio, "tts-sse-audio").await;
    assert_eq!(raw.header("x-sluice-cache"), Some("miss"));
    assert_eq!(raw.header("content-type"), Some("audio/mpeg"));
    assert_eq!(
        say(&gw, &audio, "tts-sse-audio-2")
            .await
            .header("x-sluice-cache"),
        Some("hit")
    );
    let third = say(&gw, &sse, "tts-sse-third").await;
    assert_eq!(third.header("x-sluice-cache"), Some("hit"));
    assert_eq!(third.body, first.body);
    assert_eq!(fake.request_count(), 2);

    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let find = |id: &str| records.iter().find(|r| r.request_id == id).unwrap();
    let (miss, hit) = (find("tts-sse-first"), find("tts-sse-second"));
    assert_eq!((miss.cache.as_str(), hit.cache.as_str()), ("miss", "hit"));
    assert_eq!(miss.cost_nano_usd, (input.len() * 15_000) as u64);
    assert_eq!(hit.cost_nano_usd, 0, "a hit costs nothing");
}

/// Speech whose upstream is cut after two of its four frames (200 characters: 12,800
/// bytes of audio), chunked or with the upstream's `Content-Length`.
fn cut_speech(with_length: bool) -> String {
    let mut fake = json!({"cut_after_chunks": 2});
    if with_length {
        fake["headers"] = json!([["content-length", (200 * 64).to_string()]]);
    }
    speech(&"a".repeat(200), json!({ "x_fake": fake }))
}

/// `POST /v1/audio/speech` with `body` over a raw HTTP/1.1 connection closed after the
/// answer: everything the gateway sent until it closed the connection.
async fn raw_speech(gw: &Gateway, body: &str, id: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/audio/speech HTTP/1.1\r\nhost: sluice\r\nauthorization: Bearer sk-admin\r\n\
         x-request-id: {id}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway closed the connection");
    out
}

/// The body of a raw HTTP/1.1 answer, after its head.
fn raw_body(answer: &[u8]) -> &[u8] {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &answer[at + 4..]
}

/// Audio has no error event: a speech upstream cut midway aborts the client's response
/// (no final chunk, or a body short of its length, and the connection closed), so the
/// client's HTTP library reports an incomplete body instead of a short file that looks
/// whole; the request is recorded as failed (502) and nothing is cached.
#[tokio::test]
async fn a_cut_speech_stream_is_aborted_recorded_as_failed_and_not_cached() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", TTS).await;
    for with_length in [false, true] {
        let body = cut_speech(with_length);
        let id = format!("tts-cut-{with_length}");
        let mut headers = AUTH.to_vec();
        headers.push(("x-request-id", &id));
        let mut s = post_stream(&gw.url("/v1/audio/speech"), body.clone(), &headers)
            .await
            .unwrap();
        assert_eq!(s.header("x-sluice-cache"), Some("miss"), "{id}");
        assert_eq!(s.header("content-length").is_some(), with_length, "{id}");
        let got = s.collect_body().await;
        assert!(
            matches!(got, Err(sluice_testkit::client::ClientError::Body(_))),
            "{id}: the client sees the cut, not a short body: {:?}",
            got.map(|b| b.len())
        );

        let raw_id = format!("tts-cut-raw-{with_length}");
        let answer = raw_speech(&gw, &body, &raw_id).await;
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        let audio = raw_body(&answer);
        if with_length {
            assert!(text.contains("content-length: 12800"), "{text}");
            assert!(audio.len() < 200 * 64, "{id}: {} bytes", audio.len());
        } else {
            assert!(text.contains("transfer-encoding: chunked"), "{text}");
            assert!(!audio.ends_with(b"\r\n0\r\n\r\n"), "{id}: no final chunk");
        }
    }
    assert_eq!(fake.request_count(), 4, "the cut audio was never stored");

    // An uncut answer over the same raw connection ends with its final chunk.
    let whole = raw_speech(&gw, &speech(&"c".repeat(200), json!({})), "tts-whole").await;
    assert!(raw_body(&whole).ends_with(b"\r\n0\r\n\r\n"));

    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let status = |id: &str| records.iter().find(|r| r.request_id == id).unwrap().status;
    for with_length in [false, true] {
        assert_eq!(status(&format!("tts-cut-{with_length}")), 502);
        assert_eq!(status(&format!("tts-cut-raw-{with_length}")), 502);
    }
    assert_eq!(status("tts-whole"), 200);
}

#[tokio::test]
async fn speech_over_max_entry_bytes_is_piped_but_not_stored() {
    let (fake, gw, _dir) = cached_gateway("enabled = true\nmax_entry_bytes = 4096", TTS).await;
    let body = speech(&"b".repeat(200), json!({}));
    for _ in 0..2 {
        let r = say(&gw, &body, "tts-big").await;
        assert_eq!((r.status, r.body.len()), (200, 200 * 64));
        assert_eq!(r.header("x-sluice-cache"), Some("miss"));
    }
    assert_eq!(fake.request_count(), 2);
    let metrics = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        metrics.contains("sluice_cache_too_large_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn speech_is_never_cached_with_the_cache_off() {
    let (fake, gw, _dir) = cached_gateway("enabled = false", TTS).await;
    let body = speech("hello there", json!({}));
    for _ in 0..2 {
        let r = say(&gw, &body, "tts-off").await;
        assert_eq!(r.status, 200);
        assert_ne!(r.header("x-sluice-cache"), Some("hit"));
    }
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn cached_speech_still_reaches_its_client_as_it_arrives() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", TTS).await;
    // Four frames a second apart: the first is read while the upstream is still sending.
    let body = speech(
        &"c".repeat(200),
        json!({"x_fake": {"chunk_delay_ms": 1000}}),
    );
    let mut s =
        sluice_testkit::client::post_stream(&gw.url("/v1/audio/speech"), body.clone(), AUTH)
            .await
            .unwrap();
    assert_eq!(s.header("x-sluice-cache"), Some("miss"));
    let first = s.next_chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_eq!(fake.cancelled_count(), 0);
    // Leaving now cancels the upstream midway (so it had not finished), and stores nothing.
    drop(s);
    assert!(fake.wait_cancelled(1, Duration::from_secs(10)).await);
    let again = say(&gw, &body, "tts-again").await;
    assert_eq!(again.header("x-sluice-cache"), Some("miss"));
}

#[tokio::test]
async fn identical_speech_requests_at_once_make_one_upstream_call() {
    let (fake, gw, _dir) = cached_gateway("enabled = true", TTS).await;
    let gw = Arc::new(gw);
    let body = speech("together now", json!({"x_fake": {"delay_ms": 1000}}));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (gw, body) = (Arc::clone(&gw), body.clone());
        tasks.push(tokio::spawn(async move {
            say(&gw, &body, &format!("tts-together-{i}")).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(fake.request_count(), 1);
    for a in &answers {
        assert_eq!(a.status, 200);
        assert_eq!(a.body, answers[0].body);
        assert_eq!(a.header("content-type"), Some("audio/mpeg"));
    }
    let coalesced = answers
        .iter()
        .filter(|a| a.header("x-sluice-coalesced") == Some("true"))
        .count();
    assert!(coalesced >= 10, "{coalesced} of 20 waited for the leader");
}

/// The semantic stage with an embedding model sluice does not run itself (`emb` on the fake
/// upstream, which gives texts of one length the same vector): the question is embedded by
/// a `/v1/embeddings` request of the gateway's own through the pipeline, so a reworded
/// question of the same length is a semantic hit; the same question embedded again is an
/// exact hit of the embeddings request; each embedding is in the spend log without a key,
/// named after the request it served.
#[tokio::test]
async fn a_remote_embedding_model_serves_the_semantic_stage() {
    let (fake, gw, _dir) =
        cached_gateway("semantic = { model = \"emb\", threshold = 0.95 }", "").await;
    let url = gw.url("/v1/chat/completions");
    let ask = |text: &str| {
        let (url, body) = (url.clone(), chat(text, json!({})));
        async move {
            let r = post_json(&url, body, AUTH).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.header("x-sluice-cache").unwrap_or_default().to_string()
        }
    };
    assert_eq!(ask("What is the capital of France?").await, "miss");
    assert_eq!(fake.request_count(), 2, "the embedding, then the answer");
    assert_eq!(ask("Tell me the capital of France.").await, "semantic-hit");
    assert_eq!(fake.request_count(), 3, "only the embedding");
    assert_eq!(ask("Tell me the capital of France.").await, "semantic-hit");
    assert_eq!(
        fake.request_count(),
        3,
        "the same question's embedding was cached"
    );

    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await;
    let records = ledger.export(0).await.unwrap();
    let embeddings: Vec<_> = records
        .iter()
        .filter(|r| r.endpoint == "embeddings")
        .collect();
    assert_eq!(embeddings.len(), 3, "{embeddings:?}");
    for r in &embeddings {
        assert_eq!(r.model.as_deref(), Some("emb"), "{r:?}");
        assert_eq!(r.key_id, None, "{r:?}");
        assert!(r.request_id.ends_with("-semantic"), "{r:?}");
    }
    let chats: Vec<_> = records.iter().filter(|r| r.endpoint == "chat").collect();
    let parent = |suffix: &str| {
        chats
            .iter()
            .any(|c| format!("{}-semantic", c.request_id) == suffix)
    };
    assert!(
        embeddings.iter().all(|e| parent(&e.request_id)),
        "{records:?}"
    );
    assert_eq!(
        embeddings
            .iter()
            .map(|e| e.cache.as_str())
            .collect::<Vec<_>>(),
        ["miss", "miss", "hit"]
    );
}

/// A semantic stage's embedding model is any model or route sluice serves (a passthrough
/// provider's `provider/model` too); one that names nothing, or a reranker that is not a
/// local cross-encoder, is refused at start, naming the stage.
#[tokio::test]
async fn a_semantic_stage_must_name_a_model_sluice_serves() {
    let fake = FakeUpstream::start().await;
    let passthrough = format!(
        "[[providers]]\nname = \"open\"\ntype = \"openai\"\nbase_url = \"{}\"\npassthrough = true\n",
        fake.base_url()
    );
    // Routes over embedding models: two deployments of one model, or two models.
    let routes = "[[models]]\nname = \"emb2\"\nprovider = \"fake\"\nupstream = \"emb\"\n\
                  [[models]]\nname = \"other\"\nprovider = \"fake\"\n\
                  [[routes]]\nname = \"same\"\ntargets = [\"emb\", \"emb2\"]\n\
                  [[routes]]\nname = \"mixed\"\ntargets = [\"emb\", \"other\"]\n"
        .to_string();
    // (With one passthrough provider every name is served: it takes the rest.)
    for (semantic, extra, ok) in [
        ("{ model = \"emb\" }", "", true),
        (
            "{ model = \"open/text-embedding-3-small\" }",
            passthrough.as_str(),
            true,
        ),
        ("{ model = \"nope\" }", "", false),
        ("{ model = \"emb\", reranker = \"emb\" }", "", false),
        ("{ model = \"same\" }", routes.as_str(), true),
        ("{ model = \"mixed\" }", routes.as_str(), false),
    ] {
        let dir = data_dir("names");
        let cache = format!("semantic = {semantic}");
        let toml = cache_config(&fake.base_url(), &dir, &cache, extra);
        let config =
            sluice_core::config::Config::from_toml(&toml, &sluice_core::env::MapEnv::default())
                .unwrap();
        match sluice_server::Server::bind(config).await {
            Ok(_) => assert!(ok, "{semantic} was accepted"),
            Err(e) => {
                assert!(!ok, "{semantic}: {e}");
                assert!(e.to_string().contains("[cache].semantic"), "{e}");
            }
        }
    }
}
