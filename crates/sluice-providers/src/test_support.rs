//! Generated chat requests for the round-trip property tests of the translations, and the
//! essence they must keep: what both formats can express.

use serde_json::json;
use sluice_types::openai::{ChatCompletionRequest, Content, Role};

/// A small deterministic generator (no dependency needed for a property test).
pub(crate) struct Gen(pub(crate) u64);

impl Gen {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(crate) fn word(&mut self) -> String {
        const WORDS: &[&str] = &[
            "alpha",
            "beta",
            "ünïcode",
            "quote\"d",
            "new\nline",
            "42",
            "{json}",
            "emoji 🚀",
        ];
        WORDS[self.below(WORDS.len() as u64) as usize].to_string()
    }
}

/// A random conversation in the shape both formats can express: an optional system prompt,
/// then user turns, assistant turns with text and/or tool calls, and a tool result for each
/// call before the next user turn; plus random parameters.
pub(crate) fn generate(g: &mut Gen) -> serde_json::Value {
    let mut messages = Vec::new();
    if g.below(2) == 0 {
        messages.push(json!({"role": "system", "content": g.word()}));
    }
    let turns = 1 + g.below(4);
    let mut call_id = 0;
    for t in 0..turns {
        messages.push(json!({"role": "user", "content": format!("{} {}", g.word(), t)}));
        if t + 1 == turns && g.below(2) == 0 {
            break;
        }
        let calls: Vec<serde_json::Value> = (0..g.below(3))
            .map(|_| {
                call_id += 1;
                json!({"id": format!("toolu_{call_id}"), "type": "function",
                       "function": {"name": "lookup", "arguments": json!({"q": g.word(), "n": g.below(100)}).to_string()}})
            })
            .collect();
        let mut assistant = json!({"role": "assistant", "content": g.word()});
        if !calls.is_empty() {
            assistant["tool_calls"] = json!(calls);
        }
        messages.push(assistant);
        for c in &calls {
            messages.push(json!({"role": "tool", "tool_call_id": c["id"], "content": g.word()}));
        }
    }
    let mut req = json!({"model": "m", "messages": messages, "max_tokens": 1 + g.below(4000)});
    if g.below(2) == 0 {
        req["temperature"] = json!(g.below(100) as f64 / 100.0);
    }
    if g.below(2) == 0 {
        req["top_p"] = json!(g.below(100) as f64 / 100.0);
    }
    if g.below(2) == 0 {
        req["stop"] = json!([g.word()]);
    }
    if g.below(2) == 0 {
        req["user"] = json!(g.word());
    }
    if g.below(2) == 0 {
        req["tools"] = json!([{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
        req["tool_choice"] = match g.below(3) {
            0 => json!("auto"),
            1 => json!("required"),
            _ => json!({"type": "function", "function": {"name": "lookup"}}),
        };
    }
    req
}

/// Messages reduced to what both formats carry: role, text, tool calls (id, name, parsed
/// arguments), tool result ids; system prompts joined into one.
pub(crate) fn essence(req: &ChatCompletionRequest) -> serde_json::Value {
    let system: Vec<String> = req
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .filter_map(|m| m.content.as_ref().map(Content::text))
        .collect();
    let rest: Vec<serde_json::Value> = req
        .messages
        .iter()
        .filter(|m| !matches!(m.role, Role::System | Role::Developer))
        .map(|m| {
            let calls: Vec<serde_json::Value> = m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| json!([c.id, c.function.name, serde_json::from_str::<serde_json::Value>(&c.function.arguments).unwrap()]))
                .collect();
            json!({"role": format!("{:?}", m.role), "text": m.content.as_ref().map(Content::text).unwrap_or_default(), "calls": calls, "answers": m.tool_call_id})
        })
        .collect();
    json!({
        "system": system.join("\n\n"),
        "messages": rest,
        "max_tokens": req.output_cap(),
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stop": req.stop.clone().map(|s| s.into_vec()),
        "user": req.user,
        "tools": req.tools.as_ref().map(|t| t.iter().map(|t| json!([t.function.name, t.function.description, t.function.parameters])).collect::<Vec<_>>()),
        "tool_choice": format!("{:?}", req.tool_choice),
    })
}

/// `essence` without what a format cannot carry: tool-call ids (Gemini and Ollama have
/// none) and the named top-level keys.
pub(crate) fn essence_without(req: &ChatCompletionRequest, keys: &[&str]) -> serde_json::Value {
    let mut e = essence(req);
    for m in e["messages"].as_array_mut().into_iter().flatten() {
        m["answers"] = serde_json::Value::Null;
        for call in m["calls"].as_array_mut().into_iter().flatten() {
            if let Some(parts) = call.as_array_mut() {
                parts.remove(0);
            }
        }
    }
    if let Some(o) = e.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
    e
}
