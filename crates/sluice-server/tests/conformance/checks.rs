//! Invariants of each inbound protocol's streams, checked on every case on top of its
//! golden: event order, indices, sequence numbers, ids that must match, one stop; and that
//! the stream assembles into the same answer as the whole call of the same transcript.

use super::cases::Inbound;
use serde_json::{json, Value};

/// One SSE event: its `event:` name (if any) and its `data`.
struct Event {
    name: Option<String>,
    data: String,
}

fn events(body: &[u8]) -> Vec<Event> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                }
            }
            data.map(|data| Event { name, data })
        })
        .collect()
}

fn json(e: &Event) -> Result<Value, String> {
    serde_json::from_str(&e.data).map_err(|err| format!("event is not JSON ({err}): {}", e.data))
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Checks a streamed body of `inbound`; `whole` is the whole answer of the same transcript.
pub fn stream(inbound: Inbound, body: &[u8], whole: Option<&[u8]>) -> Result<(), String> {
    let evs = events(body);
    ensure(!evs.is_empty(), || "the stream has no events".into())?;
    let whole: Option<Value> =
        whole.map(|w| serde_json::from_slice(w).expect("whole answer is JSON"));
    match inbound {
        Inbound::Chat => chat(&evs, whole.as_ref()),
        Inbound::Messages => messages(&evs, whole.as_ref()),
        Inbound::Responses => responses(&evs, whole.as_ref()),
    }
}

// === chat ===

fn chat(evs: &[Event], whole: Option<&Value>) -> Result<(), String> {
    let last = &evs[evs.len() - 1];
    let failed = last.data != "[DONE]";
    if failed {
        let v = json(last)?;
        ensure(v.get("error").is_some(), || {
            format!(
                "a chat stream ends with [DONE] or an error event, not {}",
                last.data
            )
        })?;
    }
    let chunks: Vec<Value> = evs
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(json)
        .collect::<Result<_, _>>()?;
    let chunks: Vec<&Value> = chunks.iter().filter(|c| c.get("error").is_none()).collect();
    ensure(
        evs.iter().filter(|e| e.data.contains("\"error\"")).count() <= 1,
        || "more than one error event".into(),
    )?;
    let id = &chunks[0]["id"];
    let (mut content, mut reasoning, mut refusal) = (String::new(), String::new(), String::new());
    let mut calls: Vec<Value> = Vec::new();
    let mut finishes = Vec::new();
    let mut usage = Value::Null;
    for c in &chunks {
        ensure(&c["id"] == id, || {
            format!("chunk ids differ: {} and {}", id, c["id"])
        })?;
        ensure(c["object"] == "chat.completion.chunk", || {
            format!("not a chunk: {c}")
        })?;
        if !c["usage"].is_null() {
            usage = c["usage"].clone();
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        let d = &choice["delta"];
        content += d["content"].as_str().unwrap_or("");
        reasoning += d["reasoning_content"].as_str().unwrap_or("");
        refusal += d["refusal"].as_str().unwrap_or("");
        for call in d["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"]
                .as_u64()
                .ok_or("a tool-call delta without index")? as usize;
            if i == calls.len() {
                ensure(
                    call["id"].is_string() && call["function"]["name"].is_string(),
                    || format!("the first delta of call {i} lacks its id or name: {call}"),
                )?;
                calls.push(
                    json!({"id": call["id"], "name": call["function"]["name"], "arguments": ""}),
                );
            }
            ensure(i < calls.len(), || format!("tool-call index {i} skips one"))?;
            let args = call["function"]["arguments"].as_str().unwrap_or("");
            let so_far = calls[i]["arguments"].as_str().unwrap_or("").to_owned();
            calls[i]["arguments"] = json!(so_far + args);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finishes.push(f.to_owned());
        }
    }
    if failed {
        return ensure(finishes.is_empty(), || {
            "a failed stream has a finish_reason".into()
        });
    }
    ensure(finishes.len() == 1, || {
        format!("finish_reason sent {} times", finishes.len())
    })?;
    let Some(w) = whole else { return Ok(()) };
    let m = &w["choices"][0]["message"];
    let whole_calls: Vec<Value> = m["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}))
        .collect();
    same(
        "content",
        &json!(content),
        &json!(m["content"].as_str().unwrap_or("")),
    )?;
    same(
        "reasoning_content",
        &json!(reasoning),
        &json!(m["reasoning_content"].as_str().unwrap_or("")),
    )?;
    same(
        "refusal",
        &json!(refusal),
        &json!(m["refusal"].as_str().unwrap_or("")),
    )?;
    same(
        "tool calls",
        &parsed_arguments(calls),
        &parsed_arguments(whole_calls),
    )?;
    same(
        "finish_reason",
        &json!(finishes[0]),
        &w["choices"][0]["finish_reason"],
    )?;
    same("usage", &usage, &w["usage"])
}

/// Tool calls with their `arguments` parsed: a stream passes the pieces on as the upstream
/// wrote them, a whole answer compacts them.
fn parsed_arguments(mut calls: Vec<Value>) -> Value {
    for c in &mut calls {
        if let Some(text) = c["arguments"].as_str() {
            c["arguments"] = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
        }
    }
    json!(calls)
}

/// Whether a stream and a whole answer say the same, ids made up by sluice aside (a call
/// whose upstream gave it no id gets a random one each time: see [`numbered_ids`]).
fn same(what: &str, stream: &Value, whole: &Value) -> Result<(), String> {
    ensure(numbered_ids(stream) == numbered_ids(whole), || {
        format!("the stream's {what} is {stream}, the whole answer's {whole}")
    })
}

/// `v` with the random runs of its `id` and `call_id` strings numbered in order of
/// appearance (as the goldens number them), so two answers' made-up ids compare equal when
/// they stand in the same places.
fn numbered_ids(v: &Value) -> Value {
    fn walk(v: &mut Value, ids: &mut super::normalize::Ids) {
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, ids)),
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    match (k.as_str(), item) {
                        ("id" | "call_id", Value::String(s)) => *s = ids.string(s),
                        (_, item) => walk(item, ids),
                    }
                }
            }
            _ => {}
        }
    }
    let mut v = v.clone();
    walk(&mut v, &mut super::normalize::Ids::default());
    v
}

