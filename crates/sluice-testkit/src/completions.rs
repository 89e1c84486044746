//! The fake's `POST /v1/completions` (OpenAI's legacy text completions), in the documented
//! wire format: a whole `text_completion` object, or its stream (one `text_completion`
//! object a piece, the last piece carrying `finish_reason`, a `choices: []` usage object when
//! `stream_options.include_usage` is set, then `data: [DONE]`).
//!
//! The text is [`Behavior::content`] (streamed: [`Behavior::pieces`]), after the prompt when
//! `echo` is set; `prompt` must be a string or an array (else 400 naming `prompt`, as OpenAI
//! answers).

use crate::body::{CancelGuard, FakeBody, SseStream};
use crate::responses::{self, COMPLETION_TOKENS, PROMPT_TOKENS};
use crate::Behavior;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;

/// What the fake reads of a completions request.
struct Asked {
    model: String,
    stream: bool,
    include_usage: bool,
    /// The prompt text echoed back (`echo: true` with a string prompt).
    echoed: String,
}

fn read(body: Option<Result<Value, serde_json::Error>>) -> Result<Asked, (String, &'static str)> {
    let body = match body {
        None => return Err(("request body is empty".into(), "body")),
        Some(Err(e)) => return Err((format!("request body is not valid JSON: {e}"), "body")),
        Some(Ok(v)) => v,
    };
    let model = match body.get("model") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(("you must provide a model parameter".into(), "model")),
    };
    let prompt = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(_)) => String::new(),
        _ => return Err(("`prompt` must be a string or an array".into(), "prompt")),
    };
    let echo = body.get("echo").and_then(Value::as_bool).unwrap_or(false);
    Ok(Asked {
        model,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        echoed: if echo { prompt } else { String::new() },
    })
}

/// The usage object: the behavior's, else the fake's default counts.
fn usage(behavior: &Behavior, completion_tokens: u64) -> Value {
    match &behavior.usage {
        Some(u) => u.openai(),
        None => json!({
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion_tokens,
            "total_tokens": PROMPT_TOKENS + completion_tokens,
        }),
    }
}

/// One `text_completion` object of answer `id`.
fn object(id: u64, created: u64, model: &str, choices: Value) -> Value {
    json!({
        "id": format!("cmpl-fake-{id}"),
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": choices,
    })
}

fn choice(text: &str, finish: Option<&str>) -> Value {
    json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}])
}

/// Answers `POST /v1/completions` under `behavior`.
pub(crate) fn answer(
    id: u64,
    body: Option<Result<Value, serde_json::Error>>,
    behavior: &Behavior,
    mut guard: CancelGuard,
) -> Response<FakeBody> {
    let asked = match read(body) {
        Ok(a) => a,
        Err((message, param)) => {
            guard.disarm();
            let v = json!({"error": {"message": message, "type": "invalid_request_error",
                "param": param, "code": null}});
            let mut resp = Response::new(FakeBody::full(v.to_string().into()));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return resp;
        }
    };
    let created = responses::now_unix();
    if !asked.stream {
        guard.disarm();
        let content = behavior
            .content
            .as_deref()
            .unwrap_or(responses::DEFAULT_CONTENT);
        let text = format!("{}{content}", asked.echoed);
        let mut v = object(id, created, &asked.model, choice(&text, Some("stop")));
        v["usage"] = usage(behavior, COMPLETION_TOKENS);
        let mut resp = Response::new(FakeBody::full(v.to_string().into()));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return resp;
    }
    let pieces: Vec<String> = match &behavior.pieces {
        Some(p) => p.clone(),
        None => responses::DEFAULT_PIECES.map(str::to_owned).to_vec(),
    };
    let event = |choices: Value| {
        responses::sse_data(&object(id, created, &asked.model, choices).to_string())
    };
    let mut queue = VecDeque::with_capacity(pieces.len() + 4);
    if !asked.echoed.is_empty() {
        queue.push_back(event(choice(&asked.echoed, None)));
    }
    for p in &pieces {
        queue.push_back(event(choice(p, None)));
    }
    queue.push_back(event(choice("", Some("stop"))));
    if asked.include_usage {
        let mut v = object(id, created, &asked.model, json!([]));
        v["usage"] = usage(behavior, pieces.len() as u64);
        queue.push_back(responses::sse_data(&v.to_string()));
    }
    queue.push_back(responses::sse_done());
    let delay = Duration::from_millis(behavior.chunk_delay_ms);
    let stream = SseStream::new(queue, None, delay, behavior.cut_after_chunks, guard);
    let mut resp = Response::new(FakeBody::sse(stream));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
