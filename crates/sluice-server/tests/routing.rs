//! Routes over real loopback HTTP: strategies, retries, breakers, fallbacks, deadlines,
//! degraded answers and canaries, with fake upstreams injecting failures.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::start_with;
use serde_json::json;
use sluice_testkit::client::{get, post_json, post_stream, TestResponse};
use sluice_testkit::{Behavior, FakeUpstream};
use std::time::Duration;

/// The master key: with `server.master_key` set, every `/v1` request needs a key.
const AUTH: &[(&str, &str)] = &[("authorization", "Bearer sk-admin")];

/// Gateways started by this test process.
static GATEWAYS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Providers `pa`, `pb`, `pc` at three fake upstreams, models `a`, `b`, `c` on them, plus
/// `extra` (routes, `[routing]`...).
async fn three(extra: &str) -> (FakeUpstream, FakeUpstream, FakeUpstream, common::Gateway) {
    let (fa, fb, fc) = (
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    );
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "sk-admin"
[storage]
data_dir = "{dir}"
[[providers]]
name = "pa"
type = "openai"
base_url = "{a}"
[[providers]]
name = "pb"
type = "openai"
base_url = "{b}"
[[providers]]
name = "pc"
type = "openai"
base_url = "{c}"
[[models]]
name = "a"
provider = "pa"
tier = "small"
price = {{ input = 5.0, output = 15.0 }}
quality = 9.0
[[models]]
name = "b"
provider = "pb"
tier = "large"
price = {{ input = 0.1, output = 0.4 }}
quality = 5.0
[[models]]
name = "c"
provider = "pc"
tier = "medium"
{extra}
"#,
        // A directory of its own: without Redis a route's canary state is kept there, and
        // the canary tests must not see each other's rollouts.
        dir = std::env::temp_dir()
            .join("sluice-test-data")
            .join(
                env!("CARGO_MANIFEST_DIR")
                    .trim_start_matches('/')
                    .replace('/', "_")
            )
            .join(format!(
                "routing-{}-{}",
                std::process::id(),
                GATEWAYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ))
            .display(),
        a = fa.base_url(),
        b = fb.base_url(),
        c = fc.base_url(),
    );
    let gw = start_with(&toml).await;
    (fa, fb, fc, gw)
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn chat_stream(model: &str) -> String {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

async fn call(gw: &common::Gateway, body: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut all = AUTH.to_vec();
    all.extend_from_slice(headers);
    post_json(&gw.url("/v1/chat/completions"), body.to_string(), &all)
        .await
        .unwrap()
}

fn attempts(r: &TestResponse) -> u32 {
    r.header("x-sluice-attempts").unwrap().parse().unwrap()
}

const FALLBACK: &str = r#"
[[routes]]
name = "r"
strategy = "fallback"
targets = ["a", "b"]
"#;

#[tokio::test]
async fn fallback_answers_from_b_while_a_fails() {
    let (fa, fb, _fc, gw) = three(FALLBACK).await;
    fa.set_default(Behavior::new().with_status(500));
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-model"), Some("b"));
    assert_eq!(r.header("x-sluice-route"), Some("r"));
    // Default policy: two tries on `a` (a 5xx is retryable), then `b`.
    assert_eq!(attempts(&r), 3);
    assert_eq!(fa.request_count(), 2);
    assert_eq!(fb.request_count(), 1);
    // And streams too.
    let mut s = post_stream(&gw.url("/v1/chat/completions"), chat_stream("r"), AUTH)
        .await
        .unwrap();
    assert_eq!(s.header("x-sluice-model"), Some("b"));
    let (events, err) = s.collect_events().await;
    assert!(err.is_none());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn request_errors_are_not_retried_or_fallen_back() {
    let (fa, fb, _fc, gw) = three(FALLBACK).await;
    fa.set_default(Behavior::new().with_error(
        400,
        r#"{"error":{"message":"bad temperature","type":"invalid_request_error"}}"#,
    ));
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "bad temperature");
    assert_eq!(attempts(&r), 1);
    assert_eq!(fb.request_count(), 0);
}

#[tokio::test]
async fn deployment_specific_errors_fall_back_without_retry() {
    let (fa, fb, _fc, gw) = three(FALLBACK).await;
    fa.set_default(Behavior::new().with_status(401));
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        attempts(&r),
        2,
        "401 is not retried on `a`, but `b` may have a working key"
    );
    assert_eq!(fa.request_count(), 1);
    assert_eq!(fb.request_count(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_on_the_same_deployment() {
    let (fa, fb, _fc, gw) = three(FALLBACK).await;
    fa.push(Behavior::new().with_status(429).with_retry_after("0.2"));
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-sluice-model"),
        Some("a"),
        "waited out the 429 and retried `a`"
    );
    assert_eq!(attempts(&r), 2);
    assert_eq!(fb.request_count(), 0);
}

#[tokio::test]
async fn long_retry_after_moves_on_and_cools_the_deployment_down() {
    let (fa, fb, _fc, gw) = three(FALLBACK).await;
    fa.push(Behavior::new().with_status(429).with_retry_after("30"));
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.header("x-sluice-model"), Some("b"));
    assert_eq!(attempts(&r), 2);
    // While `a` cools down, requests skip it at no cost: one attempt, straight to `b`.
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.header("x-sluice-model"), Some("b"));
    assert_eq!(attempts(&r), 1);
    assert_eq!(fa.request_count(), 1);
    assert_eq!(fb.request_count(), 2);
    // A 429 is a cooldown, not a failure: the breaker stays closed.
    let d = get(&gw.url("/health/detailed")).await.unwrap().json();
    assert_eq!(d["models"][0]["breaker"], "closed");
    assert!(d["models"][0]["rate_limited_for_ms"].as_u64().unwrap() > 20_000);
}

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let extra = format!(
        "{FALLBACK}\n[routing]\nretry = {{ attempts = 1 }}\nbreaker = {{ consecutive_failures = 2, cooldown_ms = 300 }}\n"
    );
    let (fa, fb, _fc, gw) = three(&extra).await;
    fa.set_default(Behavior::new().with_status(503));
    for _ in 0..2 {
        let r = call(&gw, &chat("r"), &[]).await;
        assert_eq!((r.status, attempts(&r)), (200, 2));
    }
    // Open: `a` is skipped, costing nothing.
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(attempts(&r), 1);
    assert_eq!(r.header("x-sluice-model"), Some("b"));
    assert_eq!(fa.request_count(), 2);
    let d = get(&gw.url("/health/detailed")).await.unwrap().json();
    assert_eq!(d["models"][0]["breaker"], "open");
    let m = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(m.contains(r#"sluice_breaker_state{model="a"} 1"#), "{m}");
    assert!(
        m.contains(r#"sluice_breaker_opened_total{model="a",provider="pa"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"sluice_breaker_skips_total{model="a",provider="pa",reason="open"} 1"#),
        "{m}"
    );
    // After the cooldown one probe goes through; `a` has recovered, so it closes.
    fa.set_default(Behavior::new());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let d = get(&gw.url("/health/detailed")).await.unwrap().json();
    assert_eq!(d["models"][0]["breaker"], "half_open");
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.header("x-sluice-model"), Some("a"));
    let d = get(&gw.url("/health/detailed")).await.unwrap().json();
    assert_eq!(d["models"][0]["breaker"], "closed");
    assert_eq!(fb.request_count(), 3);
}

#[tokio::test]
async fn retries_stop_at_their_attempts() {
    let extra = r#"
[[routes]]
name = "r"
targets = ["a", "b"]
retry = { attempts = 3, backoff_ms = 1, max_backoff_ms = 5 }
"#;
    let (fa, fb, _fc, gw) = three(extra).await;
    fa.set_default(Behavior::new().with_reset());
    fb.set_default(Behavior::new().with_status(502));
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(attempts(&r), 6);
    assert_eq!(fa.request_count(), 3);
    assert_eq!(fb.request_count(), 3);
}

#[tokio::test]
async fn a_stream_is_never_retried_after_its_first_byte() {
    let (fa, fb, _fc, gw) = three(FALLBACK).await;
    fa.set_default(Behavior::new().with_cut_after_chunks(2));
    let mut s = post_stream(&gw.url("/v1/chat/completions"), chat_stream("r"), AUTH)
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("x-sluice-model"), Some("a"));
    let (events, _) = s.collect_events().await;
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    assert_eq!(fa.request_count(), 1);
    assert_eq!(fb.request_count(), 0);
}

