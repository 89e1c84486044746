//! The pipeline in process: a request in, a response out, no socket between the client and
//! the gateway. Each test pins one stage's decision (routing, auth, the body limit, the
//! view, model resolution, limits, the walk's degraded answer, the guard's accounting)
//! by calling the router the server calls for every request.
//!
//! The one upstream these tests name is a closed port (127.0.0.1:9): connecting to it fails
//! at once, which is all the walk needs to reach its fallback.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use sluice_core::config::Config;
use sluice_core::env::MapEnv;
use sluice_server::AppState;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

const MASTER: &str = "sk-master-0123456789abcdef";

/// The state of a gateway configured with `extra` after a provider `fake` (a closed port),
/// a model `m` on it and a route `r` with a static fallback.
fn gateway(extra_server: &str, extra: &str) -> Arc<AppState> {
    gateway_with(extra_server, "", extra)
}

/// [`gateway`] with `extra_storage` in `[storage]`.
fn gateway_with(extra_server: &str, extra_storage: &str, extra: &str) -> Arc<AppState> {
    let toml = config_text(&data_dir(), extra_server, extra_storage, extra);
    Arc::new(AppState::new(parse(&toml), 1).expect("state"))
}

/// A fresh data directory.
fn data_dir() -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-pipeline-{}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

fn parse(toml: &str) -> Config {
    Config::from_toml(toml, &MapEnv::default()).expect("valid test config")
}

/// The config of [`gateway_with`], in `dir`.
fn config_text(
    dir: &std::path::Path,
    extra_server: &str,
    extra_storage: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}
[storage]
data_dir = "{dir}"
{extra_storage}
[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-upstream"
[[models]]
name = "m"
provider = "fake"
price = {{ input = 1.0, output = 2.0 }}
[[routes]]
name = "r"
targets = ["m"]
fallback_response = "busy, try later"
{extra}
"#,
        dir = dir.display()
    )
}

/// A request with a whole body and an optional bearer key.
fn request(method: Method, path: &str, key: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

async fn send(state: &Arc<AppState>, req: Request<Full<Bytes>>) -> (Response<()>, Value) {
    let response = sluice_server::route(Arc::clone(state), req)
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (Response::from_parts(parts, ()), v)
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused_in_openai_shape() {
    let state = gateway("", "");
    let (r, v) = send(&state, request(Method::POST, "/v1/nothing", None, "{}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(v["error"]["message"].is_string(), "{v}");
    let (r, _) = send(
        &state,
        request(Method::GET, "/v1/chat/completions", None, ""),
    )
    .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
}

#[tokio::test]
async fn a_missing_key_is_refused_before_the_body_is_read() {
    let state = gateway(&format!("master_key = \"{MASTER}\""), "");
    // Not JSON at all: the 401 comes first, so the body was never looked at.
    let (r, v) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", None, "not json"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    let (r, v) = send(
        &state,
        request(
            Method::POST,
            "/v1/messages",
            Some("sk-wrong-key-00000000000"),
            "{}",
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["type"], "error", "Anthropic's shape on /v1/messages: {v}");
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let state = gateway("max_body_bytes = 64", "");
    let big = chat(&"m".repeat(100));
    let (r, v) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", None, &big),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let small = r#"{"model":"r","messages":[]}"#;
    let (r, _) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", None, small),
    )
    .await;
    assert_ne!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "under the limit");
}

#[tokio::test]
async fn the_view_refuses_bad_bodies_with_the_parameter_named() {
    let state = gateway("", "");
    let (r, v) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", None, "{not json"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let (r, v) = send(
        &state,
        request(
            Method::POST,
            "/v1/chat/completions",
            None,
            r#"{"messages":[]}"#,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "model", "{v}");
}

#[tokio::test]
async fn an_unknown_model_is_404_and_counted_unresolved() {
    let state = gateway("", "");
    let (r, v) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", None, &chat("nope")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    assert_eq!(state.metrics.in_flight.load(Relaxed), 0);
}

#[tokio::test]
async fn a_route_whose_targets_all_fail_answers_its_fallback() {
    let state = gateway("", "");
    let (r, v) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", None, &chat("r")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{v}");
    assert_eq!(r.headers()["x-sluice-degraded"], "true");
    assert_eq!(r.headers()["x-sluice-route"], "r");
    assert_eq!(v["choices"][0]["message"]["content"], "busy, try later");
    // The model alone has no fallback: the walk ends with the upstream's error.
    let (r, v) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", None, &chat("m")),
    )
    .await;
    assert!(r.status().is_server_error(), "{}: {v}", r.status());
    assert!(r.headers().contains_key("x-sluice-attempts"));
    assert_eq!(state.metrics.in_flight.load(Relaxed), 0);
}

#[tokio::test]
async fn a_keys_rate_limit_refuses_the_next_request_with_a_retry_after() {
    let state = gateway(&format!("master_key = \"{MASTER}\""), "");
    let spec = json!({"name": "t", "key": "sk-tenant-0123456789abcd", "rpm": 1}).to_string();
    let (r, v) = send(
        &state,
        request(Method::POST, "/admin/keys", Some(MASTER), &spec),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{v}");
    let key = Some("sk-tenant-0123456789abcd");
    let (r, _) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", key, &chat("r")),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the first request passes the limit"
    );
    let (r, v) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", key, &chat("r")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{v}");
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&after), "retry-after {after}");
}

