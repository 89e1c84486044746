//! [`Sequence`]: one request's generation, token by token, whatever runs the forward passes.
//! It samples the next token from the logits it is given, turns tokens into text (UTF-8
//! across tokens, the first space of SentencePiece answers, stop strings held back), streams
//! the text to the caller, and says whether to feed a token, or that the request ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokio::sync::mpsc;

use super::calls::CallWatch;
use super::types::{
    ChatRequest, Completion, FinishReason, GenerationEvent, SamplingParams, TokenLogprob, Usage,
};
use crate::constrain::{Constraint, ConstraintError};
use crate::error::{Error, ErrorKind, Result};
use crate::stop::StopBuffer;
use crate::tokenizer::{GgufTokenizer, Utf8Stream};

/// Prompt tokens per prefill forward: bounds the `(heads, chunk, kv_len)` attention scores.
pub(super) const PREFILL_CHUNK: usize = 512;

/// A queued request.
pub(super) struct Job {
    pub(super) request: ChatRequest,
    /// The rendered prompt's tokens, checked against the context on submit.
    pub(super) prompt_ids: Vec<u32>,
    /// The request's constraint over this model's vocabulary, if it has one.
    pub(super) constraint: Option<Constraint>,
    /// The request's tool-call watch, if the model may call tools.
    pub(super) watch: Option<CallWatch>,
    pub(super) tx: mpsc::UnboundedSender<Result<GenerationEvent>>,
    /// When it was queued.
    pub(super) submitted: std::time::Instant,
}

/// What to do after a token was sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Run this token and sample again from its logits.
    Feed(u32),
    /// The request is complete: call [`Sequence::finish`].
    Finished(FinishReason),
    /// Nobody is listening any more: drop the sequence.
    Cancelled,
}

/// A request being generated.
pub(super) struct Sequence {
    job: Job,
    queue_wait: Duration,
    /// Completion tokens allowed: `max_tokens`, within the room the context leaves.
    limit: usize,
    /// Prompt tokens whose KV entries were reused from an earlier request.
    cached: usize,
    sampler: LogitsProcessor,
    stops: StopBuffer,
    utf8: Utf8Stream,
    /// SentencePiece: the space prefix of the answer's first word is not part of the answer.
    strip_space: bool,
    text: String,
    token_ids: Vec<u32>,
    stopped_by_string: bool,
    constraint: Option<Constraint>,
    watch: Option<CallWatch>,
    logprobs: Vec<TokenLogprob>,
    /// Of `logprobs`, those sent as [`GenerationEvent::Logprobs`].
    logprobs_sent: usize,
}

// === impl Sequence ===

impl Sequence {
    /// Starts `job` on a context of `context` positions, the first `cached` prompt tokens
    /// already in the KV cache. The queue wait ends here.
    pub(super) fn start(
        mut job: Job,
        context: usize,
        cached: usize,
        tokenizer: &GgufTokenizer,
    ) -> Self {
        let room = context.saturating_sub(job.prompt_ids.len());
        let limit = job.request.max_tokens.map_or(room, |max| max.min(room));
        let seed = job.request.sampling.seed.unwrap_or_else(random_seed);
        Self {
            queue_wait: job.submitted.elapsed(),
            limit,
            cached,
            sampler: LogitsProcessor::from_sampling(seed, sampling(&job.request.sampling)),
            stops: StopBuffer::new(&job.request.stop),
            utf8: Utf8Stream::default(),
            strip_space: tokenizer.strip_first_space,
            text: String::new(),
            token_ids: Vec::new(),
            stopped_by_string: false,
            constraint: job.constraint.take(),
            watch: job.watch.take(),
            logprobs: Vec::new(),
            logprobs_sent: 0,
            job,
        }
    }

    /// The prompt's tokens.
    pub(super) fn prompt(&self) -> &[u32] {
        &self.job.prompt_ids
    }

    /// Whether the caller went away.
    pub(super) fn is_cancelled(&self) -> bool {
        self.job.tx.is_closed()
    }

