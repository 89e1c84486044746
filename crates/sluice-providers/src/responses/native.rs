//! Responses API requests sent natively, to an `openai` provider with `responses =
//! "native"` (OpenAI's own API): the request as the client sent it, but for `model` (the
//! upstream's id) and a `previous_response_id`, which sluice expands itself (the earlier
//! conversation's items go first in `input`, so any provider can continue any response);
//! the answer passed through as it came, read only for what sluice stores of it (its id,
//! and the chat `assistant` message it was) and for its usage.

use super::items::Earlier;
use super::object::{assistant_message, ContentPart, OutputItem};
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_types::sse::event_data;
use sluice_types::Usage;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The body a native upstream is sent for `raw`, a Responses request that continues
/// `earlier`: without `previous_response_id`, its `input` the earlier conversation's items
/// (their input items, then their response's output) before its own. Ids sluice made up for
/// listing (`msg_<hex>_in0`, `fc_<hex>_1`, ...) are left out, so the upstream sees items as
/// a client would send them; ids of the upstream's own items (reasoning included) stay.
pub fn expand(raw: &[u8], earlier: Earlier<'_>) -> Result<Vec<u8>, String> {
    let mut fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(raw).map_err(|e| format!("invalid Responses request: {e}"))?;
    fields.remove("previous_response_id");
    let stored: Vec<&RawValue> = serde_json::from_slice(earlier.input_items)
        .map_err(|e| format!("stored input items: {e}"))?;
    let answered: OutputOf<'_> =
        serde_json::from_slice(earlier.response).map_err(|e| format!("stored response: {e}"))?;
    let mut input = String::from("[");
    for item in stored.into_iter().chain(answered.output) {
        push(&mut input, &without_made_up_id(item)?);
    }
    match fields.get("input") {
        Some(v) if v.get().starts_with('"') => {
            push(
                &mut input,
                &format!("{{\"role\":\"user\",\"content\":{}}}", v.get()),
            );
        }
        Some(v) => {
            let items: Vec<&RawValue> =
                serde_json::from_str(v.get()).map_err(|e| format!("input: {e}"))?;
            for item in items {
                push(&mut input, item.get());
            }
        }
        None => {}
    }
    input.push(']');
    let input = RawValue::from_string(input).map_err(|e| e.to_string())?;
    fields.insert(Cow::Borrowed("input"), &input);
    serde_json::to_vec(&fields).map_err(|e| e.to_string())
}

fn push(out: &mut String, item: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(item);
}

#[derive(Deserialize)]
struct OutputOf<'a> {
    #[serde(default, borrow)]
    output: Vec<&'a RawValue>,
}

/// `item` without its `id` when sluice made that id up.
fn without_made_up_id(item: &RawValue) -> Result<Cow<'_, str>, String> {
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(default, borrow)]
        id: Option<Cow<'a, str>>,
    }
    let id: Id<'_> = serde_json::from_str(item.get()).map_err(|e| e.to_string())?;
    if !id.id.as_deref().is_some_and(is_made_up) {
        return Ok(Cow::Borrowed(item.get()));
    }
    let mut fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(item.get()).map_err(|e| e.to_string())?;
    fields.remove("id");
    serde_json::to_string(&fields)
        .map(Cow::Owned)
        .map_err(|e| e.to_string())
}

/// Whether `id` is one sluice gives the items of responses it answers through chat or lists:
/// `<prefix>_<32 hex digits>_<index>` or `..._in<index>`.
fn is_made_up(id: &str) -> bool {
    let Some((_, rest)) = id.split_once('_') else {
        return false;
    };
    let Some((hex, index)) = rest.split_once('_') else {
        return false;
    };
    let index = index.strip_prefix("in").unwrap_or(index);
    hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
}

/// `body` (a Responses request) with `model` set to `upstream`; the same buffer when it
/// already names it.
pub fn with_model(body: &bytes::Bytes, upstream: &str) -> Result<bytes::Bytes, String> {
    #[derive(Deserialize)]
    struct Model<'a> {
        #[serde(borrow)]
        model: &'a RawValue,
    }
    let m: Model<'_> =
        serde_json::from_slice(body).map_err(|e| format!("invalid Responses request: {e}"))?;
    let raw = m.model.get();
    if serde_json::from_str::<Cow<'_, str>>(raw).is_ok_and(|s| s == upstream) {
        return Ok(body.clone());
    }
    let start = raw.as_ptr() as usize - body.as_ptr() as usize;
    let mut out = Vec::with_capacity(body.len() + upstream.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(&serde_json::to_vec(upstream).map_err(|e| e.to_string())?);
    out.extend_from_slice(&body[start + raw.len()..]);
    Ok(out.into())
}

