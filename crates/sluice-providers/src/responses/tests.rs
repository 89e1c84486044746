//! Unit tests of the Responses API translation, both directions, streams included.

use super::answer::from_chat;
use super::inbound::{to_chat, Translated};
use super::object::{transcript, Echo};
use super::stream::StreamConverter;
use crate::reframe::Reframe;
use serde_json::{json, Value};

fn chat(body: Value) -> (Value, Translated) {
    let t = to_chat(body.to_string().as_bytes(), None).unwrap();
    (serde_json::from_slice(&t.body).unwrap(), t)
}

fn echo(body: Value) -> Echo {
    chat(body).1.echo
}

#[test]
fn a_string_input_is_one_user_message_after_the_instructions() {
    let (c, t) = chat(
        json!({"model": "m", "input": "hi", "instructions": "Be brief.",
                             "max_output_tokens": 10, "top_p": 0.9, "stream": true}),
    );
    assert_eq!(
        c["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(c["max_tokens"], 10);
    assert_eq!(c["top_p"], 0.9);
    assert_eq!(c["stream_options"], json!({"include_usage": true}));
    assert!(t.stream);
    assert_eq!(t.echo.model, "m");
}

#[test]
fn items_become_chat_messages() {
    let (c, _) = chat(json!({"model": "m", "input": [
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": [
            {"type": "input_text", "text": "Look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,BBBB", "filename": "a.pdf"}
        ]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"a\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "one"}]},
        {"type": "function_call_output", "call_id": "c2", "output": "two"}
    ]}));
    assert_eq!(
        c["messages"],
        json!([
            {"role": "system", "content": "Rules."},
            {"role": "user", "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,BBBB", "filename": "a.pdf"}}
            ]},
            {"role": "assistant", "content": "Calling.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{\"a\":1}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"}
        ])
    );
}

#[test]
fn tools_choice_and_formats_map_to_chat() {
    let (c, t) = chat(json!({"model": "m", "input": "x",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": "required", "parallel_tool_calls": true,
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "reasoning": {"effort": "high", "summary": "auto"}}));
    assert_eq!(
        c["tools"],
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    );
    assert_eq!(c["tool_choice"], "required");
    assert_eq!(c["parallel_tool_calls"], true);
    assert_eq!(c["response_format"], json!({"type": "json_object"}));
    assert_eq!(c["verbosity"], "low");
    assert_eq!(c["reasoning_effort"], "high");
    assert_eq!(t.echo.summary.as_deref(), Some("auto"));
}