// === messages ===

fn messages(evs: &[Event], whole: Option<&Value>) -> Result<(), String> {
    let datas: Vec<Value> = evs.iter().map(json).collect::<Result<_, _>>()?;
    for (e, d) in evs.iter().zip(&datas) {
        ensure(e.name.as_deref() == d["type"].as_str(), || {
            format!("event `{:?}` carries type {}", e.name, d["type"])
        })?;
    }
    ensure(datas[0]["type"] == "message_start", || {
        "the first event is not message_start".into()
    })?;
    // Claude Code and the Anthropic SDK read the prompt's size from message_start.
    let start = &datas[0]["message"]["usage"];
    ensure(
        start["input_tokens"].as_u64().is_some_and(|n| n > 0),
        || format!("message_start has usage {start}"),
    )?;
    let last = &datas[datas.len() - 1];
    let failed = last["type"] == "error";
    ensure(failed || last["type"] == "message_stop", || {
        format!("the last event is {}", last["type"])
    })?;
    ensure(
        datas.iter().filter(|d| d["type"] == "error").count() <= 1,
        || "more than one error".into(),
    )?;
    let mut blocks: Vec<Value> = Vec::new();
    let mut open: Option<usize> = None;
    let mut stop = Value::Null;
    let mut usage = Value::Null;
    for d in &datas[1..] {
        match d["type"].as_str().unwrap_or("") {
            "content_block_start" => {
                ensure(open.is_none(), || {
                    "a block starts while another is open".into()
                })?;
                ensure(d["index"] == json!(blocks.len()), || {
                    format!("block {} starts after {} blocks", d["index"], blocks.len())
                })?;
                let mut b = d["content_block"].clone();
                if b["type"] == "tool_use" {
                    b["input"] = json!("");
                }
                blocks.push(b);
                open = Some(blocks.len() - 1);
            }
            "content_block_delta" => {
                let i = open.ok_or("a delta outside any block")?;
                ensure(d["index"] == json!(i), || {
                    format!("a delta of block {} while {i} is open", d["index"])
                })?;
                let b = &mut blocks[i];
                let delta = &d["delta"];
                let (field, piece) = match (b["type"].as_str(), delta["type"].as_str()) {
                    (Some("text"), Some("text_delta")) => ("text", &delta["text"]),
                    (Some("thinking"), Some("thinking_delta")) => ("thinking", &delta["thinking"]),
                    (Some("thinking"), Some("signature_delta")) => {
                        ("signature", &delta["signature"])
                    }
                    (Some("tool_use"), Some("input_json_delta")) => {
                        ("input", &delta["partial_json"])
                    }
                    (block, kind) => return Err(format!("a {kind:?} in a {block:?} block")),
                };
                let so_far = b[field].as_str().unwrap_or("").to_owned();
                b[field] = json!(so_far + piece.as_str().unwrap_or(""));
            }
            "content_block_stop" => {
                let i = open.take().ok_or("a stop outside any block")?;
                ensure(d["index"] == json!(i), || {
                    format!("block {} stops while {i} is open", d["index"])
                })?;
            }
            "message_delta" => {
                ensure(open.is_none(), || {
                    "message_delta while a block is open".into()
                })?;
                ensure(stop.is_null(), || "two message_delta events".into())?;
                stop = d["delta"]["stop_reason"].clone();
                usage = d["usage"].clone();
            }
            "message_stop" | "ping" | "error" => {}
            other => return Err(format!("unknown event type {other}")),
        }
    }
    if failed {
        return Ok(());
    }
    ensure(stop.is_string(), || "no stop_reason".into())?;
    let Some(w) = whole else { return Ok(()) };
    for b in &mut blocks {
        if b["type"] == "tool_use" {
            let text = b["input"].as_str().unwrap_or("").to_owned();
            b["input"] = if text.is_empty() {
                json!({})
            } else {
                serde_json::from_str(&text)
                    .map_err(|e| format!("streamed tool input is not JSON ({e}): {text}"))?
            };
        }
    }
    same("content", &json!(blocks), &w["content"])?;
    same("stop_reason", &stop, &w["stop_reason"])?;
    same("usage", &usage, &w["usage"])
}

