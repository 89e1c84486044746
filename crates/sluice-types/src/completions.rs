//! `POST /v1/completions` (legacy text completions): the light request view.
//!
//! One pass over the body checks that it is a JSON object with a string `model` and a
//! `prompt` in one of the four forms OpenAI takes (a string, an array of strings, an array
//! of token ids, an array of token-id arrays), reads the fields sluice acts on, and records
//! where `model` and `stream_options` sit so they can be rewritten by splicing, as for chat.
//! Every other field (`suffix`, `echo`, `logprobs`, `best_of`, `n`, ...) passes through
//! unparsed.

use crate::chat::{expect_object, model_field, opt_f64, opt_u64, stream_fields, StreamFields};
use crate::splice::ModelAndUsage;
use crate::{json_error, InvalidRequest};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// Completion tokens when the request sets no `max_tokens`: OpenAI's default for this API
/// (vLLM's too). Budgets reserve it, and local models stop there.
pub const DEFAULT_MAX_TOKENS: u64 = 16;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow, default)]
    seed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
}

/// The form of a request's `prompt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptForm {
    /// One string.
    Text,
    /// An array of this many strings (each its own completion).
    Texts(usize),
    /// An array of token ids (one prompt, already tokenized).
    Tokens,
    /// An array of this many token-id arrays.
    TokenLists(usize),
}

/// What sluice knows about a legacy completions request after one pass over its body.
#[derive(Debug, Clone)]
pub struct CompletionRequest<'a> {
    /// The model or route the client named.
    pub model: Cow<'a, str>,
    model_span: Range<usize>,
    /// `"stream": true`.
    pub stream: bool,
    /// The client asked for a usage chunk at the end of the stream.
    pub include_usage: bool,
    stream_options: Option<(Range<usize>, &'a str)>,
    /// `max_tokens`, when given (see [`DEFAULT_MAX_TOKENS`]).
    pub max_tokens: Option<u64>,
    /// `temperature`, when given.
    pub temperature: Option<f64>,
    /// A `seed` was given.
    pub has_seed: bool,
    /// The form of `prompt`.
    pub prompt: PromptForm,
    /// Prompt tokens estimated from the body: a quarter of the text's bytes, or the
    /// number of token ids.
    estimated_prompt_tokens: u64,
    /// The `user` field, when given.
    pub user: Option<Cow<'a, str>>,
}

const PROMPT_FORMS: &str =
    "a string, an array of strings, an array of token ids, or an array of token-id arrays";

fn bad_prompt(detail: &str) -> InvalidRequest {
    InvalidRequest::param(
        "prompt",
        format!("`prompt` {detail}; expected {PROMPT_FORMS}"),
    )
}

/// The form of `prompt` and its estimated tokens.
fn read_prompt(raw: Option<&RawValue>) -> Result<(PromptForm, u64), InvalidRequest> {
    let raw = raw.ok_or_else(|| {
        InvalidRequest::param("prompt", format!("`prompt` is required: {PROMPT_FORMS}"))
    })?;
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => Ok((PromptForm::Text, (text.len() as u64).div_ceil(4))),
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|_| bad_prompt("is not valid"))?;
            let Some(first) = items.first() else {
                return Err(bad_prompt("is an empty array"));
            };
            match first.get().as_bytes().first() {
                Some(b'"') => {
                    if items.iter().any(|i| !i.get().starts_with('"')) {
                        return Err(bad_prompt("mixes strings with other values"));
                    }
                    Ok((
                        PromptForm::Texts(items.len()),
                        (text.len() as u64).div_ceil(4),
                    ))
                }
                Some(b'[') => {
                    let mut tokens = 0;
                    for item in &items {
                        let ids: Vec<u32> = serde_json::from_str(item.get())
                            .map_err(|_| bad_prompt("holds an array that is not token ids"))?;
                        tokens += ids.len() as u64;
                    }
                    Ok((PromptForm::TokenLists(items.len()), tokens))
                }
                _ => {
                    let ids: Vec<u32> = serde_json::from_str(text)
                        .map_err(|_| bad_prompt("holds values that are not token ids"))?;
                    Ok((PromptForm::Tokens, ids.len() as u64))
                }
            }
        }
        _ => Err(bad_prompt("has the wrong type")),
    }
}

impl<'a> CompletionRequest<'a> {
    /// Parses and validates a legacy completions request body.
    pub fn parse(body: &'a [u8]) -> Result<Self, InvalidRequest> {
        expect_object(body)?;
        let wire: Wire<'a> = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
        let (model, model_span) = model_field(body, wire.model)?;
        let (prompt, estimated_prompt_tokens) = read_prompt(wire.prompt)?;
        let StreamFields {
            stream,
            include_usage,
            options: stream_options,
        } = stream_fields(body, wire.stream, wire.stream_options)?;
        Ok(Self {
            model,
            model_span,
            stream,
            include_usage,
            stream_options,
            max_tokens: opt_u64(wire.max_tokens, "max_tokens")?,
            temperature: opt_f64(wire.temperature, "temperature")?,
            has_seed: wire.seed.is_some_and(|s| s.get() != "null"),
            prompt,
            estimated_prompt_tokens,
            user: wire.user,
        })
    }