    /// Samples a token from the last position's `logits` and streams its text.
    pub(super) fn step(&mut self, tokenizer: &GgufTokenizer, mut logits: Vec<f32>) -> Result<Next> {
        if let Some(constraint) = &mut self.constraint {
            constraint.apply(&mut logits).map_err(constraint_error)?;
        }
        let kept = self.job.request.logprobs.map(|_| logits.clone());
        let n = logits.len();
        let logits = Tensor::from_vec(logits, n, &Device::Cpu).map_err(Error::backend)?;
        let next = self.sampler.sample(&logits).map_err(Error::backend)?;
        self.token_ids.push(next);
        // A constrained value ends with its last byte: no stop token is needed after it.
        let mut complete = false;
        if let Some(constraint) = &mut self.constraint {
            if constraint
                .accept(next, tokenizer.token_bytes(next))
                .map_err(constraint_error)?
            {
                return Ok(Next::Finished(FinishReason::Stop));
            }
            complete = self.watch.is_none() && constraint.finished();
        }
        if !self.job.request.ignore_eos && tokenizer.stop_ids.contains(&next) {
            return Ok(Next::Finished(FinishReason::Stop));
        }
        if let (Some(logits), Some(top)) = (kept, self.job.request.logprobs) {
            self.logprobs
                .push(token_logprob(tokenizer, &logits, next, top));
        }
        let mut piece = self.utf8.push(tokenizer.token_bytes(next));
        if self.strip_space && !piece.is_empty() {
            self.strip_space = false;
            if let Some(rest) = piece.strip_prefix(' ') {
                piece = rest.to_owned();
            }
        }
        if self.watch.is_some() {
            if let Some(next) = self.route(piece)? {
                return Ok(next);
            }
        } else if !piece.is_empty() {
            let pushed = self.stops.push(&piece);
            if !self.emit(pushed.emit) {
                return Ok(Next::Cancelled);
            }
            if pushed.stopped {
                self.stopped_by_string = true;
                return Ok(Next::Finished(FinishReason::Stop));
            }
        }
        if complete {
            return Ok(Next::Finished(FinishReason::Stop));
        }
        if self.token_ids.len() >= self.limit {
            return Ok(Next::Finished(FinishReason::Length));
        }
        if self.is_cancelled() {
            return Ok(Next::Cancelled);
        }
        Ok(Next::Feed(next))
    }

    /// Routes a piece of a generation that may call tools: content through the stop strings,
    /// call text as [`GenerationEvent::Call`]s. `Some` when the request ends here.
    fn route(&mut self, piece: String) -> Result<Option<Next>> {
        let Some(mut watch) = self.watch.take() else {
            return Ok(None);
        };
        let next = self.route_with(&mut watch, piece);
        self.watch = Some(watch);
        next
    }

    fn route_with(&mut self, watch: &mut CallWatch, piece: String) -> Result<Option<Next>> {
        if watch.in_call() {
            if !piece.is_empty() {
                let index = watch.push_call(&piece);
                if !self.send(GenerationEvent::Call { index, text: piece }) {
                    return Ok(Some(Next::Cancelled));
                }
            }
            return Ok(self.call_ended(watch));
        }
        let pushed = self.stops.push(&piece);
        let routed = watch.push_text(&pushed.emit);
        let mut content = routed.content;
        if let Some(mut first) = routed.call {
            // What the stop strings held back follows the marker: it is the call's.
            first.push_str(&self.stops.finish());
            self.stops = StopBuffer::new(&self.job.request.stop);
            match watch.constraint(&first) {
                Ok(constraint) => {
                    self.constraint = Some(constraint);
                    if !self.emit(content) {
                        return Ok(Some(Next::Cancelled));
                    }
                    if !first.is_empty() {
                        let index = watch.push_call(&first);
                        if !self.send(GenerationEvent::Call { index, text: first }) {
                            return Ok(Some(Next::Cancelled));
                        }
                    }
                    return Ok(self.call_ended(watch));
                }
                Err(text) => content.push_str(&text),
            }
        }
        if !self.emit(content) {
            return Ok(Some(Next::Cancelled));
        }
        if pushed.stopped {
            self.stopped_by_string = true;
            return Ok(Some(Next::Finished(FinishReason::Stop)));
        }
        Ok(None)
    }

    /// After call text: ends the call if its value is complete (and the answer, with one
    /// call allowed).
    fn call_ended(&mut self, watch: &mut CallWatch) -> Option<Next> {
        if !self.constraint.as_ref().is_some_and(Constraint::finished) {
            return None;
        }
        self.constraint = None;
        watch.end_call();
        watch
            .ends_after_call()
            .then_some(Next::Finished(FinishReason::Stop))
    }

