//! A stored response's input items (`GET /v1/responses/{id}/input_items`): the items of
//! the conversation before it (the previous response's input items, then its output),
//! then the request's own `input`, each with an `id` (`msg_`, `fc_`, `fco_`, `rs_` or
//! `item_`, then the response's hex and `in` and its index); and the listing's pages.
//!
//! Items are written as sent but for two things, as OpenAI lists them: a message's
//! content given as a string becomes one `input_text` (for the assistant `output_text`)
//! part, and a message gets `type` and `status`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Most items a page lists (OpenAI's bound), and how many by default.
pub const MAX_LIMIT: usize = 100;
/// Items a page lists when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;

/// The `include` values OpenAI documents for responses and their input items. sluice keeps
/// items as sent (image URLs included) and produces no encrypted reasoning, logprobs or built-in
/// tool results, so each asks for nothing more.
pub const INCLUDABLE: &[&str] = &[
    "message.input_image.image_url",
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
];

/// The conversation a response continues: what the previous response stored.
#[derive(Debug, Clone, Copy)]
pub struct Earlier<'a> {
    /// Its input items, a JSON array.
    pub input_items: &'a [u8],
    /// Its `response` object.
    pub response: &'a [u8],
}

#[derive(Deserialize)]
struct InputOf<'a> {
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputOf<'a> {
    #[serde(default, borrow)]
    output: Vec<&'a RawValue>,
}

/// The fields of an item that decide how it is listed.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct MessageItem<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'a str,
    content: Parts<'a>,
    status: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Parts<'a> {
    Sent(&'a RawValue),
    Text([TextPart<'a>; 1]),
}

#[derive(Serialize)]
struct TextPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: Cow<'a, str>,
}

/// The input items of response `id` made from request `body` (already read by
/// [`super::inbound::to_chat`]), after those of the conversation it continues: a JSON array.
pub fn input_items(body: &[u8], id: &str, earlier: Option<Earlier<'_>>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'[');
    if let Some(e) = earlier {
        let items: Vec<&RawValue> = serde_json::from_slice(e.input_items)
            .map_err(|e| format!("stored input items: {e}"))?;
        let output: OutputOf<'_> =
            serde_json::from_slice(e.response).map_err(|e| format!("stored response: {e}"))?;
        for item in items.into_iter().chain(output.output) {
            push(&mut out, item.get().as_bytes());
        }
    }
    let input: InputOf<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let hex = id.trim_start_matches("resp_");
    match input.input {
        Some(raw) if raw.get().starts_with('"') => {
            let text: Cow<'_, str> = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
            let item = message(&format!("msg_{hex}_in0"), "user", text_parts("user", text));
            push(&mut out, &item?);
        }
        Some(raw) => {
            let items: Vec<&RawValue> =
                serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
            for (i, item) in items.into_iter().enumerate() {
                push(&mut out, &listed(item, hex, i)?);
            }
        }
        None => {}
    }
    out.push(b']');
    Ok(out)
}

/// Appends `item` to the array being written in `out`.
fn push(out: &mut Vec<u8>, item: &[u8]) {
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(item);
}

/// One input item as listed: a message normalised, any other item with an `id`.
fn listed(item: &RawValue, hex: &str, i: usize) -> Result<Vec<u8>, String> {
    let head: Head<'_> = serde_json::from_str(item.get()).map_err(|e| e.to_string())?;
    let kind = head.kind.as_deref().unwrap_or("message");
    let prefix = match kind {
        "message" => "msg",
        "function_call" => "fc",
        "function_call_output" => "fco",
        "reasoning" => "rs",
        _ => "item",
    };
    let new_id;
    let id = match head.id.as_deref() {
        Some(id) => id,
        None => {
            new_id = format!("{prefix}_{hex}_in{i}");
            &new_id
        }
    };
    if kind != "message" {
        return Ok(with_id(item.get(), head.id.is_none().then_some(id)));
    }
    let role = head.role.as_deref().unwrap_or("user");
    let parts = match head.content {
        Some(c) if c.get().starts_with('"') => {
            let text: Cow<'_, str> = serde_json::from_str(c.get()).map_err(|e| e.to_string())?;
            text_parts(role, text)
        }
        Some(c) => Parts::Sent(c),
        None => Parts::Text([TextPart {
            kind: "input_text",
            text: Cow::Borrowed(""),
        }]),
    };
    message(id, role, parts)
}

/// A message's text as its one part.
fn text_parts<'a>(role: &str, text: Cow<'a, str>) -> Parts<'a> {
    let kind = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    Parts::Text([TextPart { kind, text }])
}

fn message(id: &str, role: &str, content: Parts<'_>) -> Result<Vec<u8>, String> {
    let m = MessageItem {
        id,
        kind: "message",
        role,
        content,
        status: "completed",
    };
    serde_json::to_vec(&m).map_err(|e| e.to_string())
}

