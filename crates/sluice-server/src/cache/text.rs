//! Cache entries of legacy text completions (`/v1/completions`), as [`super::entry`] is for
//! chat: the entry's body is the `text_completion` object; a streamed answer is assembled
//! into it as it passes ([`TextAssembler`]), and a streaming client is served an entry as
//! `text_completion` events ([`to_sse`]).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_providers::text_completion::{TextChoice, TextWriter};
use sluice_types::sse::event_data;
use sluice_types::Usage;
use std::borrow::Cow;

/// A stream event, or a stored body: the same shape.
#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    created: Option<u64>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    system_fingerprint: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Vec<ChoiceIn<'a>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: usize,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    logprobs: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<CachedIn>,
    #[serde(default)]
    completion_tokens_details: Option<ReasoningIn>,
}

#[derive(Deserialize)]
struct CachedIn {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize)]
struct ReasoningIn {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl From<UsageIn> for Usage {
    fn from(u: UsageIn) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_prompt_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            reasoning_tokens: u
                .completion_tokens_details
                .map_or(0, |d| d.reasoning_tokens),
            ..Self::default()
        }
    }
}

/// One choice as it builds up.
#[derive(Debug, Default)]
struct Choice {
    text: String,
    finish_reason: Option<String>,
}

/// Builds a `text_completion` from the events of a stream as they pass.
#[derive(Debug, Default)]
pub struct TextAssembler {
    id: String,
    created: u64,
    model: String,
    system_fingerprint: Option<String>,
    choices: Vec<Choice>,
    /// Something in the stream cannot be stored faithfully (an error event, an event that
    /// does not parse).
    unstorable: bool,
    /// The stream carries what the completion leaves out (logprobs): not stored.
    lossy: bool,
    /// The usage of the stream's usage event, if it had one.
    usage: Option<Usage>,
}

impl TextAssembler {
    /// Feeds one SSE event as the client received it.
    pub fn event(&mut self, event: &[u8]) {
        let Some(data) = event_data(event) else {
            return;
        };
        if data.as_ref() == b"[DONE]" {
            return;
        }
        let Ok(o) = serde_json::from_slice::<Object<'_>>(&data) else {
            self.unstorable = true;
            return;
        };
        if o.error.is_some() {
            self.unstorable = true;
            return;
        }
        if let Some(u) = o.usage {
            if let Ok(u) = serde_json::from_str::<UsageIn>(u.get()) {
                self.usage = Some(Usage::from(u));
            }
        }
        if let Some(id) = o.id.filter(|_| self.id.is_empty()) {
            self.id = id.into_owned();
        }
        if let Some(c) = o.created {
            self.created = c;
        }
        if let Some(m) = o.model.filter(|_| self.model.is_empty()) {
            self.model = m.into_owned();
        }
        if let Some(f) = o.system_fingerprint {
            self.system_fingerprint = Some(f.into_owned());
        }
        for c in o.choices {
            if c.logprobs.is_some_and(|l| l.get() != "null") {
                self.lossy = true;
            }
            if self.choices.len() <= c.index {
                self.choices.resize_with(c.index + 1, Choice::default);
            }
            let choice = &mut self.choices[c.index];
            if let Some(t) = c.text {
                choice.text.push_str(&t);
            }
            if let Some(f) = c.finish_reason {
                choice.finish_reason = Some(f.into_owned());
            }
        }
    }

    /// The completion, with `usage`; `None` if the stream cannot be stored.
    pub fn finish(self, usage: &Usage) -> Option<Bytes> {
        if self.lossy {
            return None;
        }
        self.completion(Some(usage))
    }

    /// The completion the stream says (without its logprobs), with `usage`, else the
    /// usage of its usage event (else zeros); `None` if it says none.
    pub fn completion(self, usage: Option<&Usage>) -> Option<Bytes> {
        if self.unstorable || self.choices.is_empty() {
            return None;
        }
        let usage = usage.copied().or(self.usage).unwrap_or_default();
        let writer = TextWriter::of_completion(
            &self.id,
            self.created,
            &self.model,
            self.system_fingerprint.as_deref(),
        );
        let choices: Vec<TextChoice<'_>> = self
            .choices
            .iter()
            .enumerate()
            .map(|(index, c)| TextChoice {
                text: &c.text,
                index,
                logprobs: None,
                finish_reason: c.finish_reason.as_deref(),
            })
            .collect();
        Some(Bytes::from(writer.whole(&choices, &usage)))
    }
}