/// What sluice keeps of a native answer: its id and the chat `assistant` message it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The upstream's response id.
    pub id: String,
    /// The answer as a chat `assistant` message (text, refusal, tool calls).
    pub assistant: Vec<u8>,
}

#[derive(Deserialize)]
struct InResponse<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    output: Vec<InItem<'a>>,
}

#[derive(Deserialize)]
struct InItem<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Vec<InPart<'a>>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
}

/// The `id` of a native `response` object: read off its first bytes when it starts as
/// OpenAI writes it (`{"id": "..."`, indented or not), else read key by key up to `id`
/// (the values before it skipped, those after it not read at all).
pub fn response_id(response: &[u8]) -> Result<String, String> {
    if let Some(id) = leading_id(response) {
        return Ok(id.to_owned());
    }
    let mut id = None;
    let mut de = serde_json::Deserializer::from_slice(response);
    // Stopping at `id` leaves the object unended, which the reader reports: the id read
    // is what counts.
    let read = serde::Deserializer::deserialize_map(&mut de, IdVisitor(&mut id));
    match (id, read) {
        (Some(id), _) => Ok(id),
        (None, Err(e)) => Err(format!("invalid response object: {e}")),
        (None, Ok(())) => Err("invalid response object: missing field `id`".into()),
    }
}

/// The id of an object that starts with it: `{`, `"id"`, `:` and a string without escapes,
/// blanks between them.
fn leading_id(response: &[u8]) -> Option<&str> {
    let rest = response.trim_ascii_start().strip_prefix(b"{")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"id\"")?;
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"').then(|| std::str::from_utf8(&rest[..end]).ok())?
}

/// A key of a `response` object, as far as [`response_id`] cares.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Id,
    #[serde(other)]
    Other,
}

/// Reads an object's keys up to `id`, and its value into the `Option`.
struct IdVisitor<'s>(&'s mut Option<String>);

impl<'de> serde::de::Visitor<'de> for IdVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a response object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => {
                    let id: Cow<'de, str> = map.next_value::<Str<'de>>()?.0;
                    *self.0 = Some(id.into_owned());
                    return Ok(());
                }
                Key::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A string, borrowed where it has no escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// Reads a native `response` object for what is kept of it. Output items other than
/// messages and function calls (reasoning, built-in tools' calls) have no chat form and
/// are kept only in the stored response object.
pub fn kept(response: &[u8]) -> Result<Kept, String> {
    let r: InResponse<'_> =
        serde_json::from_slice(response).map_err(|e| format!("invalid response object: {e}"))?;
    let mut output = Vec::new();
    for item in r.output {
        match &*item.kind {
            "message" => {
                let content = item
                    .content
                    .into_iter()
                    .filter_map(|p| match &*p.kind {
                        "output_text" => Some(ContentPart::text(p.text?.into_owned())),
                        "refusal" => Some(ContentPart::Refusal {
                            refusal: p.refusal?.into_owned(),
                        }),
                        _ => None,
                    })
                    .collect();
                output.push(OutputItem::Message {
                    id: String::new(),
                    status: "completed",
                    role: "assistant",
                    content,
                });
            }
            "function_call" => output.push(OutputItem::FunctionCall {
                id: String::new(),
                call_id: item.call_id.unwrap_or_default().into_owned(),
                name: item.name.unwrap_or_default().into_owned(),
                arguments: item.arguments.unwrap_or(Cow::Borrowed("{}")).into_owned(),
                status: "completed",
            }),
            _ => {}
        }
    }
    Ok(Kept {
        id: r.id.into_owned(),
        assistant: assistant_message(&output),
    })
}

/// The usage a native stream event reports: the `response.usage` of `response.completed`,
/// `response.incomplete` and `response.failed`.
pub fn event_usage(data: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(default, borrow)]
        response: Option<&'a RawValue>,
    }
    let e: Event<'_> = serde_json::from_slice(data).ok()?;
    Usage::from_response(e.response?.get().as_bytes())
}

/// The `message` of a native stream's `error` event (the whole event when it has none).
pub fn error_message(data: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorEvent<'a> {
        #[serde(default, borrow)]
        message: Option<Cow<'a, str>>,
    }
    match serde_json::from_slice::<ErrorEvent<'_>>(data) {
        Ok(ErrorEvent { message: Some(m) }) => m.into_owned(),
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

