//! OpenTelemetry traces over OTLP/HTTP, received by a real OTLP decoder:
//! `tests/python/otlp_receiver.py` parses each export with opentelemetry-proto's generated
//! classes (the `opentelemetry-proto` package, installed by `./test.sh`) and hands the
//! spans back as JSON. Without the package the tests are skipped, unless
//! `SLUICE_REQUIRE_PYTHON_SDK=1`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::script::{importable, python};
use common::{config_for, start_with, Gateway};
use serde_json::{json, Value};
use sluice_testkit::client::{post_json, TestClient};
use sluice_testkit::responses::{COMPLETION_TOKENS, PROMPT_TOKENS};
use sluice_testkit::{Behavior, FakeUpstream};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otlp_receiver.py");

/// The client's trace context.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The receiver process, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts the receiver, or `None` (the test skipped) without opentelemetry-proto.
    fn start() -> Option<Self> {
        let python = python();
        if let Err(why) = importable(&python, "opentelemetry.proto.collector.trace.v1") {
            assert!(
                std::env::var("SLUICE_REQUIRE_PYTHON_SDK").as_deref() != Ok("1"),
                "opentelemetry-proto is required (SLUICE_REQUIRE_PYTHON_SDK=1): {why}; run ./test.sh"
            );
            eprintln!("SKIPPED: {why} (run ./test.sh, which installs opentelemetry-proto)");
            return None;
        }
        let mut child = Command::new(&python)
            .arg(RECEIVER)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
        Some(Self { child, port })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spans(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/spans", self.port);
        let r = TestClient::new().get(&url).await.unwrap();
        serde_json::from_slice::<Vec<Value>>(&r.body).unwrap()
    }

    /// The spans of `trace`, once there are `n` of them (10 s at most).
    async fn trace(&self, trace: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Value> = self
                .spans()
                .await
                .into_iter()
                .filter(|s| s["trace_id"] == trace)
                .collect();
            if spans.len() >= n || Instant::now() > deadline {
                assert_eq!(spans.len(), n, "spans of {trace}: {spans:#?}");
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn observability(endpoint: &str, extra: &str) -> String {
    format!(
        "[observability]\notlp_endpoint = \"{endpoint}\"\notlp_flush_interval_ms = 50\n{extra}\n"
    )
}

async fn traced_gateway(receiver: &Receiver, extra: &str) -> (FakeUpstream, Gateway) {
    let fake = FakeUpstream::start().await;
    let config = format!(
        "{}\n{}",
        config_for(&fake.base_url(), ""),
        observability(&receiver.endpoint(), extra)
    );
    (fake, start_with(&config).await)
}

/// The span's parent's id, its attribute `key`.
fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// `traceparent`'s trace id and parent span id.
fn parts(traceparent: &str) -> (String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent}");
    assert_eq!(p[0], "00");
    (p[1].to_string(), p[2].to_string())
}

#[tokio::test]
async fn a_retried_request_is_one_server_span_with_two_attempts_in_the_clients_trace() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let (fake, gw) = traced_gateway(&receiver, "").await;
    fake.push(Behavior::new().with_status(503));
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        common::CHAT,
        &[("traceparent", &traceparent), ("tracestate", "vendor=x")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-attempts"), Some("2"));

    let spans = receiver.trace(TRACE_ID, 3).await;
    let server: Vec<&Value> = spans.iter().filter(|s| s["kind"] == "server").collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let request = server[0];
    assert_eq!(request["name"], "chat m");
    assert_eq!(request["parent_span_id"], CLIENT_SPAN);
    assert_eq!(request["trace_state"], "vendor=x");
    // Sampled, with a remote parent.
    assert_eq!(request["flags"], 0x301);
    assert_eq!(request["resource"]["service.name"], "sluice");
    assert_eq!(attr(request, "gen_ai.operation.name"), "chat");
    assert_eq!(attr(request, "gen_ai.request.model"), "m");
    assert_eq!(attr(request, "gen_ai.response.model"), "upstream-m");
    assert_eq!(attr(request, "gen_ai.provider.name"), "openai");
    assert_eq!(attr(request, "sluice.provider"), "fake");
    assert_eq!(attr(request, "gen_ai.usage.input_tokens"), PROMPT_TOKENS);
    assert_eq!(
        attr(request, "gen_ai.usage.output_tokens"),
        COMPLETION_TOKENS
    );
    assert_eq!(attr(request, "http.response.status_code"), 200);
    assert_eq!(attr(request, "sluice.attempts"), 2);
    // Asked for a model, not a route.
    assert!(attr(request, "sluice.route").is_null());
    assert_eq!(attr(request, "sluice.cache.status"), "bypass");
    assert!(attr(request, "sluice.cost_usd").as_f64().unwrap() > 0.0);
    assert_eq!(request["status"]["code"], 0);
    let events: Vec<&str> = request["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["sluice.limits"]);
    assert_eq!(
        request["events"][0]["attributes"]["sluice.limits.outcome"],
        "admitted"
    );

    let mut attempts: Vec<&Value> = spans.iter().filter(|s| s["kind"] == "client").collect();
    attempts.sort_by_key(|s| attr(s, "sluice.attempt").as_u64());
    assert_eq!(attempts.len(), 2);
    for (n, a) in attempts.iter().enumerate() {
        assert_eq!(a["parent_span_id"], request["span_id"]);
        assert_eq!(a["name"], "chat upstream-m");
        assert_eq!(attr(a, "sluice.attempt"), n as u64 + 1);
        assert_eq!(attr(a, "gen_ai.request.model"), "upstream-m");
        assert_eq!(attr(a, "gen_ai.provider.name"), "openai");
        assert!(a["start"].as_u64() >= request["start"].as_u64());
        assert!(a["end"].as_u64() <= request["end"].as_u64());
    }
    assert_eq!(attr(attempts[0], "http.response.status_code"), 503);
    assert_eq!(attr(attempts[0], "error.type"), "upstream_5xx");
    assert_eq!(attempts[0]["status"]["code"], 2);
    assert_eq!(attr(attempts[1], "http.response.status_code"), 200);
    assert_eq!(attempts[1]["status"]["code"], 0);

    // Each upstream request carried the trace, its parent the try's span.
    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    for (req, attempt) in seen.iter().zip(&attempts) {
        let (trace, parent) = parts(req.header("traceparent").unwrap());
        assert_eq!(trace, TRACE_ID);
        assert_eq!(parent, attempt["span_id"].as_str().unwrap());
        assert_eq!(req.header("tracestate"), Some("vendor=x"));
    }

    let metrics = TestClient::new().get(&gw.url("/metrics")).await.unwrap();
    assert!(
        metrics
            .text()
            .contains("sluice_trace_spans_dropped_total{reason=\"queue_full\"} 0"),
        "{}",
        metrics.text()
    );
}

#[tokio::test]
async fn a_request_without_traceparent_starts_a_trace_and_a_stream_ends_its_spans_at_its_end() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let (fake, gw) = traced_gateway(&receiver, "").await;
    // A malformed traceparent is ignored: a trace of sluice's own.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        common::CHAT_STREAM,
        &[("traceparent", "00-xyz-01")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let sent = fake.last_request().unwrap();
    let (trace, parent) = parts(sent.header("traceparent").unwrap());
    assert_ne!(trace, "0".repeat(32));
    let spans = receiver.trace(&trace, 2).await;
    let request = spans.iter().find(|s| s["kind"] == "server").unwrap();
    let attempt = spans.iter().find(|s| s["kind"] == "client").unwrap();
    assert_eq!(request["parent_span_id"], "");
    assert_eq!(request["flags"], 0x101);
    assert_eq!(attempt["span_id"], parent.as_str());
    assert_eq!(attempt["parent_span_id"], request["span_id"]);
    assert!(
        attr(request, "gen_ai.usage.output_tokens")
            .as_u64()
            .unwrap()
            > 0
    );
    // The streamed try ends with the stream.
    assert_eq!(attempt["end"], request["end"]);

    // Embeddings: their own operation name.
    let r = post_json(
        &gw.url("/v1/embeddings"),
        r#"{"model":"emb","input":"hi"}"#,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (trace, _) = parts(fake.last_request().unwrap().header("traceparent").unwrap());
    let spans = receiver.trace(&trace, 2).await;
    let request = spans.iter().find(|s| s["kind"] == "server").unwrap();
    assert_eq!(request["name"], "embeddings emb");
    assert_eq!(attr(request, "gen_ai.operation.name"), "embeddings");

    // A request refused before any try: a server span with its error, no attempt.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#,
        &[("traceparent", &format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);
    let spans = receiver.trace(TRACE_ID, 1).await;
    assert_eq!(attr(&spans[0], "http.response.status_code"), 404);
    assert_eq!(attr(&spans[0], "error.type"), "404");
    assert_eq!(spans[0]["name"], "chat");
}

#[tokio::test]
async fn cache_decisions_and_keys_show_on_the_request_span() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "sluice-traces-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = FakeUpstream::start().await;
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
master_key = "sk-master"
[storage]
data_dir = "{dir}"
[cache]
enabled = true
nondeterministic = true
[[providers]]
name = "fake"
type = "anthropic"
base_url = "http://{addr}"
api_key = "sk-upstream"
[[models]]
name = "m"
provider = "fake"
upstream = "claude-x"
{obs}
"#,
        dir = dir.display(),
        addr = fake.addr(),
        obs = observability(&receiver.endpoint(), ""),
    );
    let gw = start_with(&config).await;
    let r = TestClient::new()
        .request(
            http::Method::POST,
            &gw.url("/admin/keys"),
            json!({"name": "team-a"}).to_string().into(),
            &[("authorization", "Bearer sk-master")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    let auth = format!("Bearer {key}");
    for (n, trace) in ["1", "2"].iter().enumerate() {
        let traceparent = format!("00-{}-{CLIENT_SPAN}-01", trace.repeat(32));
        let r = post_json(
            &gw.url("/v1/chat/completions"),
            common::CHAT,
            &[("authorization", &auth), ("traceparent", &traceparent)],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let spans = receiver.trace(&trace.repeat(32), 2 - n).await;
        let request = spans.iter().find(|s| s["kind"] == "server").unwrap();
        assert_eq!(attr(request, "sluice.key.name"), "team-a");
        assert_eq!(attr(request, "gen_ai.provider.name"), "anthropic");
        let cache = request["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "sluice.cache")
            .unwrap();
        let status = ["miss", "hit"][n];
        assert_eq!(attr(request, "sluice.cache.status"), status);
        assert_eq!(cache["attributes"]["sluice.cache.status"], status);
        let limits = request["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "sluice.limits")
            .unwrap();
        assert!(limits["time"].as_u64() <= cache["time"].as_u64());
    }
    assert_eq!(fake.request_count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The spans of one request: its server span and its attempts, in the order tried.
fn split(spans: &[Value]) -> (&Value, Vec<&Value>) {
    let request = spans.iter().find(|s| s["kind"] == "server").unwrap();
    let mut attempts: Vec<&Value> = spans.iter().filter(|s| s["kind"] == "client").collect();
    attempts.sort_by_key(|s| attr(s, "sluice.attempt").as_u64());
    (request, attempts)
}

/// The request span's events named `name`.
fn events<'a>(span: &'a Value, name: &str) -> Vec<&'a Value> {
    span["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == name)
        .collect()
}

/// Route `r` falls back from `a` (provider `pa`, OpenAI's API) to `b` (provider `pb`,
/// Anthropic's): each try is its own child span naming its deployment and provider, the
/// request span names the route and what answered, and a deployment skipped for its open
/// breaker (route `r`) or its cooldown (route `s`, model `c` on `pa`) is an event.
#[tokio::test]
async fn fallbacks_show_an_attempt_span_per_deployment_and_skips_as_events() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let (fa, fb) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[[providers]]
name = "pa"
type = "openai"
base_url = "{a}"
[[providers]]
name = "pb"
type = "anthropic"
base_url = "http://{b}"
api_key = "sk-b"
[[models]]
name = "a"
provider = "pa"
upstream = "up-a"
[[models]]
name = "b"
provider = "pb"
upstream = "up-b"
[[models]]
name = "c"
provider = "pa"
upstream = "up-c"
[[routes]]
name = "r"
strategy = "fallback"
targets = ["a", "b"]
[[routes]]
name = "s"
strategy = "fallback"
targets = ["c", "b"]
[routing]
retry = {{ attempts = 1 }}
breaker = {{ consecutive_failures = 1, cooldown_ms = 60000 }}
{obs}
"#,
        a = fa.base_url(),
        b = fb.addr(),
        obs = observability(&receiver.endpoint(), ""),
    );
    let gw = start_with(&config).await;
    let send = |route: &'static str, trace: &'static str| {
        let url = gw.url("/v1/chat/completions");
        async move {
            let traceparent = format!("00-{}-{CLIENT_SPAN}-01", trace.repeat(32));
            let body = json!({"model": route, "messages": [{"role": "user", "content": "hi"}]});
            let r = post_json(&url, body.to_string(), &[("traceparent", &traceparent)])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-sluice-model"), Some("b"));
        }
    };

    // `a` fails (its breaker opens on that one failure); `b` answers.
    fa.push(Behavior::new().with_status(503));
    send("r", "1").await;
    let spans = receiver.trace(&"1".repeat(32), 3).await;
    let (request, attempts) = split(&spans);
    assert_eq!(request["name"], "chat r");
    assert_eq!(attr(request, "sluice.route"), "r");
    assert_eq!(attr(request, "gen_ai.request.model"), "r");
    assert_eq!(attr(request, "gen_ai.response.model"), "up-b");
    assert_eq!(attr(request, "gen_ai.provider.name"), "anthropic");
    assert_eq!(attr(request, "sluice.provider"), "pb");
    assert_eq!(attr(request, "sluice.model"), "b");
    assert_eq!(attr(request, "sluice.attempts"), 2);
    assert_eq!(request["status"]["code"], 0);
    assert!(events(request, "sluice.deployment_skipped").is_empty());
    let expected = [
        ("a", "pa", "openai", "up-a", 503),
        ("b", "pb", "anthropic", "up-b", 200),
    ];
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (n, (a, want)) in attempts.iter().zip(expected).enumerate() {
        let (model, provider, api, upstream, status) = want;
        assert_eq!(a["parent_span_id"], request["span_id"], "{a}");
        assert_eq!(a["name"], format!("chat {upstream}").as_str());
        assert_eq!(attr(a, "sluice.attempt"), n as u64 + 1);
        assert_eq!(attr(a, "sluice.model"), model);
        assert_eq!(attr(a, "sluice.provider"), provider);
        assert_eq!(attr(a, "gen_ai.provider.name"), api);
        assert_eq!(attr(a, "gen_ai.request.model"), upstream);
        assert_eq!(attr(a, "http.response.status_code"), status);
    }
    assert_eq!(attr(attempts[0], "error.type"), "upstream_5xx");
    assert_eq!(attempts[0]["status"]["code"], 2);
    assert!(attr(attempts[1], "error.type").is_null());
    assert_eq!(attempts[1]["status"]["code"], 0);
    assert!(attempts[0]["end"].as_u64() <= attempts[1]["start"].as_u64());
    // Each deployment's upstream saw its own try's span as the parent.
    for (fake, attempt) in [(&fa, attempts[0]), (&fb, attempts[1])] {
        let sent = fake.last_request().unwrap();
        let (trace, parent) = parts(sent.header("traceparent").unwrap());
        assert_eq!(trace, "1".repeat(32));
        assert_eq!(parent, attempt["span_id"].as_str().unwrap());
    }

    // `a`'s breaker is open: skipped, an event, no try.
    send("r", "2").await;
    let spans = receiver.trace(&"2".repeat(32), 2).await;
    let (request, attempts) = split(&spans);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attr(attempts[0], "sluice.model"), "b");
    let skipped = events(request, "sluice.deployment_skipped");
    assert_eq!(skipped.len(), 1, "{request:#}");
    assert_eq!(skipped[0]["attributes"]["sluice.model"], "a");
    assert_eq!(
        skipped[0]["attributes"]["sluice.skip_reason"],
        "breaker_open"
    );
    assert!(skipped[0]["time"].as_u64() <= attempts[0]["start"].as_u64());
    assert_eq!(fa.request_count(), 1);

    // `c` answers 429 with a long Retry-After: it cools down (its breaker stays closed),
    // and the next request skips it for that reason.
    fa.push(Behavior::new().with_status(429).with_retry_after("30"));
    send("s", "3").await;
    let spans = receiver.trace(&"3".repeat(32), 3).await;
    let (request, attempts) = split(&spans);
    assert_eq!(attr(request, "sluice.route"), "s");
    assert_eq!(attr(attempts[0], "sluice.model"), "c");
    assert_eq!(attr(attempts[0], "http.response.status_code"), 429);
    assert_eq!(attr(attempts[0], "error.type"), "upstream_rate_limited");
    send("s", "4").await;
    let spans = receiver.trace(&"4".repeat(32), 2).await;
    let (request, attempts) = split(&spans);
    assert_eq!(attr(attempts[0], "sluice.model"), "b");
    let skipped = events(request, "sluice.deployment_skipped");
    assert_eq!(skipped.len(), 1, "{request:#}");
    assert_eq!(skipped[0]["attributes"]["sluice.model"], "c");
    assert_eq!(
        skipped[0]["attributes"]["sluice.skip_reason"],
        "rate_limited"
    );
    assert_eq!(fa.request_count(), 2);
}

/// A key's rate limit refuses its second request: the request span (its only span: no try
/// was made) carries the refusal as its `sluice.limits` event and says so in its
/// attributes; a 4xx leaves a server span's status unset, as the conventions ask.
#[tokio::test]
async fn a_request_refused_by_a_limit_has_the_refusal_as_an_event() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "sluice-traces-limit-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = FakeUpstream::start().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmaster_key = \"sk-master\"\n[storage]\n\
         data_dir = \"{dir}\"\n[[providers]]\nname = \"fake\"\ntype = \"openai\"\n\
         base_url = \"{upstream}\"\n[[models]]\nname = \"m\"\nprovider = \"fake\"\n{obs}",
        dir = dir.display(),
        upstream = fake.base_url(),
        obs = observability(&receiver.endpoint(), ""),
    );
    let gw = start_with(&config).await;
    let r = TestClient::new()
        .request(
            http::Method::POST,
            &gw.url("/admin/keys"),
            json!({"name": "slow", "rpm": 1}).to_string().into(),
            &[("authorization", "Bearer sk-master")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let auth = format!("Bearer {}", r.json()["key"].as_str().unwrap());
    let mut statuses = Vec::new();
    for trace in ["6", "7"] {
        let traceparent = format!("00-{}-{CLIENT_SPAN}-01", trace.repeat(32));
        let r = post_json(
            &gw.url("/v1/chat/completions"),
            common::CHAT,
            &[("authorization", &auth), ("traceparent", &traceparent)],
        )
        .await
        .unwrap();
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 429]);
    assert_eq!(fake.request_count(), 1);
    let spans = receiver.trace(&"7".repeat(32), 1).await;
    let request = &spans[0];
    assert_eq!(request["kind"], "server");
    assert_eq!(attr(request, "http.response.status_code"), 429);
    assert_eq!(attr(request, "error.type"), "429");
    assert_eq!(attr(request, "sluice.key.name"), "slow");
    assert_eq!(attr(request, "sluice.attempts"), 0);
    assert!(attr(request, "gen_ai.response.model").is_null());
    assert_eq!(request["status"]["code"], 0);
    let limits = events(request, "sluice.limits");
    assert_eq!(limits.len(), 1, "{request:#}");
    let a = &limits[0]["attributes"];
    assert_eq!(a["sluice.limits.outcome"], "refused");
    assert_eq!(a["error.type"], "rate_limited");
    assert!(
        a["sluice.limits.message"]
            .as_str()
            .unwrap()
            .contains("1 requests per minute"),
        "{a}"
    );
    // The admitted request's event said so.
    let spans = receiver.trace(&"6".repeat(32), 2).await;
    let (request, _) = split(&spans);
    let limits = events(request, "sluice.limits");
    assert_eq!(limits[0]["attributes"]["sluice.limits.outcome"], "admitted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn spans_are_dropped_and_counted_when_the_receiver_falls_behind_and_flushed_at_shutdown() {
    // A receiver that accepts connections and never answers: the exporter's first post
    // waits, its queue of one fills, and later requests' spans are dropped.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake = FakeUpstream::start().await;
    let config = format!(
        "{}\n{}",
        config_for(&fake.base_url(), ""),
        observability(
            &format!("http://{}", stuck.local_addr().unwrap()),
            "otlp_queue = 1\notlp_max_batch = 1\notlp_timeout_ms = 30000"
        )
    );
    let gw = start_with(&config).await;
    for _ in 0..6 {
        let r = post_json(&gw.url("/v1/chat/completions"), common::CHAT, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let metrics = TestClient::new().get(&gw.url("/metrics")).await.unwrap();
    let dropped = metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("sluice_trace_spans_dropped_total{reason=\"queue_full\"} "))
        .map(|n| n.parse::<u64>().unwrap())
        .unwrap();
    // Six requests of two spans each: one request with the exporter, one queued.
    assert!(dropped >= 6, "{}", metrics.text());
    drop(gw);

    // At shutdown, what is queued is sent before the gateway stops.
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let config = format!(
        "{}\n{}",
        config_for(&fake.base_url(), ""),
        "[observability]\notlp_endpoint = \"ENDPOINT\"\notlp_flush_interval_ms = 600000\n"
            .replace("ENDPOINT", &receiver.endpoint())
    );
    let mut gw = start_with(&config).await;
    let traceparent = format!("00-{}-{CLIENT_SPAN}-01", "5".repeat(32));
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        common::CHAT,
        &[("traceparent", &traceparent)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.spans().await.is_empty());
    gw.begin_shutdown().await.unwrap().unwrap();
    let spans = receiver.trace(&"5".repeat(32), 2).await;
    assert_eq!(spans.len(), 2);
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced_or_sent_upstream() {
    let (fake, gw) = common::setup("").await;
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        common::CHAT,
        &[("traceparent", &traceparent)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(gw.state.tracer.is_none());
    assert_eq!(fake.last_request().unwrap().header("traceparent"), None);
    let metrics = TestClient::new().get(&gw.url("/metrics")).await.unwrap();
    assert!(!metrics.text().contains("sluice_trace_"));
}

/// The semantic stage's embedding by a model sluice does not run itself is a request of the
/// gateway's own through the pipeline (`<request id>-semantic`): it continues the chat
/// request's trace, its span a child of the chat request's span, so one trace shows the
/// chat request, its embedding and each one's upstream try.
#[tokio::test]
async fn a_remote_semantic_embedding_is_a_child_of_the_chat_request_it_serves() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "sluice-traces-semantic-{}-{}",
        std::process::id(),
        sluice_store::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = FakeUpstream::start().await;
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[cache]
semantic = {{ model = "emb", threshold = 0.95 }}
[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
api_key = "sk-upstream"
[[models]]
name = "m"
provider = "fake"
upstream = "upstream-m"
[[models]]
name = "emb"
provider = "fake"
{obs}
"#,
        dir = dir.display(),
        upstream = fake.base_url(),
        obs = observability(&receiver.endpoint(), ""),
    );
    let gw = start_with(&config).await;
    let trace_id = "5cf92f3577b34da6a3ce929d0e0e4737";
    let traceparent = format!("00-{trace_id}-{CLIENT_SPAN}-01");
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        json!({"model": "m", "temperature": 0,
               "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        .to_string(),
        &[
            ("traceparent", traceparent.as_str()),
            ("tracestate", "vendor=x"),
            ("x-request-id", "traced-semantic"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-cache"), Some("miss"));

    // The chat request and its try; the embedding request and its try: one trace.
    let spans = receiver.trace(trace_id, 4).await;
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s["kind"] == "server" && s["name"] == name)
            .unwrap_or_else(|| panic!("no server span {name}: {spans:#?}"))
    };
    let chat = named("chat m");
    let embedding = named("embeddings emb");
    assert_eq!(chat["parent_span_id"], CLIENT_SPAN);
    assert_eq!(embedding["parent_span_id"], chat["span_id"]);
    assert_eq!(embedding["trace_state"], "vendor=x");
    assert!(embedding["start"].as_u64() >= chat["start"].as_u64());
    assert!(embedding["end"].as_u64() <= chat["end"].as_u64());
    let try_of = |parent: &Value| {
        spans
            .iter()
            .find(|s| s["kind"] == "client" && s["parent_span_id"] == parent["span_id"])
            .unwrap_or_else(|| panic!("no try of {}: {spans:#?}", parent["name"]))
    };
    let (chat_try, embedding_try) = (try_of(chat), try_of(embedding));
    assert_eq!(chat_try["name"], "chat upstream-m");
    assert_eq!(embedding_try["name"], "embeddings emb");

    // Each upstream request carried the trace, its parent its own try's span.
    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "the embedding, then the answer");
    for (req, attempt) in seen.iter().zip([embedding_try, chat_try]) {
        let (trace, parent) = parts(req.header("traceparent").unwrap());
        assert_eq!(trace, trace_id);
        assert_eq!(parent, attempt["span_id"].as_str().unwrap());
    }
}
