//! OpenAI's Responses API as the fake serves it natively (`POST /v1/responses`), built from
//! OpenAI's API reference ("Responses": the response object; "Streaming events": the
//! event sequence): a whole `response` object, or `response.created`,
//! `response.in_progress`, the output item's `added`/`delta`/`done` events, and
//! `response.completed`, each `event: <type>` with its `sequence_number`.

use crate::behavior::{Behavior, FakeToolCall, FakeUsage};
use crate::responses::{self, COMPLETION_TOKENS, PROMPT_TOKENS};
use bytes::Bytes;
use serde_json::{json, Value};

/// How the fake answers a Responses request.
pub(crate) enum Answer {
    /// A whole `response` object.
    Whole(Bytes),
    /// The event sequence, one item per SSE event.
    Events(Vec<Bytes>),
}

/// The answer to a Responses request `body` (request `id` of the fake), under `behavior`.
pub(crate) fn answer(id: u64, body: Option<&Value>, behavior: &Behavior) -> Answer {
    let field = |k: &str| body.and_then(|b| b.get(k));
    let model = field("model")
        .and_then(Value::as_str)
        .unwrap_or(responses::FAKE_MODEL_ID);
    let stream = field("stream") == Some(&Value::Bool(true));
    let r = Response {
        // Unique across fakes, as OpenAI's are: gateways store responses by these ids.
        id: format!("resp_fake_{id}_{:016x}", unique(id)),
        item_id: format!("msg_fake_{id}"),
        model: model.to_owned(),
        store: field("store").and_then(Value::as_bool).unwrap_or(true),
        previous: field("previous_response_id")
            .cloned()
            .unwrap_or(Value::Null),
        usage: behavior.usage,
    };
    let pieces: Vec<&str> = match &behavior.pieces {
        Some(p) => p.iter().map(String::as_str).collect(),
        None => responses::DEFAULT_PIECES.to_vec(),
    };
    let tool = behavior.tool_call.as_ref();
    if !stream {
        let content = behavior
            .content
            .as_deref()
            .unwrap_or(responses::DEFAULT_CONTENT);
        let output = match tool {
            Some(t) => vec![r.call(t, "completed", &t.arguments)],
            None => vec![r.message(content, "completed")],
        };
        return Answer::Whole(Bytes::from(r.object("completed", output).to_string()));
    }
    let mut events = Events::default();
    events.push(
        "response.created",
        json!({"response": r.object("in_progress", vec![])}),
    );
    events.push(
        "response.in_progress",
        json!({"response": r.object("in_progress", vec![])}),
    );
    let item = match tool {
        Some(t) => {
            let call_id = format!("fc_fake_{id}");
            let added = r.call(t, "in_progress", "");
            events.push(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            );
            let mid = t.arguments.len() / 2;
            let (a, b) = t.arguments.split_at(
                (0..=mid)
                    .rev()
                    .find(|&i| t.arguments.is_char_boundary(i))
                    .unwrap_or(0),
            );
            for part in [a, b] {
                events.push(
                    "response.function_call_arguments.delta",
                    json!({"item_id": call_id, "output_index": 0, "delta": part}),
                );
            }
            events.push(
                "response.function_call_arguments.done",
                json!({"item_id": call_id, "output_index": 0, "arguments": t.arguments}),
            );
            r.call(t, "completed", &t.arguments)
        }
        None => {
            let text: String = pieces.concat();
            let at = json!({"item_id": r.item_id, "output_index": 0, "content_index": 0});
            let with = |mut base: Value, extra: Value| {
                if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
                    b.extend(e.clone());
                }
                base
            };
            events.push(
                "response.output_item.added",
                json!({"output_index": 0, "item": r.message_item("in_progress", vec![])}),
            );
            events.push(
                "response.content_part.added",
                with(at.clone(), json!({"part": text_part("")})),
            );
            for p in &pieces {
                events.push(
                    "response.output_text.delta",
                    with(at.clone(), json!({"delta": p, "logprobs": []})),
                );
            }
            events.push(
                "response.output_text.done",
                with(at.clone(), json!({"text": text, "logprobs": []})),
            );
            events.push(
                "response.content_part.done",
                with(at, json!({"part": text_part(&text)})),
            );
            r.message(&text, "completed")
        }
    };
    events.push(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    events.push(
        "response.completed",
        json!({"response": r.object("completed", vec![item])}),
    );
    Answer::Events(events.0)
}

/// A number no other fake (of any process) is likely to pair with `id`.
fn unique(id: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((id, std::process::id()))
}

/// The events written so far, numbered.
#[derive(Default)]
struct Events(Vec<Bytes>);

impl Events {
    fn push(&mut self, kind: &str, mut data: Value) {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.0.len()));
        }
        self.0
            .push(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")));
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// What the answer's objects share.
struct Response {
    id: String,
    item_id: String,
    model: String,
    store: bool,
    previous: Value,
    usage: Option<FakeUsage>,
}

impl Response {
    fn message_item(&self, status: &str, content: Vec<Value>) -> Value {
        json!({"type": "message", "id": self.item_id, "status": status, "role": "assistant",
               "content": content})
    }

    fn message(&self, text: &str, status: &str) -> Value {
        self.message_item(status, vec![text_part(text)])
    }

    fn call(&self, t: &FakeToolCall, status: &str, arguments: &str) -> Value {
        json!({"type": "function_call", "id": self.id.replace("resp_", "fc_"),
               "call_id": "call_fake_1", "name": t.name, "arguments": arguments,
               "status": status})
    }

    fn usage(&self) -> Value {
        let u = self.usage.unwrap_or(FakeUsage {
            prompt_tokens: PROMPT_TOKENS,
            completion_tokens: COMPLETION_TOKENS,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
        });
        json!({"input_tokens": u.prompt_tokens,
               "input_tokens_details": {"cached_tokens": u.cached_tokens},
               "output_tokens": u.completion_tokens,
               "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
               "total_tokens": u.prompt_tokens + u.completion_tokens})
    }

    fn object(&self, status: &str, output: Vec<Value>) -> Value {
        let done = status != "in_progress";
        json!({
            "id": self.id, "object": "response", "created_at": responses::now_unix(),
            "status": status, "background": false, "error": null, "incomplete_details": null,
            "instructions": null, "max_output_tokens": null, "model": self.model,
            "output": output, "parallel_tool_calls": true,
            "previous_response_id": self.previous,
            "reasoning": {"effort": null, "summary": null}, "store": self.store,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled",
            "usage": if done { self.usage() } else { Value::Null },
            "user": null, "metadata": {}
        })
    }
}