    /// The body to send upstream: `model` replaced by `upstream_model` when it differs, and,
    /// for a stream, `stream_options.include_usage` set when `force_usage` asks for it. Without
    /// changes it is the same buffer.
    pub fn upstream_body(&self, body: &Bytes, upstream_model: &str, force_usage: bool) -> Bytes {
        ModelAndUsage {
            model: &self.model,
            model_span: &self.model_span,
            stream: self.stream,
            include_usage: self.include_usage,
            stream_options: self.stream_options.as_ref(),
        }
        .apply(body, upstream_model, force_usage)
    }

    /// The most completion tokens the request may use: `max_tokens`, else OpenAI's default.
    pub fn output_cap(&self) -> u64 {
        self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
    }

    /// Prompt tokens estimated from the body, for limits and routing before the provider
    /// has counted.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        self.estimated_prompt_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CompletionRequest<'_>, InvalidRequest> {
        CompletionRequest::parse(s.as_bytes())
    }

    #[test]
    fn reads_fields_and_prompt_forms() {
        let r = parse(r#"{"model":"m","prompt":"Once upon a time","stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"temperature":0,"seed":3,"user":"u","echo":true}"#).unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream && r.include_usage && r.has_seed);
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.output_cap(), 5);
        assert_eq!(r.temperature, Some(0.0));
        assert_eq!(r.user.as_deref(), Some("u"));
        assert_eq!(r.prompt, PromptForm::Text);
        let forms = [
            (r#"["a","b"]"#, PromptForm::Texts(2), 3),
            (r#"[1,2,3]"#, PromptForm::Tokens, 3),
            (r#"[[1,2],[3]]"#, PromptForm::TokenLists(2), 3),
        ];
        for (prompt, form, tokens) in forms {
            let body = format!(r#"{{"model":"m","prompt":{prompt}}}"#);
            let r = CompletionRequest::parse(body.as_bytes()).unwrap();
            assert_eq!(r.prompt, form, "{prompt}");
            assert_eq!(r.estimated_prompt_tokens(), tokens, "{prompt}");
            assert_eq!(r.output_cap(), DEFAULT_MAX_TOKENS);
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (r#"{"model":"m"}"#, "prompt", "`prompt` is required"),
            (r#"{"model":"m","prompt":5}"#, "prompt", "wrong type"),
            (r#"{"model":"m","prompt":null}"#, "prompt", "is required"),
            (r#"{"model":"m","prompt":[]}"#, "prompt", "empty array"),
            (r#"{"model":"m","prompt":["a",1]}"#, "prompt", "mixes"),
            (
                r#"{"model":"m","prompt":[1,"a"]}"#,
                "prompt",
                "not token ids",
            ),
            (
                r#"{"model":"m","prompt":[1,-2]}"#,
                "prompt",
                "not token ids",
            ),
            (
                r#"{"model":"m","prompt":[[1],["a"]]}"#,
                "prompt",
                "not token ids",
            ),
            (r#"{"prompt":"x"}"#, "model", "provide a model"),
            (
                r#"{"model":"m","prompt":"x","stream":1}"#,
                "stream",
                "boolean",
            ),
            (
                r#"{"model":"m","prompt":"x","max_tokens":"9"}"#,
                "max_tokens",
                "integer",
            ),
            (
                r#"{"model":"m","prompt":"x","temperature":"hot"}"#,
                "temperature",
                "number",
            ),
            (
                r#"{"model":"m","prompt":"x","stream_options":3}"#,
                "stream_options",
                "object",
            ),
        ];
        for (body, param, want) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.param, Some(param), "{body}: {}", e.message);
            assert!(e.message.contains(want), "{body}: {}", e.message);
        }
        assert!(parse("[1]").unwrap_err().message.contains("JSON object"));
    }

    #[test]
    fn splices_model_and_usage_as_chat_does() {
        let raw = r#"{"model":"alias","prompt":"hi","stream":true,"suffix":"x"}"#;
        let body = Bytes::from(raw);
        let r = CompletionRequest::parse(&body).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&r.upstream_body(&body, "gpt-3.5-turbo-instruct", true))
                .unwrap();
        assert_eq!(v["model"], "gpt-3.5-turbo-instruct");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["suffix"], "x");
        let same = r.upstream_body(&body, "alias", false);
        assert_eq!(same.as_ptr(), body.as_ptr());
    }
}