#[tokio::test]
async fn a_slow_first_token_falls_back() {
    let extra = r#"
[[routes]]
name = "r"
targets = ["a", "b"]
first_token_timeout_ms = 200
retry = { attempts = 1 }
"#;
    let (fa, _fb, _fc, gw) = three(extra).await;
    fa.set_default(Behavior::new().with_delay_ms(3000));
    let mut s = post_stream(&gw.url("/v1/chat/completions"), chat_stream("r"), AUTH)
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("x-sluice-model"), Some("b"));
    let (events, _) = s.collect_events().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // The abandoned try was cancelled upstream.
    assert!(fa.wait_cancelled(1, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn the_route_deadline_bounds_the_whole_request() {
    let extra = r#"
[[routes]]
name = "r"
targets = ["a", "b"]
timeout_ms = 300
"#;
    let (fa, fb, _fc, gw) = three(extra).await;
    fa.set_default(Behavior::new().with_hang());
    fb.set_default(Behavior::new().with_hang());
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.status, 504);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("timeout_ms"));
}

#[tokio::test]
async fn degraded_answer_when_every_target_fails() {
    let extra = r#"
[[routes]]
name = "r"
targets = ["a", "b"]
retry = { attempts = 1 }
fallback_response = "We are busy, please retry in a minute."
"#;
    let (fa, fb, _fc, gw) = three(extra).await;
    fa.set_default(Behavior::new().with_status(500));
    fb.set_default(Behavior::new().with_reset());
    let r = call(&gw, &chat("r"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-degraded"), Some("true"));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "We are busy, please retry in a minute."
    );
    let mut s = post_stream(&gw.url("/v1/chat/completions"), chat_stream("r"), AUTH)
        .await
        .unwrap();
    assert_eq!(s.header("x-sluice-degraded"), Some("true"));
    let (events, _) = s.collect_events().await;
    assert!(events[0].contains("We are busy"));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn weighted_spreads_by_weight() {
    let extra = r#"
[[routes]]
name = "r"
strategy = "weighted"
targets = ["a", "b"]
weights = [3, 1]
"#;
    let (fa, fb, _fc, gw) = three(extra).await;
    for _ in 0..400 {
        assert_eq!(call(&gw, &chat("r"), &[]).await.status, 200);
    }
    let a = fa.request_count();
    assert_eq!(a + fb.request_count(), 400);
    assert!((260..=340).contains(&a), "a got {a} of 400");
}

#[tokio::test]
async fn cost_quality_and_priority_orders() {
    let extra = r#"
[[routes]]
name = "cheap"
strategy = "cost"
targets = ["a", "b"]
[[routes]]
name = "best"
strategy = "quality"
targets = ["b", "a"]
"#;
    let (_fa, _fb, _fc, gw) = three(extra).await;
    assert_eq!(
        call(&gw, &chat("cheap"), &[])
            .await
            .header("x-sluice-model"),
        Some("b")
    );
    assert_eq!(
        call(&gw, &chat("best"), &[]).await.header("x-sluice-model"),
        Some("a")
    );
    // Per request: the priority header overrides the strategy.
    let r = call(&gw, &chat("best"), &[("x-sluice-priority", "cost")]).await;
    assert_eq!(r.header("x-sluice-model"), Some("b"));
    let r = call(&gw, &chat("best"), &[("x-sluice-priority", "bogus")]).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn latency_prefers_the_faster_deployment() {
    let extra = r#"
[[routes]]
name = "fast"
strategy = "latency"
targets = ["a", "b"]
"#;
    let (fa, fb, _fc, gw) = three(extra).await;
    fa.set_default(Behavior::new().with_delay_ms(60));
    for _ in 0..40 {
        call(&gw, &chat("fast"), &[]).await;
    }
    // Both got measured; then the fast one takes the traffic.
    assert!(fa.request_count() >= 1);
    assert!(fb.request_count() >= 30, "b: {}", fb.request_count());
    let d = get(&gw.url("/health/detailed")).await.unwrap().json();
    assert!(d["models"][0]["latency_ewma_ms"]["total"].as_f64().unwrap() >= 50.0);
}

#[tokio::test]
async fn tier_routes_by_request_size_and_header() {
    let extra = r#"
[[routes]]
name = "auto"
strategy = "tier"
targets = ["b", "c", "a"]
"#;
    let (_fa, _fb, _fc, gw) = three(extra).await;
    let small =
        json!({"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    assert_eq!(
        call(&gw, &small, &[]).await.header("x-sluice-model"),
        Some("a")
    );
    let medium = json!({"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "x".repeat(4000)}]}).to_string();
    assert_eq!(
        call(&gw, &medium, &[]).await.header("x-sluice-model"),
        Some("c")
    );
    let large = json!({"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "x".repeat(12000)}]}).to_string();
    assert_eq!(
        call(&gw, &large, &[]).await.header("x-sluice-model"),
        Some("b")
    );
    let r = call(&gw, &small, &[("x-sluice-tier", "large")]).await;
    assert_eq!(r.header("x-sluice-model"), Some("b"));
    assert_eq!(
        call(&gw, &small, &[("x-sluice-tier", "huge")]).await.status,
        400
    );
}

const CANARY: &str = r#"
[[routes]]
name = "r"
targets = ["a"]
canary = { target = "c", stages = [50, 100], max_error_rate = 0.02, min_requests = 5, window_ms = 60000 }
"#;

#[tokio::test]
async fn canary_split_is_stable_per_key() {
    let (fa, _fb, fc, gw) = three(CANARY).await;
    let mut sides = Vec::new();
    for i in 0..200 {
        let key = format!("caller-{i}");
        let r = call(&gw, &chat("r"), &[("x-sluice-route-key", &key)]).await;
        sides.push(r.header("x-sluice-model").unwrap().to_string());
    }
    let to_c = sides.iter().filter(|s| *s == "c").count();
    assert!(
        (70..=130).contains(&to_c),
        "{to_c} of 200 to the candidate at 50%"
    );
    assert_eq!(fc.request_count(), to_c);
    assert_eq!(fa.request_count(), 200 - to_c);
    // The same caller lands on the same side every time.
    for (i, side) in sides.iter().enumerate().take(20) {
        let key = format!("caller-{i}");
        let r = call(&gw, &chat("r"), &[("x-sluice-route-key", &key)]).await;
        assert_eq!(r.header("x-sluice-model"), Some(side.as_str()));
    }
}

#[tokio::test]
async fn canary_rolls_back_on_an_error_burst_and_loses_no_request() {
    let (_fa, _fb, fc, gw) = three(CANARY).await;
    fc.set_default(Behavior::new().with_status(500));
    for i in 0..60 {
        let key = format!("k{i}");
        let r = call(&gw, &chat("r"), &[("x-sluice-route-key", &key)]).await;
        assert_eq!(
            r.status, 200,
            "a failing candidate falls back to the primary"
        );
        assert_eq!(r.header("x-sluice-model"), Some("a"));
    }
    let d = get(&gw.url("/health/detailed")).await.unwrap().json();
    let canary = &d["routes"][0]["canary"];
    assert_eq!(canary["percent"], 0.0);
    assert_eq!(canary["rollbacks"], 1);
    assert!(canary["last_rollback"]
        .as_str()
        .unwrap()
        .contains("error rate"));
    let m = get(&gw.url("/metrics")).await.unwrap().text();
    assert!(
        m.contains(r#"sluice_canary_rollbacks_total{route="r"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"sluice_canary_percent{route="r"} 0"#), "{m}");
    // Rolled back: nobody goes to the candidate any more.
    let before = fc.request_count();
    for i in 0..20 {
        call(&gw, &chat("r"), &[("x-sluice-route-key", &format!("k{i}"))]).await;
    }
    assert_eq!(fc.request_count(), before);
}

#[tokio::test]
async fn admin_api_moves_canary_stages() {
    let (_fa, _fb, _fc, gw) = three(CANARY).await;
    let url = gw.url("/admin/routes/r/canary");
    let r = post_json(&url, r#"{"action":"promote"}"#, &[])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = post_json(
        &url,
        r#"{"action":"promote"}"#,
        &[("authorization", "Bearer wrong")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    let auth = [("authorization", "Bearer sk-admin")];
    let r = post_json(&url, r#"{"action":"promote"}"#, &auth)
        .await
        .unwrap();
    assert_eq!((r.status, r.json()["percent"].as_f64()), (200, Some(100.0)));
    let r = call(&gw, &chat("r"), &[("x-sluice-route-key", "anyone")]).await;
    assert_eq!(r.header("x-sluice-model"), Some("c"));
    let r = post_json(&url, r#"{"action":"rollback"}"#, &auth)
        .await
        .unwrap();
    assert_eq!(r.json()["percent"].as_f64(), Some(0.0));
    let r = post_json(&url, r#"{"action":"sideways"}"#, &auth)
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = post_json(
        &gw.url("/admin/routes/nope/canary"),
        r#"{"action":"promote"}"#,
        &auth,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);
    let r = get(&gw.url("/admin/routes")).await.unwrap();
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn models_lists_routes_and_every_response_says_its_attempts() {
    let (_fa, _fb, _fc, gw) = three(FALLBACK).await;
    let v = sluice_testkit::TestClient::new()
        .request(
            http::Method::GET,
            &gw.url("/v1/models"),
            bytes::Bytes::new(),
            AUTH,
        )
        .await
        .unwrap()
        .json();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "r"]);
    let r = call(&gw, &chat("a"), &[]).await;
    assert_eq!((attempts(&r), r.header("x-sluice-model")), (1, Some("a")));
    let r = call(&gw, &chat("nope"), &[]).await;
    assert_eq!(attempts(&r), 0);
}
