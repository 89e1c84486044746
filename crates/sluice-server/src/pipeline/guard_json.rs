//! Output validation (a `validate_json` guardrail): a chat request that asks for
//! `response_format: {"type": "json_schema", "json_schema": {"schema": ...}}` (the
//! Responses API's `text.format` and Anthropic's structured outputs become one at the edge)
//! has each choice's content of its answer parsed and checked against the schema
//! ([`sluice_guard::schema`]). A whole answer that fails is asked for again (`retries`
//! times; each try an attempt, charged), then refused (502 `output_validation_failed`) or
//! passed with `x-sluice-output-valid: false`, as configured. A stream is checked when it
//! ends ([`super::guard_stream`]).

use crate::state::AppState;
use serde_json::Value;
use sluice_core::{Error, ErrorKind};
use sluice_guard::{Action, Finding};
use sluice_types::Usage;
use std::sync::Arc;

/// The check of one request's answers.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The `validate_json` guardrail's name.
    pub guardrail: String,
    /// The request's schema.
    schema: Arc<Value>,
    /// Tries left.
    pub retries: u32,
    /// Pass a failing answer (flagged) rather than refuse it.
    pub pass: bool,
}

impl Validation {
    /// The check the first of the guardrails `applying` with `validate_json` asks of the
    /// chat request `body`, when it asks for a JSON schema.
    pub fn of(state: &AppState, applying: &[usize], body: &[u8]) -> Option<Self> {
        let (g, v) = applying
            .iter()
            .find_map(|&g| Some((g, state.guardrails[g].validate_json?)))?;
        let request: Value = serde_json::from_slice(body).ok()?;
        let format = &request["response_format"];
        if format["type"] != "json_schema" {
            return None;
        }
        let schema = format["json_schema"].get("schema")?.clone();
        Some(Self {
            guardrail: state.guardrails[g].name.clone(),
            schema: Arc::new(schema),
            retries: v.retries,
            pass: v.pass,
        })
    }

    /// Checks one choice's content: JSON that matches the schema.
    pub fn check_text(&self, text: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("the content is not JSON ({e})"))?;
        sluice_guard::schema::validate(&self.schema, &value)
    }

    /// Checks every choice of a whole chat answer that has text content (a refusal or a
    /// tool call has none and passes).
    pub fn check_answer(&self, body: &[u8]) -> Result<(), String> {
        let Ok(answer) = serde_json::from_slice::<Value>(body) else {
            return Err("the answer is not JSON".into());
        };
        let choices = answer["choices"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, choice) in choices.iter().enumerate() {
            if let Some(text) = choice["message"]["content"].as_str() {
                self.check_text(text).map_err(|e| match choices.len() {
                    1 => e,
                    _ => format!("choice {i}: {e}"),
                })?;
            }
        }
        Ok(())
    }

    /// The finding of a failed check that did `action`.
    pub fn finding(&self, action: Action) -> Finding {
        Finding {
            guardrail: self.guardrail.clone(),
            detector: "json_schema".into(),
            action,
        }
    }

    /// The 502 of an answer that failed for `reason`.
    pub fn error(&self, reason: String) -> Error {
        ErrorKind::OutputInvalid {
            guardrail: self.guardrail.clone(),
            reason,
        }
        .into()
    }
}

/// Two answers' usage together (an answer asked for again and its retry).
pub fn add(a: Usage, b: Usage) -> Usage {
    Usage {
        prompt_tokens: a.prompt_tokens + b.prompt_tokens,
        completion_tokens: a.completion_tokens + b.completion_tokens,
        cached_prompt_tokens: a.cached_prompt_tokens + b.cached_prompt_tokens,
        reasoning_tokens: a.reasoning_tokens + b.reasoning_tokens,
        cache_write_tokens: a.cache_write_tokens + b.cache_write_tokens,
        characters: a.characters + b.characters,
        audio_ms: a.audio_ms + b.audio_ms,
        images: a.images + b.images,
    }
}