#[tokio::test]
async fn the_request_id_is_kept_or_made() {
    let state = gateway("", "");
    let mut req = request(Method::POST, "/v1/chat/completions", None, &chat("r"));
    req.headers_mut()
        .insert("x-request-id", "req-abc".parse().unwrap());
    let (r, _) = send(&state, req).await;
    assert_eq!(r.headers()["x-request-id"], "req-abc");
    let (r, _) = send(
        &state,
        request(Method::POST, "/v1/chat/completions", None, &chat("r")),
    )
    .await;
    assert!(!r.headers()["x-request-id"].is_empty());
}

#[tokio::test]
async fn a_request_dropped_before_its_answer_ends_once_as_a_disconnect() {
    let state = gateway("", "");
    // A body that never comes: the pipeline waits on it, then the client leaves (the
    // timeout drops the request's future, as hyper does when a connection closes).
    let req = Request::post("/v1/chat/completions").body(Hanging).unwrap();
    let serving = sluice_server::route(Arc::clone(&state), req);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(50), serving).await;
    assert!(waited.is_err(), "the request waits for its body");
    assert_eq!(state.metrics.in_flight.load(Relaxed), 0);
    assert_eq!(state.metrics.client_disconnects.load(Relaxed), 1);
}

/// A request body that never sends anything.
struct Hanging;

