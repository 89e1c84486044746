//! Active health checks (`[[providers]] health_check`) over real loopback HTTP: a provider
//! whose checks fail is skipped by a route before a user request reaches it, comes back when
//! they pass, checks are off without the config, a bad config is refused naming the key, and
//! a reload replaces the checker.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use serde_json::{json, Value};
use sluice_core::config::Config;
use sluice_core::env::MapEnv;
use sluice_server::live::Live;
use sluice_server::Server;
use sluice_testkit::client::{get, post_json, TestResponse};
use sluice_testkit::{Behavior, FakeUpstream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Gateways started by this test process (each gets a data directory of its own).
static GATEWAYS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A running gateway with its live state (to reload).
struct Gateway {
    addr: SocketAddr,
    live: Arc<Live>,
    _stop: oneshot::Sender<()>,
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Providers `pa` (at `a`, with `check` in its table) and `pb` (at `b`), models `a` and
/// `b` on them, and route `r` falling back from `a` to `b`; breakers cool down for 2 s.
/// `storage` is the `[storage]` table's content.
fn config(a: &FakeUpstream, b: &FakeUpstream, check: &str, storage: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
{storage}
[[providers]]
name = "pa"
type = "openai"
base_url = "{a}"
{check}
[[providers]]
name = "pb"
type = "openai"
base_url = "{b}"
[[models]]
name = "a"
provider = "pa"
upstream = "up-a"
[[models]]
name = "b"
provider = "pb"
[routing]
breaker = {{ consecutive_failures = 5, error_rate = 0.5, min_requests = 20, window_ms = 30000, cooldown_ms = 2000 }}
[[routes]]
name = "r"
strategy = "fallback"
targets = ["a", "b"]
"#,
        a = a.base_url(),
        b = b.base_url(),
    )
}

/// `[storage]` with a data directory of its own.
fn data_dir() -> String {
    let dir = std::env::temp_dir()
        .join("sluice-test-data")
        .join(
            env!("CARGO_MANIFEST_DIR")
                .trim_start_matches('/')
                .replace('/', "_"),
        )
        .join(format!(
            "health-{}-{}",
            std::process::id(),
            GATEWAYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
        .display()
        .to_string();
    format!("data_dir = \"{dir}\"")
}

fn parse(toml: &str) -> Config {
    Config::from_toml(toml, &MapEnv::default()).expect("valid test config")
}

async fn start(toml: &str) -> Gateway {
    let server = Server::bind(parse(toml)).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let live = server.live();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Gateway {
        addr,
        live,
        _stop: tx,
    }
}

async fn route(gw: &Gateway) -> TestResponse {
    let body = json!({"model": "r", "messages": [{"role": "user", "content": "hi"}]});
    post_json(&gw.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .unwrap()
}

async fn detailed(gw: &Gateway) -> Value {
    get(&gw.url("/health/detailed")).await.unwrap().json()
}

async fn metrics(gw: &Gateway) -> String {
    get(&gw.url("/metrics")).await.unwrap().text()
}

/// Waits (up to 10 s) until model `a`'s breaker reads `state` in `/health/detailed`.
async fn wait_breaker(gw: &Gateway, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = detailed(gw).await;
        if d["models"][0]["breaker"] == state {
            return d;
        }
        assert!(Instant::now() < deadline, "breaker never {state}: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the metric line starting with `series`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_provider_failing_its_checks_is_skipped_before_a_request_reaches_it() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    fa.set_recording(true);
    fa.set_default(Behavior::new().with_status(500));
    let check = "health_check = { interval_ms = 100, timeout_ms = 1000, failures = 2 }";
    let gw = start(&config(&fa, &fb, check, &data_dir())).await;

    let d = wait_breaker(&gw, "open").await;
    let hc = &d["providers"][0]["health_check"];
    assert_eq!(hc["kind"], "models");
    assert_eq!(hc["last"]["result"], "failed", "{hc}");
    assert!(hc["failed_in_a_row"].as_u64().unwrap() >= 2, "{hc}");
    assert!(
        hc["last"]["error"].as_str().unwrap().contains("500"),
        "{hc}"
    );
    assert!(hc["last"]["at_unix_ms"].as_u64().unwrap() > 0);
    assert_eq!(d["providers"][1]["health_check"], Value::Null);

    // Every user request goes straight to the fallback: one attempt, answered by `b`; past
    // the breaker's cooldown (2 s) too, when a check, not a request, is its probe.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let r = route(&gw).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-sluice-model"), Some("b"));
        assert_eq!(r.header("x-sluice-attempts"), Some("1"));
    }
    // The dead upstream saw only its checks.
    let seen = fa.take_requests();
    assert!(seen.len() >= 2, "checks reached the upstream");
    for r in &seen {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/v1/models"),
            "only checks reach the dead upstream"
        );
    }
    let m = metrics(&gw).await;
    let failed = r#"sluice_health_checks_total{provider="pa",result="failed"}"#;
    assert!(metric(&m, failed).unwrap() >= 2.0, "{m}");
    assert_eq!(
        metric(&m, r#"sluice_health_check_up{provider="pa"}"#),
        Some(0.0)
    );
    assert!(metric(&m, r#"sluice_health_check_latency_seconds{provider="pa"}"#).is_some());
    // The opening is counted as a request's would be.
    assert_eq!(
        metric(
            &m,
            r#"sluice_breaker_opened_total{model="a",provider="pa"}"#
        ),
        Some(1.0),
        "{m}"
    );

    // The upstream comes back: after the cooldown a passing check (the half-open probe)
    // closes the breaker, and the route's first choice answers again.
    fa.set_default(Behavior::new());
    let d = wait_breaker(&gw, "closed").await;
    assert_eq!(d["providers"][0]["health_check"]["last"]["result"], "ok");
    let r = route(&gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-model"), Some("a"));
    let m = metrics(&gw).await;
    assert_eq!(
        metric(&m, r#"sluice_health_check_up{provider="pa"}"#),
        Some(1.0)
    );
    assert!(
        metric(
            &m,
            r#"sluice_health_checks_total{provider="pa",result="ok"}"#
        )
        .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn checks_are_off_without_the_config() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    fa.set_recording(true);
    let gw = start(&config(&fa, &fb, "", &data_dir())).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fa.request_count(), 0, "no request without a health check");
    let d = detailed(&gw).await;
    assert_eq!(d["providers"][0]["health_check"], Value::Null);
    assert!(!metrics(&gw).await.contains("sluice_health_check"));
}

#[tokio::test]
async fn a_bad_health_check_is_refused_naming_the_key() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = data_dir();
    for (check, key) in [
        (
            "health_check = { interval_ms = 0 }",
            "providers[0].health_check.interval_ms",
        ),
        (
            "health_check = { timeout_ms = 0 }",
            "providers[0].health_check.timeout_ms",
        ),
        (
            "health_check = { failures = 0 }",
            "providers[0].health_check.failures",
        ),
        (
            "health_check = { kind = \"ping\" }",
            "providers[0].health_check.kind",
        ),
        (
            "health_check = { kind = \"chat\" }",
            "providers[0].health_check.model",
        ),
        (
            "health_check = { kind = \"models\", model = \"x\" }",
            "providers[0].health_check.model",
        ),
        ("health_check = { every_ms = 5 }", "every_ms"),
    ] {
        let e = Config::from_toml(&config(&fa, &fb, check, &dir), &MapEnv::default())
            .expect_err(check)
            .to_string();
        assert!(e.contains(key), "{check}: {e}");
    }
}

#[tokio::test]
async fn a_reload_replaces_the_checker() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    fa.set_recording(true);
    let dir = data_dir();
    let models = "health_check = { interval_ms = 100 }";
    let gw = start(&config(&fa, &fb, models, &dir)).await;
    assert!(fa.wait_requests(2, Duration::from_secs(5)).await);
    assert!(fa.take_requests().iter().all(|r| r.path == "/v1/models"));

    // A chat check instead: a one-token completion of the named model.
    let chat = "health_check = { interval_ms = 100, kind = \"chat\", model = \"up-a\" }";
    gw.live
        .reload(parse(&config(&fa, &fb, chat, &dir)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fa.take_requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = fa.take_requests();
    assert!(!seen.is_empty(), "the new checker runs");
    for r in &seen {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["model"], "up-a");
        assert_eq!(body["max_tokens"], 1);
    }
    let d = detailed(&gw).await;
    assert_eq!(d["providers"][0]["health_check"]["kind"], "chat");
    assert_eq!(d["providers"][0]["health_check"]["last"]["result"], "ok");

    // No check any more: the checker stops.
    gw.live.reload(parse(&config(&fa, &fb, "", &dir))).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fa.take_requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fa.take_requests().len(), 0, "the old checker stopped");
    assert_eq!(
        detailed(&gw).await["providers"][0]["health_check"],
        Value::Null
    );
}

#[tokio::test]
async fn each_provider_type_checks_its_own_model_list() {
    let fake = FakeUpstream::start().await;
    fake.set_recording(true);
    let root = format!("http://{}", fake.addr());
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
{storage}
[[providers]]
name = "anth"
type = "anthropic"
base_url = "{root}/anthropic"
api_key = "sk-ant"
health_check = {{ interval_ms = 60000 }}
[[providers]]
name = "gem"
type = "gemini"
base_url = "{root}/gemini"
api_key = "g-key"
health_check = {{ interval_ms = 60000 }}
[[providers]]
name = "oll"
type = "ollama"
base_url = "{root}/ollama"
health_check = {{ interval_ms = 60000 }}
[[providers]]
name = "oai"
type = "openai"
base_url = "{root}/openai/v1"
api_key = "sk-oai"
health_check = {{ interval_ms = 60000 }}
[[models]]
name = "a"
provider = "anth"
"#,
        storage = data_dir(),
    );
    let _gw = start(&toml).await;
    assert!(fake.wait_requests(4, Duration::from_secs(5)).await);
    let mut seen: Vec<_> = fake
        .take_requests()
        .into_iter()
        .map(|r| {
            let h = |n: &str| {
                r.headers
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            (
                r.method.to_string(),
                r.path.clone(),
                h("authorization"),
                h("x-api-key"),
                h("anthropic-version"),
                h("x-goog-api-key"),
            )
        })
        .collect();
    seen.sort();
    let row = |path: &str, bearer: &str, api_key: &str, version: &str, goog: &str| {
        (
            "GET".to_string(),
            path.to_string(),
            bearer.to_string(),
            api_key.to_string(),
            version.to_string(),
            goog.to_string(),
        )
    };
    assert_eq!(
        seen,
        [
            row("/anthropic/v1/models", "", "sk-ant", "2023-06-01", ""),
            row("/gemini/v1beta/models", "", "", "", "g-key"),
            row("/ollama/api/tags", "", "", "", ""),
            row("/openai/v1/models", "Bearer sk-oai", "", "", ""),
        ]
    );
}

/// `[storage]` of a fleet on one Redis, under a prefix of its own.
fn fleet_storage() -> String {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    format!(
        "{}\nredis_url = \"{url}\"\nredis_prefix = \"sluice-hc-{}-{}:\"",
        data_dir(),
        std::process::id(),
        sluice_store::unix_now_ms()
    )
}

#[tokio::test]
async fn one_replicas_checks_steer_the_fleet_on_redis() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    fa.set_recording(true);
    fa.set_default(Behavior::new().with_status(500));
    let storage = fleet_storage();
    let check = "health_check = { interval_ms = 100, failures = 1 }";
    // Only the first replica checks; the second learns from it through Redis. A cooldown
    // of 5 s: with 2 s a loaded machine could reach the routes below after the breaker
    // half-opened, and a request of the other replica's then took the fleet's probe.
    let cooldown = |c: String| c.replace("cooldown_ms = 2000", "cooldown_ms = 5000");
    let checking = start(&cooldown(config(&fa, &fb, check, &storage))).await;
    let other = start(&cooldown(config(&fa, &fb, "", &storage))).await;
    wait_breaker(&checking, "open").await;
    wait_breaker(&other, "open").await;
    for _ in 0..3 {
        let r = route(&other).await;
        assert_eq!(r.header("x-sluice-model"), Some("b"), "{}", r.text());
        assert_eq!(r.header("x-sluice-attempts"), Some("1"));
    }
    assert!(
        fa.take_requests().iter().all(|r| r.path == "/v1/models"),
        "the other replica sent the dead upstream nothing"
    );
    // Back: the checking replica's check is the fleet's probe; its success closes the
    // breaker on the other replica too.
    fa.set_default(Behavior::new());
    wait_breaker(&checking, "closed").await;
    wait_breaker(&other, "closed").await;
    let r = route(&other).await;
    assert_eq!(r.header("x-sluice-model"), Some("a"), "{}", r.text());
}

/// A breaker that requests open between two checks is probed by a check when its own
/// cooldown ends, not a whole interval later (requests never probe a checked provider).
#[tokio::test]
async fn a_breaker_opened_between_checks_is_probed_when_its_cooldown_ends() {
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let check = "health_check = { interval_ms = 20000, timeout_ms = 1000, failures = 2 }";
    let toml = config(&fa, &fb, check, &data_dir()).replace(
        "consecutive_failures = 5, error_rate = 0.5, min_requests = 20, window_ms = 30000, cooldown_ms = 2000",
        "consecutive_failures = 1, error_rate = 0.5, min_requests = 20, window_ms = 30000, cooldown_ms = 500",
    );
    let gw = start(&toml).await;
    // Let the first check pass, then open `a`'s breaker with one failed request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failing = json!({"model": "r", "messages": [{"role": "user", "content": "hi"}],
        "x_fake": {"status": 500}});
    let _ = post_json(&gw.url("/v1/chat/completions"), failing.to_string(), &[]).await;
    wait_breaker(&gw, "open").await;
    let opened = Instant::now();
    // The next check is 20 s away; the cooldown is 0.5 s: `a` serves again well before.
    loop {
        // (`b`'s breaker opened too, with the same failed request: 503 until it probes.)
        let r = route(&gw).await;
        if r.status == 200 && r.header("x-sluice-model") == Some("a") {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "`a` still skipped {:?} after its breaker opened",
            opened.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
