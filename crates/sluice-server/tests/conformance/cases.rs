//! The cases: inbound APIs, upstream formats, scenarios, the requests each inbound API sends
//! in a scenario, and one case run against a real gateway and compared with its golden.

use super::checks;
use super::common::start_with;
use super::normalize::Ids;
use serde_json::{json, Value};
use sluice_testkit::client::{post_json, post_stream};
use sluice_testkit::{Behavior, FakeUpstream};
use std::fmt::Write as _;
use std::path::PathBuf;

/// The client's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    Chat,
    Messages,
    Responses,
}

impl Inbound {
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Messages => "messages",
            Self::Responses => "responses",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Messages => "/v1/messages",
            Self::Responses => "/v1/responses",
        }
    }
}

/// The upstream's wire format (the provider `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    OpenAi,
    /// An `openai` provider with `responses = "native"`: `/v1/responses` goes to it as it is
    /// (the other inbound APIs reach it as chat, as [`Upstream::OpenAi`]).
    OpenAiResponses,
    Anthropic,
    Gemini,
    Ollama,
}

impl Upstream {
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::OpenAiResponses => "openai_responses",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Ollama => "ollama",
        }
    }

    fn stream_extension(self) -> &'static str {
        match self {
            Self::Ollama => "ndjson",
            _ => "sse",
        }
    }

    /// The status of the `rejected` scenario's error: Ollama's for a model it does not have,
    /// the others' for a request they refuse.
    fn rejected_status(self) -> u16 {
        match self {
            Self::Ollama => 404,
            _ => 400,
        }
    }

    /// The provider `type`.
    fn kind(self) -> &'static str {
        match self {
            Self::OpenAiResponses => "openai",
            other => other.name(),
        }
    }

    /// Upstream events cut after in the `cut` scenario: the first content delta has passed.
    fn cut_after(self) -> usize {
        match self {
            Self::OpenAiResponses => 5,
            Self::Anthropic => 4,
            Self::OpenAi => 2,
            Self::Gemini | Self::Ollama => 1,
        }
    }
}