impl Body for Hanging {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn readiness_asks_each_store_the_config_uses() {
    let state = gateway("", "");
    let (r, v) = send(&state, request(Method::GET, "/health/ready", None, "")).await;
    assert_eq!(r.status(), StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(
        v["checks"]["ledger"]["status"], "ok",
        "the SQLite spend log: {v}"
    );
    assert_eq!(v["checks"]["redis_limiter"]["status"], "off", "{v}");
    let (r, _) = send(&state, request(Method::POST, "/health/ready", None, "")).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn readiness_is_degraded_while_the_redis_limiter_is_unreachable() {
    // Nothing listens on port 1: limits fall back to this process, which still serves.
    let state = gateway_with("", "redis_url = \"redis://127.0.0.1:1\"", "");
    let (r, v) = send(&state, request(Method::GET, "/health/ready", None, "")).await;
    assert_eq!(r.status(), StatusCode::OK, "{v}");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["checks"]["redis_limiter"]["status"], "failed", "{v}");
    assert!(v["checks"]["redis_limiter"]["error"].is_string(), "{v}");
}

/// `[storage]` of a fleet on one Redis, under a prefix of its own.
fn fleet_storage() -> String {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    format!(
        "redis_url = \"{url}\"\nredis_prefix = \"sluice-test-{}-{}:\"",
        std::process::id(),
        sluice_store::unix_now_ms()
    )
}

/// A replica of the fleet on `storage`, with route `c` rolling out `m2`.
fn replica(storage: &str) -> Arc<AppState> {
    let extra = r#"
[[models]]
name = "m2"
provider = "fake"
[[routes]]
name = "c"
targets = ["m", "m2"]
canary = { target = "m2", stages = [10, 50, 100] }
"#;
    gateway_with(&format!("master_key = \"{MASTER}\""), storage, extra)
}

async fn canary_of(state: &Arc<AppState>) -> Value {
    let (_, v) = send(
        state,
        request(Method::GET, "/admin/routes", Some(MASTER), ""),
    )
    .await;
    let routes = v["routes"].as_array().unwrap().clone();
    let c = routes.iter().find(|r| r["name"] == "c").unwrap();
    c["canary"].clone()
}

#[tokio::test]
async fn a_canary_rolled_back_on_one_replica_is_rolled_back_on_the_others() {
    let storage = fleet_storage();
    let (a, b) = (replica(&storage), replica(&storage));
    a.sync_routing().await;
    b.sync_routing().await;
    assert_eq!(canary_of(&b).await["percent"], 10.0);
    let action = r#"{"action":"rollback"}"#;
    let (r, v) = send(
        &a,
        request(Method::POST, "/admin/routes/c/canary", Some(MASTER), action),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{v}");
    // One sync round on each (the server runs one a second): a offers, b takes.
    a.sync_routing().await;
    b.sync_routing().await;
    let on_b = canary_of(&b).await;
    assert_eq!(on_b["percent"], 0.0, "{on_b}");
    assert_eq!(
        on_b["last_rollback"], "rolled back on another replica",
        "{on_b}"
    );
    // A replica started afterwards takes the rollout where the fleet left it, not at its
    // first stage.
    let late = replica(&storage);
    assert_eq!(canary_of(&late).await["percent"], 10.0);
    late.sync_routing().await;
    assert_eq!(canary_of(&late).await["percent"], 0.0);
    // An advance anywhere brings the rollout back everywhere.
    let action = r#"{"action":"advance"}"#;
    send(
        &b,
        request(Method::POST, "/admin/routes/c/canary", Some(MASTER), action),
    )
    .await;
    b.sync_routing().await;
    a.sync_routing().await;
    assert_eq!(canary_of(&a).await["percent"], 10.0);
    let shared = |s: &AppState| {
        let r = s.shared_routing.as_ref().unwrap();
        (r.adopted.load(Relaxed), r.errors.load(Relaxed))
    };
    assert_eq!(shared(&b), (1, 0), "b took a's rollback");
    assert_eq!(shared(&a), (1, 0), "a took b's advance");
}

#[tokio::test]
async fn a_rate_limit_cooldown_on_one_replica_is_honoured_by_the_others() {
    let storage = fleet_storage();
    let (a, b) = (replica(&storage), replica(&storage));
    let now = std::time::Instant::now();
    // As if `m`'s upstream had answered a's request with 429 and `Retry-After: 30`.
    a.deployments[0]
        .breaker
        .cool_down(now + std::time::Duration::from_secs(30));
    assert_eq!(b.deployments[0].breaker.rate_limited_until(now), None);
    a.sync_routing().await;
    b.sync_routing().await;
    let until = b.deployments[0].breaker.rate_limited_until(now);
    let left = until.expect("b honours a's cooldown") - now;
    assert!(left > std::time::Duration::from_secs(28), "{left:?}");
    assert_eq!(
        b.deployments[1].breaker.rate_limited_until(now),
        None,
        "m2 is not cooling down"
    );
    // b skips `m` now without trying it: every deployment that could answer is cooling down.
    let asked = request(
        Method::POST,
        "/v1/chat/completions",
        Some(MASTER),
        &chat("m"),
    );
    let (r, _) = send(&b, asked).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_reload_swaps_the_config_and_keeps_the_live_state() {
    let dir = data_dir();
    let server = format!("master_key = \"{MASTER}\"");
    let text = |extra: &str| config_text(&dir, &server, "", extra);
    let first = Arc::new(AppState::new(parse(&text("")), 1).expect("state"));
    let live = Arc::new(sluice_server::live::Live::new(Arc::clone(&first)));
    let now = std::time::Instant::now();
    first.deployments[0]
        .breaker
        .cool_down(now + std::time::Duration::from_secs(30));
    let added = "[[models]]\nname = \"m3\"\nprovider = \"fake\"\n";
    let changes = live.reload(parse(&text(added))).expect("reloaded");
    assert_eq!(changes.added, ["m3"]);
    let second = live.get();
    assert!(
        !Arc::ptr_eq(&first, &second),
        "new requests get the new state"
    );
    assert!(
        second.deployments[0]
            .breaker
            .rate_limited_until(now)
            .is_some(),
        "m's cooldown kept"
    );
    let (_, v) = send(
        &second,
        request(Method::GET, "/v1/models", Some(MASTER), ""),
    )
    .await;
    assert!(v.to_string().contains("\"m3\""), "{v}");
    // What only a restart can change is refused, and the current state keeps serving.
    let elsewhere = config_text(&data_dir(), &server, "", added);
    let refused = live
        .reload(parse(&elsewhere))
        .expect_err("a new data_dir takes a restart");
    assert!(refused.to_string().contains("restart"), "{refused}");
    assert!(Arc::ptr_eq(&second, &live.get()));
    // So is another log format (the subscriber is set once, at start).
    let json_logs = text(added).replacen("[server]", "[server]\nlog_format = \"json\"", 1);
    let refused = live
        .reload(parse(&json_logs))
        .expect_err("a new log format takes a restart");
    assert!(refused.to_string().contains("log_format"), "{refused}");
    // The admin endpoint reloads through the hook the process set (here: the config with m3
    // removed again).
    let hook_live = Arc::clone(&live);
    let again = text("");
    let hook = move || hook_live.reload(parse(&again)).map_err(|e| e.to_string());
    let hook = sluice_server::state::reload::ReloadHook(Box::new(hook));
    assert!(second.reload_hook.set(hook).is_ok(), "set once");
    let (r, v) = send(
        &second,
        request(Method::POST, "/admin/config/reload", Some(MASTER), ""),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{v}");
    assert_eq!(v["removed"], json!(["m3"]), "{v}");
    let (r, _) = send(
        &live.get(),
        request(Method::POST, "/admin/config/reload", None, ""),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the admin key is needed"
    );
    assert_eq!(first.reloads.ok.load(Relaxed), 2);
    assert_eq!(first.reloads.failed.load(Relaxed), 2);
}

#[tokio::test]
async fn a_breaker_opened_on_one_replica_opens_on_the_others() {
    let storage = fleet_storage();
    let (a, b) = (replica(&storage), replica(&storage));
    // `m`'s upstream is a closed port: requests on a fail until its breaker opens.
    for _ in 0..10 {
        let asked = request(
            Method::POST,
            "/v1/chat/completions",
            Some(MASTER),
            &chat("m"),
        );
        send(&a, asked).await;
    }
    let now = std::time::Instant::now();
    assert!(
        a.deployments[0].breaker.open_until(now).is_some(),
        "a's breaker opened"
    );
    assert_eq!(b.deployments[0].breaker.open_until(now), None);
    a.sync_routing().await;
    b.sync_routing().await;
    assert!(
        b.deployments[0].breaker.open_until(now).is_some(),
        "b skips the dead upstream before a request of its own finds it"
    );
    assert_eq!(b.deployments[1].breaker.open_until(now), None, "m2 is fine");
}

/// A replica of a fleet on `storage` whose `m` is at `upstream`, with a breaker that opens
/// at the first failure and half-opens 300 ms later (route `r` answers its fallback while
/// `m` is skipped).
fn probing_replica(storage: &str, upstream: &str) -> Arc<AppState> {
    let breaker = "[routing]\nretry = { attempts = 1 }\n\
        breaker = { consecutive_failures = 1, cooldown_ms = 300 }\n";
    let server = format!("master_key = \"{MASTER}\"");
    let text = config_text(&data_dir(), &server, storage, breaker)
        .replace("http://127.0.0.1:9/v1", upstream);
    Arc::new(AppState::new(parse(&text), 1).expect("state"))
}

async fn ask_r(state: &Arc<AppState>) -> (StatusCode, bool) {
    let asked = request(
        Method::POST,
        "/v1/chat/completions",
        Some(MASTER),
        &chat("r"),
    );
    let (r, _) = send(state, asked).await;
    (r.status(), r.headers().contains_key("x-sluice-degraded"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_breaker_sends_one_probe_for_the_whole_fleet() {
    use sluice_core::breaker::BreakerState;
    use sluice_testkit::{Behavior, FakeUpstream};
    use std::time::{Duration, Instant};
    let fake = FakeUpstream::start().await;
    let storage = fleet_storage();
    let a = probing_replica(&storage, &fake.base_url());
    let b = probing_replica(&storage, &fake.base_url());
    fake.set_default(Behavior::new().with_status(500));
    assert_eq!(ask_r(&a).await, (StatusCode::OK, true), "a's failure opens");
    a.sync_routing().await;
    b.sync_routing().await;
    assert!(b.deployments[0]
        .breaker
        .open_until(Instant::now())
        .is_some());
    tokio::time::sleep(Duration::from_millis(350)).await;
    for s in [&a, &b] {
        let state = s.deployments[0].breaker.state(Instant::now());
        assert_eq!(state, BreakerState::HalfOpen);
    }
    // The upstream is back, slowly: a's request is the fleet's probe, and while it is out b
    // sends none of its own (its route answers its fallback without asking `m`).
    fake.set_default(Behavior::new().with_delay_ms(400));
    let before = fake.request_count();
    let probing = Arc::clone(&a);
    let probe = tokio::spawn(async move { ask_r(&probing).await });
    assert!(fake.wait_requests(before + 1, Duration::from_secs(2)).await);
    assert_eq!(ask_r(&b).await, (StatusCode::OK, true), "b skips `m`");
    assert_eq!(ask_r(&b).await, (StatusCode::OK, true), "b skips `m`");
    assert_eq!(probe.await.unwrap(), (StatusCode::OK, false), "a's probe");
    assert_eq!(fake.request_count(), before + 1, "one probe for the fleet");
    // Its success closes the breaker on b too (its next round or its next ask).
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.deployments[0].breaker.state(Instant::now()) != BreakerState::Closed {
        assert!(Instant::now() < deadline, "b's breaker is still not closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.sync_routing().await;
    }
    fake.set_default(Behavior::new());
    assert_eq!(ask_r(&b).await, (StatusCode::OK, false));
    let adopted = b.shared_routing.as_ref().unwrap().adopted.load(Relaxed);
    assert!(
        adopted >= 2,
        "b took a's opening and a's closing: {adopted}"
    );
    assert_eq!(b.shared_routing.as_ref().unwrap().errors.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_each_replica_probes_on_its_own() {
    use sluice_testkit::{Behavior, FakeUpstream};
    use std::time::Duration;
    let fake = FakeUpstream::start().await;
    let a = probing_replica("redis_url = \"redis://127.0.0.1:1\"", &fake.base_url());
    fake.set_default(Behavior::new().with_status(500));
    assert_eq!(ask_r(&a).await, (StatusCode::OK, true));
    tokio::time::sleep(Duration::from_millis(350)).await;
    fake.set_default(Behavior::new());
    assert_eq!(ask_r(&a).await, (StatusCode::OK, false), "a probes alone");
    assert!(a.shared_routing.as_ref().unwrap().errors.load(Relaxed) >= 1);
}

#[tokio::test]
async fn without_redis_a_canarys_stage_and_rollback_outlive_a_restart() {
    let dir = data_dir();
    let extra = r#"
[[models]]
name = "m2"
provider = "fake"
[[routes]]
name = "c"
targets = ["m", "m2"]
canary = { target = "m2", stages = [10, 50, 100] }
"#;
    let text = config_text(&dir, &format!("master_key = \"{MASTER}\""), "", extra);
    let start = || Arc::new(AppState::new(parse(&text), 1).expect("state"));
    let act = |state: &Arc<AppState>, action: &str| {
        let body = format!(r#"{{"action":"{action}"}}"#);
        let req = request(Method::POST, "/admin/routes/c/canary", Some(MASTER), &body);
        let state = Arc::clone(state);
        async move {
            let (r, v) = send(&state, req).await;
            assert_eq!(r.status(), StatusCode::OK, "{v}");
        }
    };
    let first = start();
    assert_eq!(canary_of(&first).await["percent"], 10.0);
    act(&first, "advance").await;
    // The round the server runs every second and at shutdown.
    first.sync_routing().await;
    drop(first);
    // Restarted: the rollout resumes at its stage before any round of its own.
    let second = start();
    assert_eq!(canary_of(&second).await["percent"], 50.0);
    act(&second, "rollback").await;
    second.sync_routing().await;
    drop(second);
    let third = start();
    let canary = canary_of(&third).await;
    assert_eq!(canary["percent"], 0.0, "{canary}");
    assert!(dir.join("routing.sqlite").exists());
    // An advance after the rollback starts the rollout again, and that is kept too.
    act(&third, "advance").await;
    third.sync_routing().await;
    assert_eq!(canary_of(&start()).await["percent"], 10.0);
}