/// The `response.error.message` of a native stream's `response.failed` event.
pub fn failure_message(data: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Failed<'a> {
        #[serde(borrow)]
        response: FailedResponse<'a>,
    }
    #[derive(Deserialize)]
    struct FailedResponse<'a> {
        #[serde(default, borrow)]
        error: Option<InError<'a>>,
    }
    serde_json::from_slice::<Failed<'_>>(data)
        .ok()
        .and_then(|f| f.response.error)
        .and_then(|e| e.message.map(Cow::into_owned))
        .unwrap_or_else(|| "the response failed".to_owned())
}

/// The kinds of event that end a native stream.
pub fn ends_stream(kind: &str) -> bool {
    matches!(
        kind,
        "response.completed" | "response.incomplete" | "response.failed"
    )
}

#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(default, borrow)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InError<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
}

/// What decides how a native stream event is handled: its `type` and `sequence_number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// The event's `type` (`None`: not a Responses event, e.g. sluice's own error).
    pub kind: Option<&'a str>,
    /// Its `sequence_number`.
    pub sequence: Option<u64>,
}

impl Head<'_> {
    /// Whether the event carries the `response` object: `response.created`,
    /// `response.in_progress`, `response.completed` and the like (one dot), not the
    /// events of its items and parts.
    pub fn carries_response(&self) -> bool {
        self.kind
            .and_then(|k| k.strip_prefix("response."))
            .is_some_and(|rest| !rest.contains('.'))
    }
}

/// The [`Head`] of an event's `data`: read off its first bytes when it starts as OpenAI
/// writes events (`{"type":"...","sequence_number":N`), so the rest (a whole `response`
/// object, for some) is not scanned; else parsed.
pub fn head(data: &[u8]) -> Head<'_> {
    if let Some(h) = fast_head(data) {
        return h;
    }
    #[derive(Deserialize)]
    struct Full<'a> {
        #[serde(rename = "type", default, borrow)]
        kind: Option<&'a str>,
        #[serde(default)]
        sequence_number: Option<u64>,
    }
    match serde_json::from_slice::<Full<'_>>(data) {
        Ok(f) => Head {
            kind: f.kind,
            sequence: f.sequence_number,
        },
        Err(_) => Head {
            kind: None,
            sequence: None,
        },
    }
}

fn fast_head(data: &[u8]) -> Option<Head<'_>> {
    let rest = data.strip_prefix(b"{\"type\":\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[end] != b'"' {
        return None;
    }
    let kind = std::str::from_utf8(&rest[..end]).ok()?;
    let rest = rest[end + 1..].strip_prefix(b",\"sequence_number\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let sequence = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some(Head {
        kind: Some(kind),
        sequence: Some(sequence),
    })
}

/// Called with what is kept of a completed (or incomplete) native stream, and its
/// `response` object.
pub type OnDone = Box<dyn FnOnce(Kept, Vec<u8>) + Send>;

/// Watches a native event stream pass to the client, writing each event on: hands the
/// `response` object of its `response.completed` (or `response.incomplete`) event to
/// [`OnDone`] before that event is sent; puts back the `previous_response_id` sluice
/// expanded (the upstream never saw it) into the `response` objects of its events; and
/// rewrites the error sluice ends a failed stream with (OpenAI's chat shape, `{"error":
/// {...}}`) as the Responses API's `error` event.
pub struct NativeWatcher {
    last_sequence: Option<u64>,
    previous: Option<String>,
    on_done: Option<OnDone>,
}

impl NativeWatcher {
    /// A watcher of the answer to a request that continued `previous` (if it did), which
    /// calls `on_done` when the stream completes.
    pub fn new(previous: Option<String>, on_done: OnDone) -> Self {
        Self {
            last_sequence: None,
            previous,
            on_done: Some(on_done),
        }
    }