/// Every scenario; a case runs where its upstream format has a transcript for it.
pub const SCENARIOS: [&str; 11] = [
    "text",
    "tools",
    "tool_result",
    "reasoning",
    "refusal",
    "content_filter",
    "max_tokens",
    "error_midway",
    "cut",
    "rejected",
    // An agent's turn: reasoning, then text, then parallel calls (OpenAI's format only).
    "agent",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// An upstream transcript, if the format has one for the scenario.
fn transcript(upstream: Upstream, scenario: &str, kind: &str) -> Option<String> {
    let file = dir()
        .join("upstream")
        .join(upstream.name())
        .join(format!("{scenario}.{kind}"));
    std::fs::read_to_string(file).ok()
}

/// A stream transcript split into what the fake writes one at a time: SSE events (each
/// with its blank line) or NDJSON lines.
fn events(text: &str, upstream: Upstream) -> Vec<String> {
    let sep = if upstream == Upstream::Ollama {
        "\n"
    } else {
        "\n\n"
    };
    text.split_inclusive(sep)
        .filter(|e| !e.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

const QUESTION: &str = "What is the weather in Paris and Rome?";

fn schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

/// The weather each call of the `tool_result` scenario answered.
const RESULTS: [(&str, &str, &str); 2] =
    [("a", "Paris", "18 C, sunny"), ("b", "Rome", "22 C, clear")];

/// The turns of the `tool_result` scenario after the question, in each inbound API's terms:
/// the assistant's two parallel calls, then their results.
fn tool_turns(inbound: Inbound) -> Vec<Value> {
    let args = |city: &str| json!({"city": city});
    match inbound {
        Inbound::Chat => {
            let calls: Vec<Value> = RESULTS
                .iter()
                .map(|(id, city, _)| {
                    json!({"id": format!("call_{id}"), "type": "function",
                    "function": {"name": "get_weather", "arguments": args(city).to_string()}})
                })
                .collect();
            let mut turns =
                vec![json!({"role": "assistant", "content": null, "tool_calls": calls})];
            turns.extend(RESULTS.iter().map(|(id, _, result)| {
                json!({"role": "tool", "tool_call_id": format!("call_{id}"), "content": result})
            }));
            turns
        }
        Inbound::Messages => {
            let uses: Vec<Value> = RESULTS
                .iter()
                .map(|(id, city, _)| {
                    json!({"type": "tool_use", "id": format!("toolu_{id}"),
                    "name": "get_weather", "input": args(city)})
                })
                .collect();
            let results: Vec<Value> = RESULTS
                .iter()
                .map(|(id, _, result)| {
                    json!({"type": "tool_result",
                    "tool_use_id": format!("toolu_{id}"), "content": result})
                })
                .collect();
            vec![
                json!({"role": "assistant", "content": uses}),
                json!({"role": "user", "content": results}),
            ]
        }
        Inbound::Responses => {
            let mut items: Vec<Value> = RESULTS
                .iter()
                .map(|(id, city, _)| {
                    json!({"type": "function_call", "call_id": format!("call_{id}"),
                    "name": "get_weather", "arguments": args(city).to_string()})
                })
                .collect();
            items.extend(RESULTS.iter().map(|(id, _, result)| {
                json!({"type": "function_call_output", "call_id": format!("call_{id}"), "output": result})
            }));
            items
        }
    }
}

/// The client's request in `scenario`.
fn request(inbound: Inbound, scenario: &str, stream: bool) -> Value {
    let tools = matches!(scenario, "tools" | "tool_result" | "agent");
    let reasoning = matches!(scenario, "reasoning" | "agent");
    let mut body = match inbound {
        Inbound::Chat => json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": QUESTION}
            ],
            "max_tokens": 2048,
        }),
        Inbound::Messages => json!({
            "model": "m",
            "system": "Be brief.",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 2048,
        }),
        Inbound::Responses => json!({
            "model": "m",
            "instructions": "Be brief.",
            "input": QUESTION,
            "max_output_tokens": 2048,
        }),
    };
    let description = "Current weather of a city";
    match (inbound, tools) {
        (Inbound::Chat, true) => {
            body["tools"] = json!([{"type": "function", "function": {
                "name": "get_weather", "description": description, "parameters": schema()}}]);
        }
        (Inbound::Messages, true) => {
            body["tools"] = json!([{"name": "get_weather", "description": description,
                "input_schema": schema()}]);
        }
        (Inbound::Responses, true) => {
            body["tools"] = json!([{"type": "function", "name": "get_weather",
                "description": description, "parameters": schema()}]);
        }
        (_, false) => {}
    }
    match (inbound, reasoning) {
        (Inbound::Chat, true) => body["reasoning_effort"] = json!("low"),
        (Inbound::Messages, true) => {
            body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
        }
        (Inbound::Responses, true) => {
            body["reasoning"] = json!({"effort": "low", "summary": "auto"});
        }
        (_, false) => {}
    }
    if scenario == "tool_result" {
        let turns = tool_turns(inbound);
        match inbound {
            Inbound::Chat | Inbound::Messages => {
                if let Some(messages) = body["messages"].as_array_mut() {
                    messages.extend(turns);
                }
            }
            Inbound::Responses => {
                let mut input = vec![json!({"role": "user", "content": QUESTION})];
                input.extend(turns);
                body["input"] = json!(input);
            }
        }
    }
    if stream {
        body["stream"] = json!(true);
        if inbound == Inbound::Chat {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    body
}

/// A gateway with model `m` on provider `up` of the upstream's type at `fake`.
async fn gateway(upstream: Upstream, fake: &FakeUpstream) -> super::common::Gateway {
    let (base, extra) = match upstream {
        Upstream::OpenAi => (fake.base_url(), ""),
        Upstream::OpenAiResponses => (fake.base_url(), "responses = \"native\"\n"),
        _ => (fake.url(""), ""),
    };
    start_with(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "{dir}"
[[providers]]
name = "up"
type = "{kind}"
base_url = "{base}"
api_key = "test-key"
{extra}[[models]]
name = "m"
provider = "up"
upstream = "up-model"
"#,
        dir = std::env::temp_dir()
            .join("sluice-test-data")
            .join("conformance")
            .display(),
        kind = upstream.kind(),
    ))
    .await
}

/// What one call gave: the upstream request, and the client's status and body.
struct Call {
    upstream_request: String,
    status: u16,
    body: Vec<u8>,
}

async fn call(
    inbound: Inbound,
    upstream: Upstream,
    scenario: &str,
    stream: bool,
    behavior: Behavior,
) -> Call {
    let fake = FakeUpstream::start().await;
    let gw = gateway(upstream, &fake).await;
    fake.push(behavior);
    let body = request(inbound, scenario, stream).to_string();
    let url = gw.url(inbound.path());
    let (status, body) = if stream {
        let mut s = post_stream(&url, body, &[]).await.expect("stream opens");
        let status = s.status;
        // A stream the gateway ends on purpose still ends cleanly for the client.
        let body = s.collect_body().await.expect("the stream ends cleanly");
        (status, body.to_vec())
    } else {
        let r = post_json(&url, body, &[]).await.expect("answered");
        (r.status, r.body.to_vec())
    };
    let sent = fake.last_request().expect("the upstream was called");
    let target = match &sent.query {
        Some(q) => format!("{} {}?{q}", sent.method, sent.path),
        None => format!("{} {}", sent.method, sent.path),
    };
    let json = serde_json::to_string_pretty(&sent.json().unwrap_or(Value::Null)).unwrap();
    Call {
        upstream_request: format!("{target}\n{json}"),
        status,
        body,
    }
}

/// A streamed body, normalised event by event: `event:` lines and comments as they are,
/// `data:` JSON compacted.
fn stream_text(body: &[u8], ids: &mut Ids) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            out.push_str("data: ");
            out.push_str(&ids.json_line(data));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Runs one case; `Some` says what differs from its golden (or what check failed).
pub async fn run(inbound: Inbound, upstream: Upstream, scenario: &str) -> Option<String> {
    if scenario == "rejected" {
        return rejected(inbound, upstream).await;
    }
    let (whole, stream, cut) = match scenario {
        // The upstream answers the results with text: the request is what this checks.
        "tool_result" => (
            transcript(upstream, "text", "whole.json"),
            transcript(
                upstream,
                "text",
                &format!("stream.{}", upstream.stream_extension()),
            ),
            false,
        ),
        "cut" => (
            None,
            transcript(
                upstream,
                "text",
                &format!("stream.{}", upstream.stream_extension()),
            ),
            true,
        ),
        _ => (
            transcript(upstream, scenario, "whole.json"),
            transcript(
                upstream,
                scenario,
                &format!("stream.{}", upstream.stream_extension()),
            ),
            false,
        ),
    };
    if whole.is_none() && stream.is_none() {
        return None;
    }
    let name = format!("{} × {} × {scenario}", inbound.name(), upstream.name());
    let mut golden = format!("# {name}\n");
    let mut problems = Vec::new();
    let mut whole_body = None;
    if let Some(w) = whole {
        let c = call(
            inbound,
            upstream,
            scenario,
            false,
            Behavior::new().with_replay([w]),
        )
        .await;
        let _ = write!(
            golden,
            "\n## whole: upstream request\n{}\n\n## whole: answer, status {}\n{}\n",
            c.upstream_request,
            c.status,
            Ids::default().json_pretty(&c.body)
        );
        whole_body = Some(c.body);
    }
    if let Some(s) = stream {
        let mut behavior = Behavior::new().with_replay(events(&s, upstream));
        if cut {
            behavior = behavior.with_cut_after_chunks(upstream.cut_after());
        }
        let c = call(inbound, upstream, scenario, true, behavior).await;
        let _ = write!(
            golden,
            "\n## stream: upstream request\n{}\n\n## stream: events, status {}\n{}",
            c.upstream_request,
            c.status,
            stream_text(&c.body, &mut Ids::default())
        );
        if let Err(e) = checks::stream(inbound, &c.body, whole_body.as_deref()) {
            problems.push(format!("{name}: {e}"));
        }
    }
    compare(&name, inbound, upstream, scenario, &golden, problems)
}

/// The `rejected` scenario: the upstream refuses the request with its own error body, whole
/// and streamed; the client gets the status and an error in its API's shape.
async fn rejected(inbound: Inbound, upstream: Upstream) -> Option<String> {
    let body = transcript(upstream, "rejected", "error.json")?;
    let status = upstream.rejected_status();
    let name = format!("{} × {} × rejected", inbound.name(), upstream.name());
    let mut golden = format!("# {name}\n");
    for stream in [false, true] {
        let behavior = Behavior::new().with_error(status, body.trim_end());
        let c = call(inbound, upstream, "rejected", stream, behavior).await;
        let mode = if stream { "stream" } else { "whole" };
        let _ = write!(
            golden,
            "\n## {mode}: answer, status {}\n{}\n",
            c.status,
            Ids::default().json_pretty(&c.body)
        );
    }
    compare(&name, inbound, upstream, "rejected", &golden, Vec::new())
}

/// Compares `golden` with the file of the case (or writes it, with `SLUICE_BLESS`); `Some`
/// lists `problems` and what differs.
fn compare(
    name: &str,
    inbound: Inbound,
    upstream: Upstream,
    scenario: &str,
    golden: &str,
    mut problems: Vec<String>,
) -> Option<String> {
    let file = dir()
        .join("golden")
        .join(inbound.name())
        .join(upstream.name())
        .join(format!("{scenario}.txt"));
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, golden).unwrap();
    } else {
        match std::fs::read_to_string(&file) {
            Ok(expected) if expected == golden => {}
            Ok(expected) => problems.push(format!(
                "{name}: differs from {}:\n{}",
                file.display(),
                diff(&expected, golden)
            )),
            Err(_) => problems.push(format!(
                "{name}: no golden at {} (SLUICE_BLESS=1 writes it; review it)",
                file.display()
            )),
        }
    }
    (!problems.is_empty()).then(|| problems.join("\n"))
}

/// The first lines that differ, with their line numbers.
fn diff(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let mut out = String::new();
    let mut shown = 0;
    for i in 0..e.len().max(g.len()) {
        let (a, b) = (e.get(i).copied(), g.get(i).copied());
        if a != b {
            let _ = writeln!(
                out,
                "line {}:\n  golden: {}\n  now:    {}",
                i + 1,
                a.unwrap_or("<none>"),
                b.unwrap_or("<none>")
            );
            shown += 1;
            if shown == 5 {
                break;
            }
        }
    }
    out
}
