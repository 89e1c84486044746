//! A chat stream whose tool calls are as tangled as OpenAI-compatible servers make them:
//! calls started before any arguments, arguments interleaved between calls and with text,
//! a call's JSON complete and then more of it, a function without parameters (`""`
//! throughout), arguments that are never JSON, text after the calls. What each call and
//! each piece of text should come out as is [`CALLS`] and [`TEXTS`].

use serde_json::{json, Value};

/// Each call: `id`, function name, its arguments whole.
pub const CALLS: [(&str, &str, &str); 5] = [
    ("c0", "get_weather", "{\"city\":\"Paris\"}\n"),
    ("c1", "get_time", "{\"tz\":\"CET\"}"),
    ("c2", "now", ""),
    ("c3", "lookup", "{\"q\":\"x\"}"),
    ("c4", "raw", "not json"),
];

/// The text pieces, in the order they come out: each between calls, never inside one.
pub const TEXTS: [&str; 3] = ["Let me check.", " One moment.", "Done."];

fn chunk(delta: Value, finish: Value) -> String {
    let c = json!({"id": "chatcmpl-tangled", "object": "chat.completion.chunk", "created": 1,
        "model": "up", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

fn call(index: usize, args: &str) -> String {
    let (id, name, _) = CALLS[index];
    chunk(
        json!({"tool_calls": [{"index": index, "id": id, "type": "function",
            "function": {"name": name, "arguments": args}}]}),
        Value::Null,
    )
}

fn more(index: usize, args: &str) -> String {
    chunk(
        json!({"tool_calls": [{"index": index, "function": {"arguments": args}}]}),
        Value::Null,
    )
}

fn text(t: &str) -> String {
    chunk(json!({"content": t}), Value::Null)
}

/// The stream, `[DONE]` included; `never_json` leaves out the call whose arguments are not
/// JSON (the Anthropic SDK refuses such a call's input outright, whatever sluice does).
pub fn stream(never_json: bool) -> Vec<String> {
    let mut s = vec![
        chunk(
            json!({"role": "assistant", "content": TEXTS[0]}),
            Value::Null,
        ),
        // Both calls started before either's arguments.
        call(0, ""),
        call(1, ""),
        more(0, "{\"city\":"),
        // Text in the middle of the first call's arguments, then the second call's.
        text(TEXTS[1]),
        more(1, "{\"tz\":\"CET\"}"),
        more(0, "\"Paris\"}"),
        // Complete JSON, then more of the same call.
        more(0, "\n"),
        // A function without parameters, then a call with arguments whole.
        call(2, ""),
        call(3, CALLS[3].2),
    ];
    if never_json {
        s.push(call(4, "not "));
        s.push(more(4, "json"));
    }
    s.push(text(TEXTS[2]));
    s.push(chunk(json!({}), json!("tool_calls")));
    let usage = json!({"id": "chatcmpl-tangled", "object": "chat.completion.chunk", "created": 1,
        "model": "up", "choices": [],
        "usage": {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}});
    s.push(format!("data: {usage}\n\n"));
    s.push("data: [DONE]\n\n".to_owned());
    s
}