/// The JSON object `item` with `"id": id` spliced in first, when given.
fn with_id(item: &str, id: Option<&str>) -> Vec<u8> {
    let Some(id) = id else {
        return item.as_bytes().to_vec();
    };
    let rest = item
        .trim_start()
        .strip_prefix('{')
        .unwrap_or(item)
        .trim_start();
    let id = serde_json::to_string(id).unwrap_or_default();
    let sep = if rest.starts_with('}') { "" } else { "," };
    format!("{{\"id\":{id}{sep}{rest}").into_bytes()
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (OpenAI's default).
    #[default]
    Desc,
}

/// A page asked for: after the item `after`, at most `limit` items, in `order`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemsQuery {
    /// The id of the last item of the previous page.
    pub after: Option<String>,
    /// Most items, 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// Newest or oldest first.
    pub order: Order,
}

impl Default for ItemsQuery {
    fn default() -> Self {
        Self {
            after: None,
            limit: DEFAULT_LIMIT,
            order: Order::Desc,
        }
    }
}

#[derive(Deserialize)]
struct IdOf<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: &'a [&'a RawValue],
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
    has_more: bool,
}

/// The page `q` of `items` (a stored JSON array, oldest first) as OpenAI's list object.
/// An `after` that names no item gives an empty page.
pub fn page(items: &[u8], q: &ItemsQuery) -> Result<Vec<u8>, String> {
    let mut all: Vec<&RawValue> =
        serde_json::from_slice(items).map_err(|e| format!("stored input items: {e}"))?;
    if q.order == Order::Desc {
        all.reverse();
    }
    let ids = all
        .iter()
        .map(|i| serde_json::from_str::<IdOf<'_>>(i.get()).map(|h| h.id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let start = match &q.after {
        None => 0,
        Some(after) => ids
            .iter()
            .position(|id| id.as_deref() == Some(after.as_str()))
            .map_or(all.len(), |p| p + 1),
    };
    let end = all.len().min(start + q.limit.clamp(1, MAX_LIMIT));
    let list = List {
        object: "list",
        data: &all[start..end],
        first_id: ids
            .get(start)
            .and_then(|i| i.as_deref())
            .filter(|_| end > start),
        last_id: end
            .checked_sub(1)
            .filter(|&l| l >= start)
            .and_then(|l| ids[l].as_deref()),
        has_more: end < all.len(),
    };
    serde_json::to_vec(&list).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn items(body: Value, id: &str, earlier: Option<Earlier<'_>>) -> Value {
        let out = input_items(body.to_string().as_bytes(), id, earlier).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let v = items(json!({"model": "m", "input": "Hi"}), "resp_ab", None);
        assert_eq!(
            v,
            json!([{"id": "msg_ab_in0", "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "Hi"}], "status": "completed"}])
        );
    }

    #[test]
    fn items_get_ids_and_follow_the_conversation_before_them() {
        let first = items(
            json!({"input": [{"role": "system", "content": "Be brief"}]}),
            "resp_1",
            None,
        );
        let response = json!({"output": [{"id": "msg_1_0", "type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": "ok"}]}]});
        let (f, r) = (first.to_string(), response.to_string());
        let earlier = Earlier {
            input_items: f.as_bytes(),
            response: r.as_bytes(),
        };
        let body = json!({"input": [
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"type": "function_call", "id": "fc_mine", "call_id": "c2", "name": "f", "arguments": "{}"},
            {"type": "message", "role": "assistant", "content": "done"},
            {"type": "reasoning", "summary": []}
        ]});
        let v = items(body, "resp_2", Some(earlier));
        let ids: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "msg_1_in0",
                "msg_1_0",
                "fco_2_in0",
                "fc_mine",
                "msg_2_in2",
                "rs_2_in3"
            ]
        );
        assert_eq!(
            v[2],
            json!({"id": "fco_2_in0", "type": "function_call_output", "call_id": "c1", "output": "42"})
        );
        assert_eq!(
            v[4]["content"],
            json!([{"type": "output_text", "text": "done"}])
        );
        assert_eq!(
            v[5],
            json!({"id": "rs_2_in3", "type": "reasoning", "summary": []})
        );
    }

    #[test]
    fn pages_follow_the_cursor_in_either_order() {
        let all = json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]).to_string();
        let page = |after: Option<&str>, limit, order| -> Value {
            let q = ItemsQuery {
                after: after.map(str::to_owned),
                limit,
                order,
            };
            serde_json::from_slice(&super::page(all.as_bytes(), &q).unwrap()).unwrap()
        };
        let p = page(None, 2, Order::Desc);
        assert_eq!(
            p,
            json!({"object": "list", "data": [{"id": "c"}, {"id": "b"}],
                             "first_id": "c", "last_id": "b", "has_more": true})
        );
        let p = page(Some("b"), 2, Order::Desc);
        assert_eq!(
            (p["data"].clone(), p["has_more"].clone()),
            (json!([{"id": "a"}]), json!(false))
        );
        let p = page(Some("a"), 20, Order::Asc);
        assert_eq!(p["data"], json!([{"id": "b"}, {"id": "c"}]));
        let p = page(Some("zz"), 20, Order::Asc);
        assert_eq!(
            p,
            json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false})
        );
    }
}