    /// Reads one raw event and appends what the client gets of it to `out`.
    pub fn on_event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let Some(data) = event_data(event) else {
            out.extend_from_slice(event);
            return;
        };
        let h = head(&data);
        if let Some(n) = h.sequence {
            self.last_sequence = Some(n);
        }
        if h.kind.is_none() && data.starts_with(b"{\"error\"") {
            self.sluices_error(&data, out);
            return;
        }
        let restored = match &self.previous {
            Some(id) if h.carries_response() => restore_previous(event, id),
            _ => None,
        };
        let completes = matches!(h.kind, Some("response.completed" | "response.incomplete"));
        let event = restored.as_deref().unwrap_or(event);
        if completes {
            self.completed(event);
        }
        out.extend_from_slice(event);
    }

    /// sluice's own error event (`{"error": {...}}`), as the Responses API's `error` event.
    fn sluices_error(&self, data: &[u8], out: &mut Vec<u8>) {
        #[derive(Deserialize)]
        struct Sluices<'a> {
            #[serde(borrow)]
            error: InError<'a>,
        }
        match serde_json::from_slice::<Sluices<'_>>(data) {
            Ok(Sluices { error: e }) => self.error_event(
                e.message.as_deref(),
                e.code.as_deref().or(e.kind.as_deref()),
                out,
            ),
            Err(_) => self.error_event(None, None, out),
        }
    }

    /// Hands the `response` object of the completing `event` to [`OnDone`].
    fn completed(&mut self, event: &[u8]) {
        let Some(data) = event_data(event) else {
            return;
        };
        let Ok(head) = serde_json::from_slice::<EventHead<'_>>(&data) else {
            return;
        };
        if let (Some(response), Some(done)) = (head.response, self.on_done.take()) {
            let response = response.get().as_bytes();
            if let Ok(k) = kept(response) {
                done(k, response.to_vec());
            }
        }
    }

    /// The Responses API's `error` event for sluice's own error of a failed stream.
    fn error_event(&self, message: Option<&str>, code: Option<&str>, out: &mut Vec<u8>) {
        #[derive(serde::Serialize)]
        struct ErrorEvent<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            code: &'a str,
            message: &'a str,
            param: Option<&'a str>,
            sequence_number: u64,
        }
        let e = ErrorEvent {
            kind: "error",
            code: code.unwrap_or("server_error"),
            message: message.unwrap_or("upstream error"),
            param: None,
            sequence_number: self.last_sequence.map_or(0, |n| n + 1),
        };
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(&serde_json::to_vec(&e).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }
}

