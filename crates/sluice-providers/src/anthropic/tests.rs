//! Translation tests against fixtures written from Anthropic's documented formats
//! (`crates/sluice-testkit/fixtures/anthropic/`, see its README).

use super::*;
use crate::test_support::{essence, generate, Gen};
use serde_json::json;

const RESPONSE_TOOL_USE: &str =
    include_str!("../../../sluice-testkit/fixtures/anthropic/response_tool_use.json");
const RESPONSE_CACHE: &str =
    include_str!("../../../sluice-testkit/fixtures/anthropic/response_cache.json");
const STREAM_TEXT: &str =
    include_str!("../../../sluice-testkit/fixtures/anthropic/stream_text.sse");
const STREAM_TOOL_USE: &str =
    include_str!("../../../sluice-testkit/fixtures/anthropic/stream_tool_use.sse");
const ERROR_OVERLOADED: &str =
    include_str!("../../../sluice-testkit/fixtures/anthropic/error_overloaded.json");

const OPTIONS: RequestOptions = RequestOptions {
    default_max_tokens: 4096,
    cache_system_min_bytes: None,
};

fn translate(req: serde_json::Value, options: RequestOptions) -> serde_json::Value {
    let req: ChatCompletionRequest = serde_json::from_value(req).unwrap();
    serde_json::from_slice(&to_request(&req, "claude-3-5-sonnet-20241022", options).unwrap())
        .unwrap()
}

#[test]
fn request_maps_system_turns_tools_and_parameters() {
    let out = translate(
        json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, cloudy"},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": ["END"],
            "user": "u-42",
            "stream": true
        }),
        OPTIONS,
    );
    assert_eq!(out["model"], "claude-3-5-sonnet-20241022");
    assert_eq!(out["system"], "You are terse.\n\nAnswer in French.");
    assert_eq!(
        out["max_tokens"], 4096,
        "Anthropic requires max_tokens: the default fills in"
    );
    assert_eq!(out["temperature"], 1.0, "clamped to Anthropic's range");
    assert_eq!(out["top_p"], 0.9);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["stream"], true);
    assert_eq!(out["metadata"]["user_id"], "u-42");
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        out["tools"][0]["input_schema"]["properties"]["location"]["type"],
        "string"
    );
    let msgs = out["messages"].as_array().unwrap();
    // user, assistant, user (tool result merged with the next user turn).
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(
        msgs[0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    assert_eq!(
        msgs[0]["content"][2]["source"],
        json!({"type": "url", "url": "https://example.com/cat.jpg"})
    );
    assert_eq!(
        msgs[1]["content"][1],
        json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}})
    );
    assert_eq!(
        msgs[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, cloudy"})
    );
    assert_eq!(
        msgs[2]["content"][1],
        json!({"type": "text", "text": "Thanks"})
    );
}

#[test]
fn request_marks_long_system_prompts_for_caching() {
    let long = "x".repeat(5000);
    let out = translate(
        json!({"model": "c", "max_tokens": 10, "messages": [{"role": "system", "content": long}, {"role": "user", "content": "hi"}]}),
        RequestOptions {
            cache_system_min_bytes: Some(4096),
            ..OPTIONS
        },
    );
    assert_eq!(
        out["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(out["max_tokens"], 10);
    let short = translate(
        json!({"model": "c", "messages": [{"role": "system", "content": "short"}, {"role": "user", "content": "hi"}]}),
        RequestOptions {
            cache_system_min_bytes: Some(4096),
            ..OPTIONS
        },
    );
    assert_eq!(short["system"], "short");
}

/// Chat's structured output becomes Anthropic's (`output_config.format`); JSON mode and text,
/// which have no counterpart, send none; a schema that is not an object, or another type, is
/// refused naming the field.
#[test]
fn request_maps_a_json_schema_response_format_to_output_config() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false});
    let ask = |format: serde_json::Value| json!({"model": "c", "messages": [{"role": "user", "content": "Where?"}], "response_format": format});
    let out = translate(
        ask(
            json!({"type": "json_schema", "json_schema": {"name": "place", "strict": true, "schema": schema}}),
        ),
        OPTIONS,
    );
    assert_eq!(
        out["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    for format in [json!({"type": "json_object"}), json!({"type": "text"})] {
        assert!(translate(ask(format), OPTIONS)
            .get("output_config")
            .is_none());
    }
    assert!(translate(
        json!({"model": "c", "messages": [{"role": "user", "content": "Where?"}]}),
        OPTIONS
    )
    .get("output_config")
    .is_none());
    for format in [
        json!({"type": "json_schema", "json_schema": {"name": "x"}}),
        json!({"type": "json_schema", "json_schema": {"schema": "object"}}),
        json!({"type": "yaml"}),
    ] {
        let req: ChatCompletionRequest = serde_json::from_value(ask(format.clone())).unwrap();
        let e = to_request(&req, "c", OPTIONS).unwrap_err();
        assert!(e.0.contains("`response_format"), "{format}: {}", e.0);
    }
}