#[test]
fn what_cannot_be_honoured_is_refused_naming_the_field() {
    let refused = |extra: Value| {
        let mut body = json!({"model": "m", "input": "x"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        to_chat(body.to_string().as_bytes(), None).unwrap_err()
    };
    // Built-in tools are for native upstreams: the chat body leaves them out, and a
    // translated try gets the 400 that names them.
    let t = to_chat(
        json!({"model": "m", "input": "x",
               "tools": [{"type": "function", "name": "f"}, {"type": "code_interpreter"}]})
        .to_string()
        .as_bytes(),
        None,
    )
    .unwrap();
    let chat: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(chat["tools"].as_array().unwrap().len(), 1, "{chat}");
    let e = t.native_only.unwrap();
    assert_eq!(e.param, Some("tools"));
    assert!(
        e.message.starts_with("tools[1].type: `code_interpreter`"),
        "{}",
        e.message
    );
    let e = refused(json!({"previous_response_id": "resp_x"}));
    assert_eq!(e.param, Some("previous_response_id"));
    let e = refused(
        json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
    );
    assert!(
        e.message.contains("input[0].content[0].image_url"),
        "{}",
        e.message
    );
    let e = refused(json!({"background": true}));
    assert_eq!(e.param, Some("background"));
    // A malformed known field is still the request's fault.
    let e = refused(json!({"max_output_tokens": "many"}));
    assert!(e.message.contains("invalid type"), "{}", e.message);
}

/// Fields this translation does not know (the API's newer ones, a reusable `prompt`) are
/// for native upstreams: left out of the chat body, and a translated try's 400 names one.
#[test]
fn unknown_fields_are_native_only() {
    let body = json!({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"},
                      "max_tool_calls": 3, "temperature": 0.5});
    let t = to_chat(body.to_string().as_bytes(), None).unwrap();
    let chat: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(chat["temperature"], 0.5);
    assert_eq!(chat["messages"][0]["content"], "x");
    assert!(chat.get("prompt").is_none() && chat.get("max_tool_calls").is_none());
    let e = t.native_only.unwrap();
    assert!(
        e.message
            .starts_with("`max_tool_calls` is not supported through chat"),
        "{}",
        e.message
    );
    // Without `input` (a `prompt` can stand for it), only a native upstream can answer.
    let t = to_chat(br#"{"model":"m","prompt":{"id":"pmpt_1"}}"#, None).unwrap();
    assert!(t.native_only.unwrap().message.contains("`prompt`"));
    let t = to_chat(br#"{"model":"m"}"#, None).unwrap();
    assert_eq!(t.native_only.unwrap().param, Some("input"));
    // Not an object: still the request's fault.
    assert!(to_chat(b"[1]", None).is_err());
}

#[test]
fn a_whole_answer_becomes_a_response() {
    let body = json!({"id": "chatcmpl-abc", "created": 5, "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "Hi", "refusal": null,
                    "tool_calls": [{"id": "call_1", "type": "function",
                                    "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4,
                  "prompt_tokens_details": {"cached_tokens": 3},
                  "completion_tokens_details": {"reasoning_tokens": 2}}});
    let e = echo(json!({"model": "m", "input": "x", "metadata": {"k": "v"}}));
    let v: Value =
        serde_json::from_slice(&from_chat(body.to_string().as_bytes(), &e).unwrap().body).unwrap();
    assert_eq!(v["id"], e.id);
    assert!(e.id.starts_with("resp_") && e.id.len() == 37, "{}", e.id);
    assert_eq!(v["store"], true);
    assert_eq!(v["created_at"], 5);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["incomplete_details"], Value::Null);
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["tools"], json!([]));
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(
        v["output"][0]["content"][0],
        json!({"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []})
    );
    assert_eq!(
        v["output"][1],
        json!({"type": "function_call", "id": format!("fc_{}_1", &e.id[5..]), "call_id": "call_1", "name": "f",
               "arguments": "{\"a\":1}", "status": "completed"})
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 3},
               "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 2},
               "total_tokens": 14})
    );
}

#[test]
fn refusals_and_content_filters_end_incomplete_or_refused() {
    let body = json!({"id": "chatcmpl-r", "choices": [{"message": {"content": null,
        "refusal": "I can't."}, "finish_reason": "content_filter"}]});
    let e = echo(json!({"model": "m", "input": "x"}));
    let v: Value =
        serde_json::from_slice(&from_chat(body.to_string().as_bytes(), &e).unwrap().body).unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "content_filter");
    assert_eq!(
        v["output"][0]["content"][0],
        json!({"type": "refusal", "refusal": "I can't."})
    );
    assert_eq!(v["output_text"], "");
}

/// Feeds chat chunks (data payloads) to a converter; returns the events' data.
fn convert(chunks: &[Value], done: bool) -> Vec<Value> {
    let mut c = StreamConverter::new(echo(json!({"model": "m", "input": "x"})));
    let mut out = Vec::new();
    for chunk in chunks {
        c.on_event(chunk.to_string().as_bytes(), &mut out);
    }
    if done {
        c.on_event(b"[DONE]", &mut out);
    } else {
        c.finish_stream(&mut out);
    }
    assert!(c.is_done());
    let text = String::from_utf8(out).unwrap();
    let evs: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["sequence_number"], i);
    }
    evs
}

fn types(evs: &[Value]) -> Vec<&str> {
    evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn delta(d: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-s", "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})
}

fn call(index: u64, id: Option<&str>, arguments: &str) -> Value {
    let mut c = json!({"index": index, "function": {"arguments": arguments}});
    if let Some(id) = id {
        c["id"] = json!(id);
        c["function"]["name"] = json!(format!("f{index}"));
    }
    delta(json!({ "tool_calls": [c] }), Value::Null)
}