/// A stored `text_completion` as the events a streaming client expects: one event with
/// every choice's whole text, one with their finish reasons, the usage event when the client
/// asked for it, then `[DONE]`. `None` if `body` is not a text completion.
pub fn to_sse(body: &[u8], include_usage: bool) -> Option<Bytes> {
    let o: Object<'_> = serde_json::from_slice(body).ok()?;
    if o.object.as_deref() != Some("text_completion") || o.choices.is_empty() {
        return None;
    }
    let writer = TextWriter::of_completion(
        o.id.as_deref().unwrap_or_default(),
        o.created.unwrap_or_default(),
        o.model.as_deref().unwrap_or_default(),
        o.system_fingerprint.as_deref(),
    );
    let texts: Vec<TextChoice<'_>> = o
        .choices
        .iter()
        .map(|c| TextChoice {
            text: c.text.as_deref().unwrap_or_default(),
            index: c.index,
            logprobs: None,
            finish_reason: None,
        })
        .collect();
    let finishes: Vec<TextChoice<'_>> = o
        .choices
        .iter()
        .map(|c| TextChoice {
            text: "",
            index: c.index,
            logprobs: None,
            finish_reason: Some(c.finish_reason.as_deref().unwrap_or("stop")),
        })
        .collect();
    let mut out = Vec::with_capacity(body.len() + 512);
    writer.choices(&mut out, &texts);
    writer.choices(&mut out, &finishes);
    let usage = o
        .usage
        .and_then(|u| serde_json::from_str::<UsageIn>(u.get()).ok());
    if let (true, Some(u)) = (include_usage, usage) {
        writer.usage(&mut out, &Usage::from(u));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::sse::{Keep, SseScanner};

    fn assemble(stream: &[u8], usage: &Usage) -> Option<Bytes> {
        let mut a = TextAssembler::default();
        let mut scanner = SseScanner::new(1 << 20);
        let _ = scanner.push(Bytes::copy_from_slice(stream), |ev| {
            a.event(ev);
            Keep::Yes
        });
        a.finish(usage)
    }

    #[test]
    fn a_stream_assembles_into_a_text_completion_and_replays_as_the_same_stream() {
        let stream = concat!(
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"text\":\"Once\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[{\"text\":\" upon\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":7,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n",
            "data: [DONE]\n\n",
        );
        let usage = Usage {
            prompt_tokens: 4,
            completion_tokens: 2,
            ..Usage::default()
        };
        let body = assemble(stream.as_bytes(), &usage).expect("storable");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["id"], "cmpl-1");
        assert_eq!(v["choices"][0]["text"], "Once upon");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 6);

        let sse = to_sse(&body, true).expect("a text completion");
        let text = std::str::from_utf8(&sse).expect("utf-8");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(text.contains("\"choices\":[],\"usage\""), "{text}");
        assert_eq!(assemble(&sse, &usage), Some(body.clone()));
        let quiet = to_sse(&body, false).expect("a text completion");
        assert!(!std::str::from_utf8(&quiet)
            .expect("utf-8")
            .contains("usage"));
    }

    #[test]
    fn what_cannot_be_stored_or_replayed() {
        let usage = Usage::default();
        assert_eq!(
            assemble(b"data: {\"error\":{\"message\":\"cut\"}}\n\n", &usage),
            None
        );
        let logprobs = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"a\",\"logprobs\":{\"tokens\":[\"a\"]},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(assemble(logprobs, &usage), None);
        assert_eq!(assemble(b"data: [DONE]\n\n", &usage), None);
        let chat = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"x"}}]}"#;
        assert_eq!(to_sse(chat, true), None);
    }
}