// === responses ===

/// `v` without its ids and timestamps (two calls give two responses).
fn anonymous(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "id" | "created_at"))
                .map(|(k, v)| (k.clone(), anonymous(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(anonymous).collect()),
        other => other.clone(),
    }
}

fn responses(evs: &[Event], whole: Option<&Value>) -> Result<(), String> {
    let datas: Vec<Value> = evs.iter().map(json).collect::<Result<_, _>>()?;
    for (n, (e, d)) in evs.iter().zip(&datas).enumerate() {
        ensure(e.name.as_deref() == d["type"].as_str(), || {
            format!("event `{:?}` carries type {}", e.name, d["type"])
        })?;
        ensure(d["sequence_number"] == json!(n), || {
            format!("event {n} has sequence_number {}", d["sequence_number"])
        })?;
    }
    let kinds: Vec<&str> = datas
        .iter()
        .map(|d| d["type"].as_str().unwrap_or(""))
        .collect();
    ensure(
        kinds.starts_with(&["response.created", "response.in_progress"]),
        || format!("the stream starts with {:?}", &kinds[..kinds.len().min(2)]),
    )?;
    let last = &datas[datas.len() - 1];
    let end = kinds[kinds.len() - 1];
    ensure(
        matches!(
            end,
            "response.completed" | "response.incomplete" | "response.failed" | "error"
        ),
        || format!("the stream ends with {end}"),
    )?;
    if end == "error" {
        // An `error` event ends a stream that failed midway (native upstreams).
        return ensure(
            last["message"].is_string() && last["code"].is_string(),
            || format!("an error event without code or message: {last}"),
        );
    }
    let id = &datas[0]["response"]["id"];
    ensure(&last["response"]["id"] == id, || {
        "the last event names another response".into()
    })?;
    let mut items: Vec<Value> = Vec::new();
    let mut done: Vec<Option<Value>> = Vec::new();
    // Per item: how many content (or summary) parts were added.
    let mut parts: Vec<u64> = Vec::new();
    for d in &datas[2..datas.len() - 1] {
        let kind = d["type"].as_str().unwrap_or("");
        if kind == "response.output_item.added" {
            ensure(d["output_index"] == json!(items.len()), || {
                format!(
                    "item {} added after {} items",
                    d["output_index"],
                    items.len()
                )
            })?;
            // One item at a time, as OpenAI streams them: parallel function calls too (each
            // call's `function_call_arguments.done` and `output_item.done` come before the
            // next call is added).
            ensure(done.iter().all(Option::is_some), || {
                format!("item {} is added while another is open", items.len())
            })?;
            items.push(d["item"].clone());
            done.push(None);
            parts.push(0);
            continue;
        }
        let i = d["output_index"]
            .as_u64()
            .ok_or_else(|| format!("{kind} without output_index"))? as usize;
        ensure(i < items.len() && done[i].is_none(), || {
            format!("{kind} for item {i}, which is not open")
        })?;
        let item_id = &items[i]["id"];
        indices_in_order(d, kind, &mut parts[i])?;
        if kind == "response.output_item.done" {
            ensure(&d["item"]["id"] == item_id, || {
                "output_item.done names another item".into()
            })?;
            done[i] = Some(d["item"].clone());
        } else {
            ensure(&d["item_id"] == item_id, || {
                format!("{kind} has item_id {}, item {i} is {item_id}", d["item_id"])
            })?;
        }
    }
    if end == "response.failed" {
        // The items open when the upstream failed stay open: the response failed.
        return ensure(last["response"]["error"].is_object(), || {
            "response.failed without error".into()
        });
    }
    ensure(done.iter().all(Option::is_some), || {
        "an item is never done".into()
    })?;
    let output: Vec<Value> = done.into_iter().flatten().collect();
    same(
        "output (from output_item.done)",
        &json!(output),
        &last["response"]["output"],
    )?;
    // sluice's own ids (`resp_` and 32 hex digits) name their items after the response; a
    // native upstream's are its own.
    let prefix = id.as_str().unwrap_or("").trim_start_matches("resp_");
    for item in output.iter().filter(|_| prefix.len() == 32) {
        let item_id = item["id"].as_str().unwrap_or("");
        ensure(item_id.contains(prefix), || {
            format!("item id {item_id} is not of response {id}")
        })?;
    }
    let Some(w) = whole else { return Ok(()) };
    same(
        "response",
        &function_arguments(anonymous(&last["response"])),
        &function_arguments(anonymous(w)),
    )
}

/// An event's `content_index` (or `summary_index`): a part is added at the next index, and
/// every other event names the last part added (`added`: how many parts the item has).
fn indices_in_order(d: &Value, kind: &str, added: &mut u64) -> Result<(), String> {
    let Some(index) = d["content_index"].as_u64().or(d["summary_index"].as_u64()) else {
        return Ok(());
    };
    if kind.ends_with("_part.added") {
        ensure(index == *added, || {
            format!("{kind} at index {index} after {added} parts")
        })?;
        *added += 1;
        return Ok(());
    }
    ensure(index + 1 == *added, || {
        format!(
            "{kind} at index {index}, the last part added is {}",
            *added as i64 - 1
        )
    })
}

/// A response with its function calls' `arguments` parsed (see [`parsed_arguments`]).
fn function_arguments(mut response: Value) -> Value {
    for item in response["output"].as_array_mut().into_iter().flatten() {
        if let Some(text) = item["arguments"].as_str() {
            item["arguments"] = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
        }
    }
    response
}
