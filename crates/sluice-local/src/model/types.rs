//! The public types of a chat generation: the request, its events and its result.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::constrain::Grammar;
use crate::error::{ErrorKind, Result};
use crate::template::ChatMessage;
use crate::tools::ToolCalls;

/// Sampling parameters; the defaults are OpenAI's (temperature 1, no top-p/top-k cut, random seed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingParams {
    /// `0` is greedy (argmax). `None`: 1.
    pub temperature: Option<f64>,
    /// Nucleus sampling; `None` or `>= 1` disables it.
    pub top_p: Option<f64>,
    /// Top-k sampling; `None` or `0` disables it.
    pub top_k: Option<usize>,
    /// Seed of the sampler; the same seed, prompt and model give the same output.
    pub seed: Option<u64>,
}

/// A chat completion request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation, rendered through the model's chat template.
    pub messages: Vec<ChatMessage>,
    /// A raw prompt (legacy text completions): tokenized as it is (special tokens matched,
    /// BOS added when the model asks for it), without the chat template; `messages` is then
    /// ignored.
    pub raw_prompt: Option<String>,
    /// Completion token limit; `None`: until EOS or the context is full.
    pub max_tokens: Option<usize>,
    /// Stop strings; the matched text is not returned.
    pub stop: Vec<String>,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Keep generating past EOS/end-of-turn tokens (llama.cpp's `ignore_eos`). A constrained
    /// request still ends when its value is complete.
    pub ignore_eos: bool,
    /// Output constrained to a JSON Schema or to any JSON object (`response_format`): every
    /// token that would break it is masked before sampling, and generation ends when the
    /// value is complete.
    pub constraint: Option<Arc<Grammar>>,
    /// OpenAI's tool objects, rendered by a chat template that has a tool format.
    pub tools: Option<Vec<serde_json::Value>>,
    /// Text the answer begins with, put in the prompt after the rendered conversation (a
    /// tool format's call marker, when a call is forced); not part of the output.
    pub answer_prefix: Option<String>,
    /// The model may call tools: calls are watched for, constrained and streamed as
    /// [`GenerationEvent::Call`].
    pub tool_calls: Option<ToolCalls>,
    /// Log probabilities of the sampled tokens, with this many likeliest alternatives each
    /// ([`Completion::logprobs`]).
    pub logprobs: Option<usize>,
}

/// A sampled token's log probability (natural log, of the model's distribution at
/// temperature 1, after a constraint's mask), with the likeliest alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's bytes (a piece of a character when it splits one).
    pub bytes: Vec<u8>,
    /// Its log probability.
    pub logprob: f32,
    /// The likeliest tokens at that position, most likely first: bytes and log probability.
    pub top: Vec<(Vec<u8>, f32)>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS / end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

// === impl FinishReason ===

impl FinishReason {
    /// OpenAI's `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens of the rendered prompt (including a BOS the runtime added).
    pub prompt_tokens: usize,
    /// Of `prompt_tokens`, those whose keys and values were kept from an earlier request
    /// with the same beginning (multi-turn chat) and not run again.
    pub cached_prompt_tokens: usize,
    /// Tokens sampled, including the EOS or the token that completed a stop string.
    pub completion_tokens: usize,
}

/// The result of a finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The generated text (all deltas concatenated; calls are not text).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// The calls made (with [`ChatRequest::tool_calls`]): each one's JSON text, the last one
    /// cut short if generation ended inside it.
    pub calls: Vec<String>,
    /// Whether the last call is complete.
    pub calls_complete: bool,
    /// With [`ChatRequest::logprobs`]: each sampled token's, end-of-turn tokens excepted.
    pub logprobs: Vec<TokenLogprob>,
    /// Every sampled token id, in order.
    pub token_ids: Vec<u32>,
    /// How long the request waited in the queue for a slot.
    pub queue_wait: Duration,
}

/// One item of a [`Generation`] stream.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// New text, always valid UTF-8 and never part of a stop string.
    Delta(String),
    /// With [`ChatRequest::logprobs`]: the tokens sampled since the last event, sent just
    /// before the text or call they make (the [`Completion`] has them all, those held back
    /// as a stop string included).
    Logprobs(Vec<TokenLogprob>),
    /// More of call `index`'s JSON text (`{"name": …, <arguments>: …}`).
    Call {
        /// Which call of the answer, from 0.
        index: usize,
        /// The text.
        text: String,
    },
    /// The last event: the whole result.
    Done(Completion),
}

/// A submitted request: a stream of [`GenerationEvent`]s ending with `Done` or an error.
#[derive(Debug)]
pub struct Generation {
    pub(super) rx: mpsc::UnboundedReceiver<Result<GenerationEvent>>,
    /// The prompt's length in tokens (known when it is submitted).
    pub(super) prompt_tokens: usize,
}

// === impl Generation ===

impl Generation {
    /// The prompt's length in tokens, as [`Completion`]'s usage will count it (its part
    /// reused from a kept prompt cache is known only then).
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// The next event; `None` after `Done` or an error.
    pub async fn next(&mut self) -> Option<Result<GenerationEvent>> {
        self.rx.recv().await
    }

    /// The next event, blocking the thread (not for use inside an async runtime).
    pub fn blocking_next(&mut self) -> Option<Result<GenerationEvent>> {
        self.rx.blocking_recv()
    }

    /// Waits for the end and returns the [`Completion`].
    pub async fn collect(mut self) -> Result<Completion> {
        while let Some(event) = self.next().await {
            if let GenerationEvent::Done(completion) = event? {
                return Ok(completion);
            }
        }
        Err(ErrorKind::Internal("generation ended without a result".into()).into())
    }

    /// The underlying channel, e.g. to wrap in a `Stream`.
    pub fn into_receiver(self) -> mpsc::UnboundedReceiver<Result<GenerationEvent>> {
        self.rx
    }
}