#[test]
fn request_errors_are_clear() {
    let req: ChatCompletionRequest = serde_json::from_value(
        json!({"model": "c", "messages": [{"role": "system", "content": "only system"}]}),
    )
    .unwrap();
    assert!(to_request(&req, "c", OPTIONS)
        .unwrap_err()
        .0
        .contains("at least one"));
    let req: ChatCompletionRequest = serde_json::from_value(json!({"model": "c", "messages": [{"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]})).unwrap();
    assert!(to_request(&req, "c", OPTIONS)
        .unwrap_err()
        .0
        .contains("not JSON"));
}

#[test]
fn response_with_tool_use() {
    let (body, usage) = from_response(RESPONSE_TOOL_USE.as_bytes(), "claude").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["content"],
        "I need to call the get_weather function."
    );
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: serde_json::Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (472, 89));
    assert_eq!(v["usage"]["total_tokens"], 561);
}

#[test]
fn response_usage_counts_cache_writes_and_reads() {
    let (body, usage) = from_response(RESPONSE_CACHE.as_bytes(), "claude").unwrap();
    assert_eq!(usage.prompt_tokens, 21 + 188_086);
    assert_eq!(usage.cached_prompt_tokens, 0);
    assert_eq!(usage.completion_tokens, 393);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

fn run_stream(
    fixture: &str,
    include_usage: bool,
) -> (Vec<serde_json::Value>, bool, StreamTranslator) {
    let mut t = StreamTranslator::new("claude", include_usage);
    let mut out = Vec::new();
    let mut done = false;
    for event in fixture.split("\n\n") {
        if let Some(data) = sluice_types::sse::event_data(event.as_bytes()) {
            done |= t.on_event(&data, &mut out) == StreamStep::Done;
        }
    }
    let text = String::from_utf8(out).unwrap();
    let events = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| {
            if d == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect();
    (events, done, t)
}

#[test]
fn stream_of_text() {
    let (events, done, t) = run_stream(STREAM_TEXT, true);
    assert!(done);
    assert_eq!(
        events[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(
        events[0]["id"],
        "chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
    );
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello!");
    let finish: Vec<_> = events
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(25), Some(15))
    );
    assert_eq!(events.last().unwrap(), &json!("[DONE]"));
    assert_eq!(t.usage().completion_tokens, 15);
    // Without include_usage there is no usage chunk, but usage is still counted.
    let (events, _, t) = run_stream(STREAM_TEXT, false);
    assert!(events.iter().all(|e| e.get("usage").is_none()));
    assert_eq!(t.usage().prompt_tokens, 25);
}

#[test]
fn stream_of_tool_use_with_argument_deltas() {
    let (events, done, _) = run_stream(STREAM_TOOL_USE, false);
    assert!(done);
    let calls: Vec<&serde_json::Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&args).unwrap(),
        json!({"location": "San Francisco, CA"})
    );
    let finish: Vec<_> = events
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
}

#[test]
fn stream_error_event() {
    let mut t = StreamTranslator::new("claude", false);
    let mut out = Vec::new();
    let step = t.on_event(
        br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
        &mut out,
    );
    assert_eq!(step, StreamStep::Error("Overloaded".into()));
}

#[test]
fn error_body_maps_to_a_retryable_gateway_error() {
    let e = crate::error::from_response("anthropic", 529, None, ERROR_OVERLOADED.as_bytes());
    assert_eq!(
        e.message(),
        "upstream `anthropic` failed with status 529: Overloaded"
    );
    assert_eq!(e.status_code(), 502);
    assert!(e.is_retryable());
    let e = crate::error::from_response("anthropic", 400, None, br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: field required"}}"#);
    assert_eq!(
        (e.status_code(), e.error_type()),
        (400, "invalid_request_error")
    );
    assert!(!e.is_retryable());
}

#[test]
fn round_trip_through_anthropic_keeps_what_both_formats_express() {
    let mut g = Gen(0x5eed);
    for case in 0..500 {
        let original: ChatCompletionRequest = serde_json::from_value(generate(&mut g)).unwrap();
        // OpenAI -> Anthropic (outbound adapter) -> OpenAI (inbound `/v1/messages`).
        let anthropic_body = to_request(&original, "m", OPTIONS).unwrap();
        let (back, model, _) = inbound::to_openai(&anthropic_body).unwrap();
        assert_eq!(model, "m");
        let back: ChatCompletionRequest = serde_json::from_slice(&back).unwrap();
        assert_eq!(
            essence(&back),
            essence(&original),
            "case {case}: {}",
            String::from_utf8_lossy(&anthropic_body)
        );
    }
}

#[test]
fn thinking_blocks_become_reasoning_content() {
    let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
        "content": [{"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xx"},
                    {"type": "text", "text": "Yes."}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 9}});
    let (out, _) = from_response(body.to_string().as_bytes(), "m").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let message = &v["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Let me see.");
    assert_eq!(message["content"], "Yes.");
    let stream = [
        json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_stop"}),
    ]
    .map(|e| format!("event: x\ndata: {e}"))
    .join("\n\n");
    let (events, done, _) = run_stream(&stream, false);
    assert!(done);
    let deltas: Vec<&serde_json::Value> = events
        .iter()
        .map(|e| &e["choices"][0]["delta"])
        .filter(|d| d.get("reasoning_content").is_some())
        .collect();
    assert_eq!(deltas, [&json!({"reasoning_content": "Let me"})]);
}

#[test]
fn reasoning_effort_becomes_a_thinking_budget_below_max_tokens() {
    let wire = translate(
        json!({"model": "m", "max_tokens": 8000, "reasoning_effort": "medium",
               "messages": [{"role": "user", "content": "hi"}]}),
        OPTIONS,
    );
    assert_eq!(
        wire["thinking"],
        json!({"type": "enabled", "budget_tokens": 4096})
    );
    let wire = translate(
        json!({"model": "m", "max_tokens": 2000, "reasoning_effort": "high",
               "messages": [{"role": "user", "content": "hi"}]}),
        OPTIONS,
    );
    assert_eq!(wire["thinking"]["budget_tokens"], 1999);
    let none = translate(
        json!({"model": "m", "reasoning_effort": "none", "messages": [{"role": "user", "content": "hi"}]}),
        OPTIONS,
    );
    assert!(none.get("thinking").is_none());
    let req: ChatCompletionRequest =
        serde_json::from_value(json!({"model": "m", "max_tokens": 500,
        "reasoning_effort": "low", "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap();
    let err = to_request(&req, "c", OPTIONS).unwrap_err();
    assert!(err.0.contains("max_tokens"), "{}", err.0);
}

fn messages_stream(chunks: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut c = inbound::StreamConverter::new("m");
    let mut out = Vec::new();
    for chunk in chunks {
        c.on_event(chunk.to_string().as_bytes(), &mut out);
    }
    c.on_event(b"[DONE]", &mut out);
    String::from_utf8(out)
        .unwrap()
        .split("\n\n")
        .filter_map(|e| e.lines().nth(1)?.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn inbound_reasoning_becomes_a_thinking_block_and_refusals_text() {
    let chunk = |delta: serde_json::Value| json!({"id": "chatcmpl-msg_7", "choices": [{"index": 0, "delta": delta}]});
    let evs = messages_stream(&[
        chunk(json!({"role": "assistant", "reasoning_content": "Hm."})),
        chunk(json!({"content": "No."})),
        chunk(json!({"refusal": " Sorry."})),
    ]);
    let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(evs[0]["message"]["id"], "msg_7");
    assert_eq!(
        evs[1]["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        evs[2]["delta"],
        json!({"type": "thinking_delta", "thinking": "Hm."})
    );
    assert_eq!(
        evs[6]["delta"],
        json!({"type": "text_delta", "text": " Sorry."})
    );
    let whole = json!({"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "refusal": "No.", "reasoning_content": "Hm."}}]});
    let out: serde_json::Value =
        serde_json::from_slice(&inbound::from_openai(whole.to_string().as_bytes(), "m").unwrap())
            .unwrap();
    assert_eq!(
        out["content"],
        json!([{"type": "thinking", "thinking": "Hm.", "signature": ""}, {"type": "text", "text": "No."}])
    );
    assert_eq!(out["id"], "msg_1");
}

/// Interleaved thinking between tool calls: each block stops before the next starts, at
/// the next index, and every delta is for the open block.
#[test]
fn inbound_interleaved_thinking_text_and_calls_are_blocks_in_order() {
    let chunk = |delta: serde_json::Value| json!({"id": "chatcmpl-i", "choices": [{"index": 0, "delta": delta}]});
    let call = |index: u64, id: Option<&str>, args: &str| {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["function"]["name"] = json!("f");
        }
        chunk(json!({ "tool_calls": [c] }))
    };
    let evs = messages_stream(&[
        chunk(json!({"reasoning_content": "First Paris."})),
        call(0, Some("c0"), "{}"),
        chunk(json!({"reasoning_content": "Now Rome."})),
        chunk(json!({"content": "Checking."})),
        call(1, Some("c1"), "{\"a\":"),
        call(1, None, "1}"),
    ]);
    let mut open: Option<u64> = None;
    let mut started = Vec::new();
    for e in &evs[1..evs.len() - 2] {
        let index = e["index"].as_u64().unwrap();
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!((open, index), (None, started.len() as u64), "{e}");
                open = Some(index);
                started.push(e["content_block"]["type"].as_str().unwrap().to_owned());
            }
            "content_block_stop" => assert_eq!(open.take(), Some(index), "{e}"),
            _ => assert_eq!(open, Some(index), "{e}"),
        }
    }
    assert_eq!(open, None);
    assert_eq!(
        started,
        ["thinking", "tool_use", "thinking", "text", "tool_use"]
    );
}

/// An upstream that starts both calls before streaming their arguments, interleaved: each
/// `tool_use` block is still whole (start, its input's pieces, stop) before the next starts,
/// and each block's input is its call's arguments.
#[test]
fn inbound_calls_started_together_are_blocks_one_after_the_other() {
    let chunk = |delta: serde_json::Value| json!({"id": "chatcmpl-p", "choices": [{"index": 0, "delta": delta}]});
    let call = |index: u64, id: Option<&str>, args: &str| {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["function"]["name"] = json!(format!("f{index}"));
        }
        chunk(json!({ "tool_calls": [c] }))
    };
    let evs = messages_stream(&[
        call(0, Some("c0"), ""),
        call(1, Some("c1"), ""),
        call(0, None, "{\"city\":"),
        call(1, None, "{\"city\":"),
        call(0, None, "\"Paris\"}"),
        call(1, None, "\"Rome\"}"),
        chunk(json!({"content": "Done."})),
    ]);
    let mut open: Option<u64> = None;
    let mut blocks: Vec<(String, String)> = Vec::new();
    for e in &evs[1..evs.len() - 2] {
        let index = e["index"].as_u64().unwrap();
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!((open, index), (None, blocks.len() as u64), "{e}");
                open = Some(index);
                let name = e["content_block"]["name"].as_str().unwrap_or("text");
                blocks.push((name.to_owned(), String::new()));
            }
            "content_block_stop" => assert_eq!(open.take(), Some(index), "{e}"),
            _ => {
                assert_eq!(open, Some(index), "{e}");
                let piece = e["delta"]["partial_json"].as_str().unwrap_or_default();
                blocks[index as usize].1.push_str(piece);
            }
        }
    }
    assert_eq!(
        blocks,
        [
            ("f0".to_owned(), "{\"city\":\"Paris\"}".to_owned()),
            ("f1".to_owned(), "{\"city\":\"Rome\"}".to_owned()),
            ("text".to_owned(), String::new()),
        ]
    );
}

#[test]
fn inbound_usage_is_the_estimate_until_the_upstream_counts() {
    let chunk = |delta: serde_json::Value, usage: serde_json::Value| json!({"id": "chatcmpl-u", "choices": [{"index": 0, "delta": delta}], "usage": usage});
    let run = |chunks: &[serde_json::Value]| {
        let mut c = inbound::StreamConverter::new("m").input_estimate(7);
        let mut out = Vec::new();
        for chunk in chunks {
            c.on_event(chunk.to_string().as_bytes(), &mut out);
        }
        c.on_event(b"[DONE]", &mut out);
        let evs: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.lines().nth(1)?.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let start = evs[0]["message"]["usage"]["input_tokens"].clone();
        let delta = evs.iter().find(|e| e["type"] == "message_delta").unwrap();
        (start, delta["usage"].clone())
    };
    let counted = json!({"prompt_tokens": 40, "completion_tokens": 3});
    // Counted at the end (OpenAI): the estimate first, the count last.
    let (start, last) = run(&[
        chunk(json!({"role": "assistant", "content": "Hi"}), json!(null)),
        json!({"id": "chatcmpl-u", "choices": [], "usage": counted}),
    ]);
    assert_eq!((start, &last["input_tokens"]), (json!(7), &json!(40)));
    // Counted on the first chunk: the count throughout.
    let (start, _) = run(&[chunk(json!({"content": "Hi"}), counted.clone())]);
    assert_eq!(start, 40);
    // Never counted: the estimate stands in message_delta too (the SDKs take its figure).
    let (start, last) = run(&[chunk(json!({"content": "Hi"}), json!(null))]);
    assert_eq!((start, &last["input_tokens"]), (json!(7), &json!(7)));
}

#[test]
fn inbound_stream_ends_with_one_error_event() {
    let mut c = inbound::StreamConverter::new("m");
    let mut out = Vec::new();
    let err = json!({"error": {"message": "boom", "type": "upstream_error"}}).to_string();
    c.on_event(err.as_bytes(), &mut out);
    c.on_event(err.as_bytes(), &mut out);
    c.on_event(b"[DONE]", &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("event: ").count(), 1, "{text}");
}

#[test]
fn inbound_thinking_becomes_reasoning_effort() {
    let body = |thinking: serde_json::Value| {
        json!({"model": "m", "max_tokens": 9000, "thinking": thinking,
               "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
    };
    let effort = |thinking| {
        let (out, _, _) = inbound::to_openai(body(thinking).as_bytes()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()["reasoning_effort"].clone()
    };
    assert_eq!(
        effort(json!({"type": "enabled", "budget_tokens": 1024})),
        "low"
    );
    assert_eq!(
        effort(json!({"type": "enabled", "budget_tokens": 5000})),
        "medium"
    );
    assert_eq!(effort(json!({"type": "disabled"})), serde_json::Value::Null);
    assert!(inbound::to_openai(body(json!({"type": "sometimes"})).as_bytes()).is_err());
}

#[test]
fn inbound_structured_output_becomes_a_json_schema_format() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let chat = |extra: serde_json::Value| {
        let mut body = json!({"model": "m", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "f", "strict": true, "input_schema": {"type": "object"}},
                      {"name": "g"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        inbound::to_openai(body.to_string().as_bytes())
            .map(|(out, _, _)| serde_json::from_slice::<serde_json::Value>(&out).unwrap())
    };
    let want = json!({"type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": true}});
    let ga = chat(json!({"output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}}))
        .unwrap();
    assert_eq!(ga["response_format"], want);
    assert_eq!(ga["tools"][0]["function"]["strict"], true);
    assert!(ga["tools"][1]["function"].get("strict").is_none());
    let beta = chat(json!({"output_format": {"type": "json_schema", "schema": schema}})).unwrap();
    assert_eq!(beta["response_format"], want);
    assert!(chat(json!({})).unwrap().get("response_format").is_none());
    assert!(chat(json!({"output_config": {"effort": "low"}}))
        .unwrap()
        .get("response_format")
        .is_none());
    for (bad, at) in [
        (
            json!({"output_config": {"format": {"type": "text"}}}),
            "output_config.format.type",
        ),
        (
            json!({"output_format": {"type": "json_schema"}}),
            "output_format.schema",
        ),
        (
            json!({"output_format": {"type": "json_schema", "schema": "x"}}),
            "output_format.schema",
        ),
    ] {
        let e = chat(bad).unwrap_err();
        assert!(e.0.starts_with(at), "{}", e.0);
    }
}

#[test]
fn cache_writes_reach_a_messages_answer() {
    let body = json!({"id": "msg_1", "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 2}});
    let (chat, _) = from_response(body.to_string().as_bytes(), "m").unwrap();
    let chat_json: serde_json::Value = serde_json::from_slice(&chat).unwrap();
    assert_eq!(chat_json["usage"]["cache_creation_input_tokens"], 5);
    let back: serde_json::Value =
        serde_json::from_slice(&inbound::from_openai(&chat, "m").unwrap()).unwrap();
    assert_eq!(
        back["usage"],
        json!({"input_tokens": 15, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 2})
    );
}

#[test]
fn signed_thinking_round_trips_through_chat() {
    // Anthropic → chat: the signature rides in `thinking_blocks`, whole and streamed.
    let body = json!({"id": "msg_1", "content": [
            {"type": "thinking", "thinking": "Hm.", "signature": "sig1"},
            {"type": "redacted_thinking", "data": "enc"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 9}});
    let (chat, _) = from_response(body.to_string().as_bytes(), "m").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&chat).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["thinking_blocks"],
        json!([{"type": "thinking", "thinking": "Hm.", "signature": "sig1"},
               {"type": "redacted_thinking", "data": "enc"}])
    );
    let stream = [
        json!({"type": "message_start", "message": {"id": "msg_1"}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig1"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_stop"}),
    ]
    .map(|e| format!("event: x\ndata: {e}"))
    .join("\n\n");
    let (events, _, _) = run_stream(&stream, false);
    assert!(
        events.iter().any(|e| e["choices"][0]["delta"]
            == json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig1"}]})),
        "{events:?}"
    );
    // chat → /v1/messages: the blocks come back signed.
    let back: serde_json::Value =
        serde_json::from_slice(&inbound::from_openai(&chat, "m").unwrap()).unwrap();
    assert_eq!(
        back["content"][0],
        json!({"type": "thinking", "thinking": "Hm.", "signature": "sig1"})
    );
    assert_eq!(
        back["content"][1],
        json!({"type": "redacted_thinking", "data": "enc"})
    );
    let evs = messages_stream(&[
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"reasoning_content": "Hm."}}]}),
        json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"thinking_blocks": [
            {"type": "thinking", "thinking": "", "signature": "sig1"}]}}]}),
    ]);
    assert_eq!(
        evs[3]["delta"],
        json!({"type": "signature_delta", "signature": "sig1"})
    );
    assert_eq!(evs[3]["index"], 0);
    // /v1/messages → chat → Anthropic: signed blocks go back first in their turn, unsigned
    // ones are dropped.
    let request = json!({"model": "m", "max_tokens": 2048, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Hm.", "signature": "sig1"},
            {"type": "thinking", "thinking": "unsigned", "signature": ""},
            {"type": "redacted_thinking", "data": "enc"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}]});
    let (chat_request, _, _) = inbound::to_openai(request.to_string().as_bytes()).unwrap();
    let chat_request: serde_json::Value = serde_json::from_slice(&chat_request).unwrap();
    assert_eq!(
        chat_request["messages"][1]["thinking_blocks"],
        json!([{"type": "thinking", "thinking": "Hm.", "signature": "sig1"},
               {"type": "redacted_thinking", "data": "enc"}])
    );
    let wire = translate(chat_request, OPTIONS);
    assert_eq!(
        wire["messages"][1]["content"],
        json!([{"type": "thinking", "thinking": "Hm.", "signature": "sig1"},
               {"type": "redacted_thinking", "data": "enc"},
               {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}])
    );
}
