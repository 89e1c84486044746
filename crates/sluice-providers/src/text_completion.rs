//! OpenAI's legacy text completion shapes (`POST /v1/completions`): the whole
//! `text_completion` body and the events of its stream, as typed serialisation structs. Local
//! models write them, and the response cache replays a stored completion with them.
//!
//! Format (OpenAI's Completions API reference): a body is `{"id": "cmpl-...", "object":
//! "text_completion", "created", "model", "choices": [{"text", "index", "logprobs",
//! "finish_reason"}], "usage"}`; a stream sends objects of the same shape, each choice carrying
//! the next piece of its text (`finish_reason` on its last), then with
//! `stream_options.include_usage` one with `choices: []` and the usage, then `data: [DONE]`.

use crate::chunks::{now_secs, UsageOut};
use serde::Serialize;
use sluice_types::Usage;

/// One choice of a `text_completion` (whole, or a stream event's piece).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TextChoice<'a> {
    /// The text (a stream event: the next piece).
    pub text: &'a str,
    /// The choice's index.
    pub index: usize,
    /// Always `null`: sluice writes no log probabilities.
    pub logprobs: Option<()>,
    /// Why it ended (`stop`, `length`), on its last piece.
    pub finish_reason: Option<&'a str>,
}

impl<'a> TextChoice<'a> {
    /// Choice 0 with `text`, ended by `finish_reason` when given.
    pub fn first(text: &'a str, finish_reason: Option<&'a str>) -> Self {
        Self {
            text,
            index: 0,
            logprobs: None,
            finish_reason,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

/// Writes the `text_completion` objects of one answer: the whole body, or a stream's events.
#[derive(Debug, Clone)]
pub struct TextWriter {
    /// The answer's `id`.
    pub id: String,
    created: u64,
    model: String,
    system_fingerprint: Option<String>,
}

impl TextWriter {
    /// A writer for an answer of `model`, its id `cmpl-{id_prefix}-{random}`.
    pub fn new(model: &str, id_prefix: &str, random: u64) -> Self {
        Self {
            id: format!("cmpl-{id_prefix}-{random:016x}"),
            created: now_secs(),
            model: model.to_string(),
            system_fingerprint: None,
        }
    }

    /// A writer for an existing completion: its `id`, `created`, `model` and
    /// `system_fingerprint`.
    pub fn of_completion(
        id: &str,
        created: u64,
        model: &str,
        system_fingerprint: Option<&str>,
    ) -> Self {
        Self {
            id: id.to_string(),
            created,
            model: model.to_string(),
            system_fingerprint: system_fingerprint.map(str::to_string),
        }
    }

    fn body<'a>(&'a self, choices: &'a [TextChoice<'a>], usage: Option<&Usage>) -> Body<'a> {
        Body {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            system_fingerprint: self.system_fingerprint.as_deref(),
            choices,
            usage: usage.map(UsageOut::from),
        }
    }

    /// The whole body: `choices` and `usage`.
    pub fn whole(&self, choices: &[TextChoice<'_>], usage: &Usage) -> Vec<u8> {
        // Plain structs of strings and numbers always serialise.
        serde_json::to_vec(&self.body(choices, Some(usage))).unwrap_or_default()
    }

    fn event(&self, out: &mut Vec<u8>, choices: &[TextChoice<'_>], usage: Option<&Usage>) {
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, &self.body(choices, usage));
        out.extend_from_slice(b"\n\n");
    }

    /// A stream event with these choices' pieces.
    pub fn choices(&self, out: &mut Vec<u8>, choices: &[TextChoice<'_>]) {
        self.event(out, choices, None);
    }

    /// A stream event with the next piece of choice 0.
    pub fn text(&self, out: &mut Vec<u8>, text: &str) {
        self.choices(out, &[TextChoice::first(text, None)]);
    }

    /// The usage event OpenAI sends last when `stream_options.include_usage` is set.
    pub fn usage(&self, out: &mut Vec<u8>, usage: &Usage) {
        self.event(out, &[], Some(usage));
    }

    /// The end of a finished stream of one choice: its `finish_reason` (with an empty piece),
    /// the usage event when asked for, and `[DONE]`.
    pub fn finish(&self, out: &mut Vec<u8>, finish: &str, usage: Option<&Usage>) {
        self.choices(out, &[TextChoice::first("", Some(finish))]);
        if let Some(u) = usage {
            self.usage(out, u);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_events_are_openai_shaped() {
        let w = TextWriter::of_completion("cmpl-1", 7, "m", None);
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            ..Usage::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&w.whole(&[TextChoice::first("hi", Some("stop"))], &usage))
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "cmpl-1", "object": "text_completion", "created": 7,
                "model": "m", "choices": [{"text": "hi", "index": 0, "logprobs": null,
                "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                "total_tokens": 5, "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0}}})
        );
        let mut out = Vec::new();
        w.text(&mut out, "h");
        w.finish(&mut out, "length", Some(&usage));
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(events.len(), 4, "{text}");
        assert_eq!(
            events[0],
            r#"{"id":"cmpl-1","object":"text_completion","created":7,"model":"m","choices":[{"text":"h","index":0,"logprobs":null,"finish_reason":null}]}"#
        );
        assert!(events[1].contains(r#""finish_reason":"length""#));
        assert!(events[2].contains(r#""choices":[],"usage""#));
        assert_eq!(events[3], "[DONE]");
    }
}
