//! sluice's traces received by a real OpenTelemetry collector: Rotel (PyPI's `rotel`, a
//! collector that ships its binary `rotel-agent` in the wheel; `./test.sh` installs it in
//! its Python venv) listens for OTLP/HTTP, and its debug exporter prints every span it
//! received in the collector's detailed text format, which this test reads back. Without the
//! package the test is skipped, unless `SLUICE_REQUIRE_OTEL_COLLECTOR=1`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::script::python;
use common::{config_for, start_with};
use sluice_testkit::client::post_json;
use sluice_testkit::responses::{COMPLETION_TOKENS, PROMPT_TOKENS};
use sluice_testkit::{Behavior, FakeUpstream};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The client's trace context.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// A running `rotel-agent`, killed when dropped; `out` is all it printed so far.
struct Collector {
    child: Child,
    http_port: u16,
    out: Arc<Mutex<String>>,
    /// Its pid and log files.
    dir: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The path of `rotel-agent` in the Python venv, or why not.
fn agent() -> Result<PathBuf, String> {
    let python = python();
    let out = Command::new(&python)
        .args([
            "-c",
            "import pathlib, rotel; print(pathlib.Path(rotel.__file__).parent / 'rotel-agent')",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{python}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{python}` cannot import rotel: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is missing", path.display()))
    }
}

/// A port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Collector {
    /// Starts the collector, or `None` (the test skipped) without it.
    fn start() -> Option<Self> {
        let agent = match agent() {
            Ok(agent) => agent,
            Err(why) => {
                assert!(
                    std::env::var("SLUICE_REQUIRE_OTEL_COLLECTOR").as_deref() != Ok("1"),
                    "the OpenTelemetry collector is required (SLUICE_REQUIRE_OTEL_COLLECTOR=1): \
                     {why}; run ./test.sh"
                );
                eprintln!("SKIPPED: {why} (run ./test.sh, which installs rotel)");
                return None;
            }
        };
        let (http_port, grpc_port) = (free_port(), free_port());
        let dir =
            std::env::temp_dir().join(format!("sluice-otelcol-{}-{http_port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(agent)
            .arg("start")
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "traces", "--debug-log-verbosity", "detailed"])
            .args(["--batch-timeout", "50ms"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let collector = Self {
            child,
            http_port,
            out,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", http_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rotel-agent did not listen on {http_port}: {}",
                collector.printed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(collector)
    }

    fn printed(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The spans of `trace` the collector printed, once there are `n` (10 s at most).
    async fn trace(&self, trace: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = parse(&self.printed())
                .into_iter()
                .filter(|s| s.trace_id == trace)
                .collect();
            if spans.len() >= n || Instant::now() > deadline {
                assert_eq!(spans.len(), n, "spans of {trace}:\n{}", self.printed());
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A span as the collector's debug exporter prints it; attribute values keep their type,
/// as in `Str(chat)` or `Int(12)`.
#[derive(Debug, Default, Clone)]
struct Span {
    trace_id: String,
    parent_id: String,
    id: String,
    name: String,
    kind: String,
    /// `STATUS_CODE_ERROR`, or empty when the status is unset.
    status: String,
    attributes: BTreeMap<String, String>,
    events: Vec<String>,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no attribute {key} on {self:#?}"))
    }
}

/// Where in a span's text the parser is.
#[derive(PartialEq)]
enum Section {
    Head,
    Attributes,
    Events,
    Other,
}

/// The spans in the collector's detailed debug output.
fn parse(text: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut section = Section::Other;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Span #") {
            spans.push(Span::default());
            section = Section::Head;
            continue;
        }
        if trimmed.starts_with("ResourceSpans #") || trimmed.starts_with("ScopeSpans #") {
            section = Section::Other;
            continue;
        }
        let Some(span) = spans.last_mut() else {
            continue;
        };
        match trimmed {
            "Attributes:" if section == Section::Head => {
                section = Section::Attributes;
                continue;
            }
            "Events:" => {
                section = Section::Events;
                continue;
            }
            "Links:" => {
                section = Section::Other;
                continue;
            }
            _ => {}
        }
        match section {
            Section::Head => {
                if let Some((field, value)) = trimmed.split_once(':') {
                    let value = value.trim().to_owned();
                    match field.trim() {
                        "Trace ID" => span.trace_id = value,
                        "Parent ID" => span.parent_id = value,
                        "ID" => span.id = value,
                        "Name" => span.name = value,
                        "Kind" => span.kind = value,
                        "Status code" => span.status = value,
                        _ => {}
                    }
                }
            }
            Section::Attributes => {
                if let Some((key, value)) = trimmed
                    .strip_prefix("-> ")
                    .and_then(|kv| kv.split_once(": "))
                {
                    span.attributes.insert(key.to_owned(), value.to_owned());
                }
            }
            Section::Events => {
                if let Some(name) = trimmed.strip_prefix("-> Name: ") {
                    span.events.push(name.to_owned());
                }
            }
            Section::Other => {}
        }
    }
    spans
}

/// A request retried once, with the client's `traceparent`: the collector receives the
/// request's server span in the client's trace, with the GenAI attributes, and a client span
/// per try, each the parent named by the `traceparent` sluice sent upstream for that try.
#[tokio::test]
async fn a_real_collector_receives_the_request_and_its_tries() {
    let Some(collector) = Collector::start() else {
        return;
    };
    let fake = FakeUpstream::start().await;
    let config = format!(
        "{}\n[observability]\notlp_endpoint = \"{}\"\notlp_flush_interval_ms = 50\n",
        config_for(&fake.base_url(), ""),
        collector.endpoint()
    );
    let gw = start_with(&config).await;
    fake.push(Behavior::new().with_status(503));
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        common::CHAT,
        &[("traceparent", &traceparent)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let spans = collector.trace(TRACE_ID, 3).await;
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == "SPAN_KIND_SERVER")
        .collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let request = server[0];
    assert_eq!(request.name, "chat m");
    assert_eq!(request.parent_id, CLIENT_SPAN);
    assert_eq!(request.attr("gen_ai.operation.name"), "Str(chat)");
    assert_eq!(request.attr("gen_ai.request.model"), "Str(m)");
    assert_eq!(request.attr("gen_ai.response.model"), "Str(upstream-m)");
    assert_eq!(request.attr("gen_ai.provider.name"), "Str(openai)");
    assert_eq!(
        request.attr("gen_ai.usage.input_tokens"),
        format!("Int({PROMPT_TOKENS})")
    );
    assert_eq!(
        request.attr("gen_ai.usage.output_tokens"),
        format!("Int({COMPLETION_TOKENS})")
    );
    assert_eq!(request.attr("sluice.cache.status"), "Str(bypass)");
    assert_eq!(request.attr("http.response.status_code"), "Int(200)");
    assert_eq!(request.events, ["sluice.limits"]);

    let mut tries: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == "SPAN_KIND_CLIENT")
        .collect();
    tries.sort_by(|a, b| a.attr("sluice.attempt").cmp(b.attr("sluice.attempt")));
    assert_eq!(tries.len(), 2, "{spans:#?}");
    for (n, t) in tries.iter().enumerate() {
        assert_eq!(t.parent_id, request.id);
        assert_eq!(t.name, "chat upstream-m");
        assert_eq!(t.attr("sluice.attempt"), format!("Int({})", n + 1));
    }
    assert_eq!(tries[0].attr("http.response.status_code"), "Int(503)");
    assert_eq!(tries[0].attr("error.type"), "Str(upstream_5xx)");
    assert_eq!(tries[0].status, "STATUS_CODE_ERROR");
    assert_eq!(tries[1].attr("http.response.status_code"), "Int(200)");
    assert_eq!(tries[1].status, "");

    // What each upstream request carried: the client's trace, the try's span as parent.
    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    for (req, t) in seen.iter().zip(&tries) {
        let sent = req.header("traceparent").unwrap();
        assert_eq!(sent, format!("00-{TRACE_ID}-{}-01", t.id));
    }
}

#[test]
fn the_parser_reads_the_debug_exporters_span_blocks() {
    let text = "ResourceSpans #0\nResource attributes:\n     -> service.name: Str(sluice)\n\
        ScopeSpans #0\nSpan #0\n    Trace ID       : 0a\n    Parent ID      : 0b\n    \
        ID             : 0c\n    Name           : chat m\n    Kind           : SPAN_KIND_SERVER\n\
        Start time: 1\nEnd time: 2\n    Status code    : STATUS_CODE_ERROR\nAttributes:\n     -> gen_ai.request.model: Str(m)\n\
        Events:\nSpanEvent #0\n     -> Name: sluice.limits\n     -> Timestamp: 5\n\
        Span #1\n    Trace ID       : 0a\n    Parent ID      : 0c\n    ID             : 0d\n";
    let spans = parse(text);
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].id, "0c");
    assert_eq!(spans[0].name, "chat m");
    assert_eq!(spans[0].attr("gen_ai.request.model"), "Str(m)");
    assert!(!spans[0].attributes.contains_key("service.name"));
    assert_eq!(spans[0].status, "STATUS_CODE_ERROR");
    assert_eq!(spans[0].events, ["sluice.limits"]);
    assert_eq!(spans[1].parent_id, "0c");
}