#[test]
fn text_then_parallel_tool_calls_stream_as_items_each_done_when_the_next_starts() {
    let evs = convert(
        &[
            delta(json!({"role": "assistant", "content": "Let"}), Value::Null),
            delta(json!({"content": " me"}), Value::Null),
            call(0, Some("c0"), ""),
            call(0, None, "{\"a\""),
            call(0, None, ":1}"),
            call(1, Some("c1"), "{}"),
            delta(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-s", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
        ],
        true,
    );
    assert_eq!(
        types(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert!(evs[0]["response"]["id"]
        .as_str()
        .unwrap()
        .starts_with("resp_"));
    assert_eq!(evs[6]["text"], "Let me");
    assert_eq!(evs[12]["output_index"], 1);
    assert_eq!(evs[12]["arguments"], "{\"a\":1}");
    assert_eq!(evs[13]["item"]["status"], "completed");
    assert_eq!(evs[14]["output_index"], 2);
    assert_eq!(evs[16]["arguments"], "{}");
    let done = &evs[18]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"].as_array().unwrap().len(), 3);
    assert_eq!(done["output"][2]["call_id"], "c1");
    assert_eq!(done["usage"]["total_tokens"], 7);
}

/// Interleaved thinking (Anthropic's between tool calls): reasoning, a call, reasoning again,
/// text, a call. Every item is added at the next index once the one before is done, and
/// every event in between names the open item (and its last part).
#[test]
fn interleaved_reasoning_text_and_calls_are_numbered_in_order() {
    let think = |t: &str| delta(json!({ "reasoning_content": t }), Value::Null);
    let evs = convert(
        &[
            think("First Paris."),
            call(0, Some("c0"), "{\"city\":\"Paris\"}"),
            think("Now Rome."),
            delta(json!({"content": "Checking Rome."}), Value::Null),
            call(1, Some("c1"), "{\"city\":"),
            call(1, None, "\"Rome\"}"),
            delta(json!({}), json!("tool_calls")),
        ],
        true,
    );
    let mut open: Option<u64> = None;
    let mut added = 0;
    for e in &evs[2..evs.len() - 1] {
        let kind = e["type"].as_str().unwrap();
        let index = e["output_index"].as_u64().unwrap();
        match kind {
            "response.output_item.added" => {
                assert_eq!((open, index), (None, added), "{e}");
                open = Some(index);
                added += 1;
            }
            "response.output_item.done" => {
                assert_eq!(open.take(), Some(index), "{e}");
            }
            _ => assert_eq!(open, Some(index), "{e}"),
        }
        for key in ["content_index", "summary_index"] {
            assert!(e.get(key).is_none_or(|i| i == 0), "{e}");
        }
    }
    assert_eq!((open, added), (None, 5));
    let output = &evs[evs.len() - 1]["response"]["output"];
    let kinds: Vec<&str> = output
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "reasoning",
            "function_call",
            "reasoning",
            "message",
            "function_call"
        ]
    );
    assert_eq!(output[4]["arguments"], "{\"city\":\"Rome\"}");
}

/// An upstream that starts a second call before the first one's arguments are complete, then
/// goes back to the first: the second waits, so each call's items and `.done` events come
/// whole, one call after the other, and none is done twice.
#[test]
fn a_call_that_starts_before_the_open_one_is_complete_waits_for_it() {
    let evs = convert(
        &[
            call(0, Some("c0"), "{\"a\""),
            call(1, Some("c1"), "{}"),
            call(0, None, ":1}"),
            delta(json!({}), json!("tool_calls")),
        ],
        true,
    );
    assert_eq!(
        types(&evs)[2..],
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(
        (&evs[4]["output_index"], &evs[4]["delta"]),
        (&json!(0), &json!(":1}"))
    );
    assert_eq!(evs[5]["arguments"], "{\"a\":1}");
    assert_eq!(
        (&evs[7]["output_index"], &evs[7]["item"]["call_id"]),
        (&json!(1), &json!("c1"))
    );
    assert_eq!(evs[9]["arguments"], "{}");
    let output = &evs[11]["response"]["output"];
    assert_eq!(
        (&output[0]["arguments"], &output[1]["arguments"]),
        (&json!("{\"a\":1}"), &json!("{}"))
    );
}

#[test]
fn a_refusal_streams_as_a_refusal_part() {
    let evs = convert(&[delta(json!({"refusal": "No."}), json!("stop"))], false);
    let t = types(&evs);
    assert!(t.contains(&"response.refusal.delta") && t.contains(&"response.refusal.done"));
    assert_eq!(
        evs.last().unwrap()["response"]["output"][0]["content"][0]["refusal"],
        "No."
    );
}

#[test]
fn an_error_midway_fails_the_response() {
    let evs = convert(
        &[
            delta(json!({"content": "Hi"}), Value::Null),
            json!({"error": {"message": "upstream broke", "type": "upstream_error", "code": "stream_interrupted"}}),
        ],
        false,
    );
    let last = evs.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(
        last["response"]["error"],
        json!({"code": "stream_interrupted", "message": "upstream broke"})
    );
}

#[test]
fn a_stored_conversation_goes_before_the_input_and_is_kept_with_the_answer() {
    let history = br#"[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]"#;
    let body = json!({"model": "m", "instructions": "Be brief.", "input": "Again",
                      "previous_response_id": "resp_1"});
    let t = to_chat(body.to_string().as_bytes(), Some(history)).unwrap();
    let c: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(
        c["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}])
    );
    assert_eq!(t.echo.previous_response_id.as_deref(), Some("resp_1"));
    let input = t.input.unwrap();
    let answer = json!({"choices": [{"message": {"content": "Bye"}, "finish_reason": "stop"}]});
    let whole = from_chat(answer.to_string().as_bytes(), &t.echo).unwrap();
    let kept: Value = serde_json::from_slice(&transcript(&input, &whole.assistant)).unwrap();
    assert_eq!(
        kept,
        json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
               {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Bye"}])
    );
    assert_eq!(transcript(b"[]", b"{}"), b"[{}]");
    let raw = body.to_string();
    let read = super::inbound::read(raw.as_bytes()).unwrap();
    assert_eq!(read.previous_response_id().as_deref(), Some("resp_1"));
    // With a field the translation does not know, read again without it.
    let newer = json!({"model": "m", "input": "x", "previous_response_id": "resp_2",
                       "some_new_field": 1});
    let raw = newer.to_string();
    let read = super::inbound::read(raw.as_bytes()).unwrap();
    assert_eq!(read.previous_response_id().as_deref(), Some("resp_2"));
    let t = read.to_chat(Some(b"[]")).unwrap();
    assert!(t.native_only.is_some());
    let unstored = json!({"model": "m", "input": "x", "store": false});
    assert!(to_chat(unstored.to_string().as_bytes(), None)
        .unwrap()
        .input
        .is_none());
    let e = to_chat(body.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(e.param, Some("previous_response_id"));
}

#[test]
fn a_streamed_answer_is_handed_over_for_keeping() {
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let k = std::sync::Arc::clone(&kept);
    let mut c = StreamConverter::new(echo(json!({"model": "m", "input": "x"}))).on_done(Box::new(
        move |d| *k.lock().unwrap() = vec![d.assistant, d.response],
    ));
    let mut out = Vec::new();
    let call = json!({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f", "arguments": "{}"}}]});
    c.on_event(
        delta(call, json!("tool_calls")).to_string().as_bytes(),
        &mut out,
    );
    c.on_event(b"[DONE]", &mut out);
    let kept = kept.lock().unwrap();
    let m: Value = serde_json::from_slice(&kept[0]).unwrap();
    assert_eq!(
        m,
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c0", "type": "function",
               "function": {"name": "f", "arguments": "{}"}}]})
    );
    let r: Value = serde_json::from_slice(&kept[1]).unwrap();
    assert_eq!(
        (r["object"].as_str(), r["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    assert_eq!(r["output"][0]["call_id"], "c0");
}

#[test]
fn reasoning_content_becomes_a_reasoning_item_with_a_summary() {
    let body = json!({"id": "chatcmpl-r", "choices": [{"message": {"content": "Yes.",
        "reasoning_content": "Hm."}, "finish_reason": "stop"}]});
    let e = echo(json!({"model": "m", "input": "x"}));
    let v: Value =
        serde_json::from_slice(&from_chat(body.to_string().as_bytes(), &e).unwrap().body).unwrap();
    assert_eq!(
        v["output"][0],
        json!({"type": "reasoning", "id": format!("rs_{}_0", &e.id[5..]),
               "summary": [{"type": "summary_text", "text": "Hm."}]})
    );
    assert_eq!(v["output"][1]["id"], format!("msg_{}_1", &e.id[5..]));
    assert_eq!(v["output_text"], "Yes.");
    let evs = convert(
        &[
            delta(
                json!({"role": "assistant", "reasoning_content": "H"}),
                Value::Null,
            ),
            delta(json!({"reasoning_content": "m."}), Value::Null),
            delta(json!({"content": "Yes."}), json!("stop")),
        ],
        true,
    );
    assert_eq!(
        types(&evs)[2..9],
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
        ]
    );
    assert_eq!(evs[4]["summary_index"], 0);
    assert_eq!(evs[6]["text"], "Hm.");
    assert_eq!(evs[8]["item"]["summary"][0]["text"], "Hm.");
    assert_eq!(evs[9]["output_index"], 1);
    let last = evs.last().unwrap();
    assert_eq!(last["response"]["output"][0]["type"], "reasoning");
}

#[test]
fn signed_thinking_rides_in_encrypted_content_and_goes_back() {
    let blocks = json!([{"type": "thinking", "thinking": "Hm.", "signature": "sig1"}]);
    let body = json!({"id": "chatcmpl-r", "choices": [{"finish_reason": "tool_calls", "message": {
        "content": null, "reasoning_content": "Hm.", "thinking_blocks": blocks,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]});
    let asked =
        echo(json!({"model": "m", "input": "x", "include": ["reasoning.encrypted_content"]}));
    let whole = from_chat(body.to_string().as_bytes(), &asked).unwrap();
    let v: Value = serde_json::from_slice(&whole.body).unwrap();
    let encrypted = v["output"][0]["encrypted_content"]
        .as_str()
        .unwrap()
        .to_owned();
    let decoded = |e: &str| -> Value {
        serde_json::from_str(e.strip_prefix("sluice-thinking:").unwrap()).unwrap()
    };
    assert_eq!(decoded(&encrypted), blocks);
    // Not asked: not sent, but the stored conversation keeps it.
    let plain = from_chat(
        body.to_string().as_bytes(),
        &echo(json!({"model": "m", "input": "x"})),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&plain.body).unwrap();
    assert!(v["output"][0].get("encrypted_content").is_none());
    let stored: Value = serde_json::from_slice(&plain.assistant).unwrap();
    assert_eq!(stored["thinking_blocks"], blocks);
    // Sent back, it goes with the assistant's turn.
    let (chat_body, _) = chat(json!({"model": "m", "input": [
        {"role": "user", "content": "x"},
        {"type": "reasoning", "summary": [], "encrypted_content": encrypted},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"}]}));
    assert_eq!(chat_body["messages"][1]["thinking_blocks"], blocks);
    assert_eq!(chat_body["messages"][1]["tool_calls"][0]["id"], "call_1");
    // Streamed: the signature delta completes the block.
    let mut c = StreamConverter::new(asked);
    let mut out = Vec::new();
    for d in [
        json!({"reasoning_content": "Hm."}),
        json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig1"}]}),
        json!({"content": "Yes."}),
    ] {
        c.on_event(delta(d, Value::Null).to_string().as_bytes(), &mut out);
    }
    c.on_event(b"[DONE]", &mut out);
    let text = String::from_utf8(out).unwrap();
    let done: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|e| e["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(
        decoded(done["item"]["encrypted_content"].as_str().unwrap()),
        blocks
    );
}