/// `raw` (a `response` object, or an event carrying one) with the `previous_response_id`
/// it answers `null` to set to `id`; `None` when it has no such `null`.
pub fn restore_previous(raw: &[u8], id: &str) -> Option<Vec<u8>> {
    const KEY: &[u8] = b"\"previous_response_id\"";
    let at = memchr::memmem::find(raw, KEY)? + KEY.len();
    let skip = |from: usize| {
        from + raw[from..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count()
    };
    let colon = skip(at);
    if raw.get(colon) != Some(&b':') {
        return None;
    }
    let value = skip(colon + 1);
    if !raw[value..].starts_with(b"null") {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + id.len() + 2);
    out.extend_from_slice(&raw[..value]);
    out.extend_from_slice(&serde_json::to_vec(id).ok()?);
    out.extend_from_slice(&raw[value + 4..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn made_up_ids_are_told_from_the_upstreams() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert!(is_made_up(&format!("msg_{hex}_in0")));
        assert!(is_made_up(&format!("fc_{hex}_12")));
        assert!(!is_made_up(
            "msg_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
        ));
        assert!(!is_made_up("rs_abc"));
        assert!(!is_made_up(&format!("msg_{hex}_inx")));
    }

    #[test]
    fn expanding_puts_the_earlier_conversation_first_and_drops_the_pointer() {
        let hex = "0123456789abcdef0123456789abcdef";
        let items = format!(
            r#"[{{"id":"msg_{hex}_in0","type":"message","role":"user","content":[{{"type":"input_text","text":"My name is Ann."}}],"status":"completed"}}]"#
        );
        let response = r#"{"id":"resp_up","output":[{"id":"rs_up1","type":"reasoning","summary":[]},{"id":"msg_up2","type":"message","role":"assistant","content":[{"type":"output_text","text":"Hi Ann.","annotations":[]}],"status":"completed"}]}"#;
        let raw = br#"{"model":"m","previous_response_id":"resp_up","input":"What is my name?","store":true}"#;
        let out = expand(
            raw,
            Earlier {
                input_items: items.as_bytes(),
                response: response.as_bytes(),
            },
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("previous_response_id").is_none());
        assert_eq!(v["store"], json!(true));
        let input = v["input"].as_array().unwrap();
        assert_eq!(input.len(), 4);
        assert!(input[0].get("id").is_none(), "made-up id left out");
        assert_eq!(input[0]["content"][0]["text"], "My name is Ann.");
        assert_eq!(input[1]["id"], "rs_up1", "the upstream's own ids stay");
        assert_eq!(input[2]["id"], "msg_up2");
        assert_eq!(
            input[3],
            json!({"role": "user", "content": "What is my name?"})
        );
    }

    #[test]
    fn the_model_is_spliced_and_nothing_else_moves() {
        let body = bytes::Bytes::from_static(br#"{"model": "alias",  "input":"hi"}"#);
        let out = with_model(&body, "gpt-4.1").unwrap();
        assert_eq!(&out[..], br#"{"model": "gpt-4.1",  "input":"hi"}"#);
        let same = with_model(&body, "alias").unwrap();
        assert_eq!(same.as_ptr(), body.as_ptr(), "the same buffer");
    }

    #[test]
    fn a_native_answer_is_kept_as_its_chat_message() {
        let body = br#"{"id":"resp_x","object":"response","output":[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","id":"m","role":"assistant","content":[{"type":"output_text","text":"Hello","annotations":[]}]},{"type":"function_call","id":"fc","call_id":"call_1","name":"f","arguments":"{\"a\":1}"}]}"#;
        let k = kept(body).unwrap();
        assert_eq!(k.id, "resp_x");
        let m: Value = serde_json::from_slice(&k.assistant).unwrap();
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["tool_calls"][0]["id"], "call_1");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
    }

    #[test]
    fn the_watcher_hands_over_the_completed_response_and_rewrites_sluices_error() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(None));
        let put = std::sync::Arc::clone(&got);
        let mut w = NativeWatcher::new(
            Some("resp_before".into()),
            Box::new(move |k, response| {
                assert_eq!(k.id, "resp_x");
                *put.lock().unwrap() = Some(response);
            }),
        );
        let mut out = Vec::new();
        let created = b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_x\",\"previous_response_id\":null,\"output\":[]}}\n\n";
        w.on_event(created, &mut out);
        assert!(got.lock().unwrap().is_none());
        let delta = b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"\\\"previous_response_id\\\":null\"}\n\n";
        w.on_event(delta, &mut out);
        let done = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":7,\"response\":{\"id\":\"resp_x\",\"previous_response_id\": null,\"output\":[]}}\n\n";
        w.on_event(done, &mut out);
        assert_eq!(
            got.lock().unwrap().as_deref(),
            Some(&br#"{"id":"resp_x","previous_response_id": "resp_before","output":[]}"#[..])
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.matches("\"resp_before\"").count(), 2, "{text}");
        assert!(
            text.contains(&String::from_utf8_lossy(delta).into_owned()),
            "text is text"
        );
        out.clear();
        let failed = b"data: {\"error\":{\"message\":\"cut\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\n";
        w.on_event(failed, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: error\ndata: "), "{text}");
        let v: Value =
            serde_json::from_str(text.trim_start_matches("event: error\ndata: ").trim()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "stream_interrupted");
        assert_eq!(v["sequence_number"], 8);
    }

    #[test]
    fn heads_are_read_off_the_first_bytes_or_parsed() {
        let fast = br#"{"type":"response.output_text.delta","sequence_number":12,"delta":"x"}"#;
        assert_eq!(
            head(fast),
            Head {
                kind: Some("response.output_text.delta"),
                sequence: Some(12)
            }
        );
        let other_order =
            br#"{"sequence_number":3,"response":{"type":"nested"},"type":"response.created"}"#;
        let h = head(other_order);
        assert_eq!((h.kind, h.sequence), (Some("response.created"), Some(3)));
        assert!(h.carries_response());
        assert!(!head(fast).carries_response());
        assert_eq!(head(br#"{"error":{"message":"x"}}"#).kind, None);
    }

    #[test]
    fn a_response_id_is_read_off_the_first_bytes_or_parsed() {
        assert_eq!(
            response_id(br#"{"id":"resp_1","object":"response"}"#).unwrap(),
            "resp_1"
        );
        assert_eq!(
            response_id(br#"{"object":"response", "id": "resp_2"}"#).unwrap(),
            "resp_2"
        );
        // OpenAI's own, indented.
        assert_eq!(
            response_id(b"{\n  \"id\": \"resp_3\",\n  \"object\": \"response\"\n}").unwrap(),
            "resp_3"
        );
        // Keys in another order (nested `id`s skipped), an escape in the id.
        let body = br#"{"output":[{"id":"msg_1"}],"id":"resp_\u0034","usage":{}}"#;
        assert_eq!(response_id(body).unwrap(), "resp_4");
        assert!(response_id(br#"{"object":"response"}"#).is_err());
        assert!(response_id(br#"{"object":"response""#).is_err());
        assert!(response_id(b"[1]").is_err());
    }

    #[test]
    fn usage_comes_from_the_final_events_response() {
        let data = br#"{"type":"response.completed","sequence_number":3,"response":{"id":"r","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":17}}}"#;
        let u = event_usage(data).unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_prompt_tokens,
                u.completion_tokens,
                u.reasoning_tokens
            ),
            (10, 4, 7, 2)
        );
    }
}