    /// Ends the request: streams the text held back and sends the [`Completion`].
    pub(super) fn finish(mut self, reason: FinishReason) {
        let mut finish_reason = reason;
        // Unless a stop string matched, whatever was held back is ordinary output.
        if !self.stopped_by_string {
            let tail = self.utf8.finish();
            let mut rest = String::new();
            let mut stopped = false;
            if !tail.is_empty() {
                let pushed = self.stops.push(&tail);
                rest = pushed.emit;
                stopped = pushed.stopped;
            }
            if stopped {
                finish_reason = FinishReason::Stop;
            } else {
                rest.push_str(&self.stops.finish());
            }
            if let Some(watch) = &mut self.watch {
                if watch.in_call() {
                    rest.clear();
                } else {
                    let mut routed = watch.push_text(&rest);
                    routed.content.push_str(&watch.finish());
                    rest = routed.content;
                }
            }
            if !self.emit(rest) {
                return;
            }
        }
        let (calls, calls_complete) = match self.watch.take() {
            Some(watch) => {
                let complete = !watch.in_call();
                (watch.calls, complete)
            }
            None => (Vec::new(), true),
        };
        let completion = Completion {
            text: std::mem::take(&mut self.text),
            finish_reason,
            calls,
            calls_complete,
            logprobs: std::mem::take(&mut self.logprobs),
            usage: Usage {
                prompt_tokens: self.job.prompt_ids.len(),
                cached_prompt_tokens: self.cached,
                completion_tokens: self.token_ids.len(),
            },
            token_ids: std::mem::take(&mut self.token_ids),
            queue_wait: self.queue_wait,
        };
        let _ = self.job.tx.send(Ok(GenerationEvent::Done(completion)));
    }

    /// Ends the request with an error.
    pub(super) fn fail(self, error: Error) {
        fail(&self.job, error);
    }

    /// Sends a delta; `false` when the caller went away.
    fn emit(&mut self, delta: String) -> bool {
        if delta.is_empty() {
            return true;
        }
        self.text.push_str(&delta);
        self.send(GenerationEvent::Delta(delta))
    }

    /// Sends an event, after the log probabilities of the tokens that made it (when asked);
    /// `false` when the caller went away.
    fn send(&mut self, event: GenerationEvent) -> bool {
        if self.logprobs_sent < self.logprobs.len() {
            let new = self.logprobs[self.logprobs_sent..].to_vec();
            self.logprobs_sent = self.logprobs.len();
            if self
                .job
                .tx
                .send(Ok(GenerationEvent::Logprobs(new)))
                .is_err()
            {
                return false;
            }
        }
        self.job.tx.send(Ok(event)).is_ok()
    }
}

/// Token `id`'s log probability under `logits` (log-softmax), and the `top` likeliest.
fn token_logprob(tokenizer: &GgufTokenizer, logits: &[f32], id: u32, top: usize) -> TokenLogprob {
    let max = logits
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| (x - max).exp())
        .sum();
    let lse = max + sum.ln();
    let logprob = |i: usize| logits[i] - lse;
    let mut best: Vec<usize> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, x) in logits.iter().enumerate() {
            if !x.is_finite() {
                continue;
            }
            if best.len() < top || *x > logits[best[best.len() - 1]] {
                let at = best.partition_point(|&b| logits[b] >= *x);
                best.insert(at, i);
                best.truncate(top);
            }
        }
    }
    TokenLogprob {
        bytes: tokenizer.token_bytes(id).to_vec(),
        logprob: logprob(id as usize),
        top: best
            .into_iter()
            .map(|i| (tokenizer.token_bytes(i as u32).to_vec(), logprob(i)))
            .collect(),
    }
}

fn constraint_error(e: ConstraintError) -> Error {
    ErrorKind::Internal(format!("constrained decoding: {e}")).into()
}

/// Ends a job that could not run with an error.
pub(super) fn fail(job: &Job, error: Error) {
    let _ = job.tx.send(Err(error));
}

/// Maps request parameters to candle's sampler.
fn sampling(params: &SamplingParams) -> Sampling {
    let temperature = params.temperature.unwrap_or(1.0);
    if temperature < 1e-7 {
        return Sampling::ArgMax;
    }
    let k = params.top_k.filter(|&k| k > 0);
    let p = params.top_p.filter(|&p| p < 1.0);
    match (k, p) {
        (None, None) => Sampling::All { temperature },
        (Some(k), None) => Sampling::TopK { k, temperature },
        (None, Some(p)) => Sampling::TopP { p, temperature },
        (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
    }
}

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ SEED_COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}
