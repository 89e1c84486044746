//! [`ChatModel`]: a loaded GGUF chat model serving up to `parallel` sequences at once.
//!
//! # Threads and sequences
//!
//! Each sequence slot is a dedicated OS thread owning its model state and KV cache: on the
//! native engine a `native::Session` (the weights `Arc`-shared by all slots, its own worker
//! threads); on candle a `ModelWeights` value. For llama candle's slots are clones of one
//! loaded model (the weights are `Arc`-shared, only the caches are per slot); candle's qwen2
//! `ModelWeights` is not `Clone`, so each qwen2 slot loads its own copy of the weights (the
//! memory accounting counts `parallel` copies). Nothing runs on the caller's (tokio) threads
//! except rendering and tokenizing the prompt (to refuse one too long for the context at once)
//! and queueing: [`ChatModel::submit`] puts the request in a bounded FIFO and returns a [`Generation`] whose
//! tokio channel carries the text deltas and the final [`Completion`]; a full queue is
//! [`ErrorKind::QueueFull`] at once. Dropping the [`Generation`] cancels the request at the next
//! token. Dropping the model fails queued and running requests with [`ErrorKind::Unloaded`] and
//! joins the slot threads.
//!
//! candle's CPU matmuls share one process-wide thread pool, which serialises concurrent
//! forwards from several slots; slots still overlap sampling, tokenizing and prompt rendering,
//! and keep a long generation from blocking a short one. Native slots compute independently.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use tokio::sync::mpsc;

use crate::engine::Chosen;
pub use crate::engine::{Engine, LoadOptions, DEFAULT_CONTEXT_LENGTH};
use crate::error::{panic_error, Error, ErrorKind, Result};
use crate::gguf::file::{open, read_content, read_header};
pub use crate::gguf::KvCacheType;
use crate::gguf::{self, Architecture, MemoryUsage, ModelInfo};
use crate::stop::StopBuffer;
use crate::template::{ChatMessage, ChatTemplate, DEFAULT_CHAT_TEMPLATE};
use crate::tokenizer::{GgufTokenizer, Utf8Stream};

/// Prompt tokens per prefill forward: bounds the `(heads, chunk, kv_len)` attention scores.
const PREFILL_CHUNK: usize = 512;

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
    /// Completion token limit; `None`: until EOS or the context is full.
    pub max_tokens: Option<usize>,
    /// Stop strings; the matched text is not returned.
    pub stop: Vec<String>,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Keep generating past EOS/end-of-turn tokens (llama.cpp's `ignore_eos`).
    pub ignore_eos: bool,
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
    /// Tokens sampled, including the EOS or the token that completed a stop string.
    pub completion_tokens: usize,
}

/// The result of a finished generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The generated text (all deltas concatenated).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Every sampled token id, in order.
    pub token_ids: Vec<u32>,
    /// How long the request waited in the queue for a slot.
    pub queue_wait: Duration,
}

/// One item of a [`Generation`] stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationEvent {
    /// New text, always valid UTF-8 and never part of a stop string.
    Delta(String),
    /// The last event: the whole result.
    Done(Completion),
}

/// A submitted request: a stream of [`GenerationEvent`]s ending with `Done` or an error.
#[derive(Debug)]
pub struct Generation {
    rx: mpsc::UnboundedReceiver<Result<GenerationEvent>>,
}

// === impl Generation ===

impl Generation {
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

/// A loaded chat model.
pub struct ChatModel {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    memory: MemoryUsage,
    path: PathBuf,
    engine: &'static str,
}

/// What the slot threads share with the handle.
struct Shared {
    info: ModelInfo,
    context_length: usize,
    tokenizer: GgufTokenizer,
    template: ChatTemplate,
    chat_template_source: String,
    queue: Mutex<QueueState>,
    ready: Condvar,
    queue_capacity: usize,
    slots: usize,
    device: Device,
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<Job>,
    /// Slots generating right now.
    busy: usize,
    closed: bool,
}

struct Job {
    request: ChatRequest,
    /// The rendered prompt's tokens, checked against the context on submit.
    prompt_ids: Vec<u32>,
    tx: mpsc::UnboundedSender<Result<GenerationEvent>>,
    /// When it was queued.
    submitted: Instant,
}

/// One slot's model state (weights + KV cache).
enum Weights {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    #[cfg(target_arch = "x86_64")]
    Native(crate::native::Session),
}

// === impl Weights ===

impl Weights {
    fn load(path: &Path, architecture: Architecture, device: &Device) -> Result<Self> {
        let mut reader = open(path)?;
        let content = read_content(path, &mut reader)?;
        let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| match architecture {
            Architecture::Llama => {
                quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                    .map(Weights::Llama)
            }
            Architecture::Qwen2 => {
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
                    .map(Weights::Qwen2)
            }
        }))
        .map_err(|payload| panic_error("model loader", payload.as_ref()))?;
        loaded.map_err(|e| Error::invalid_file(path, format!("cannot load the weights: {e}")))
    }

    /// Runs `tokens` at `position ..` and returns the last one's logits (F32, one row).
    fn forward(&mut self, tokens: &[u32], position: usize, device: &Device) -> Result<Tensor> {
        let candle = |input: candle_core::Result<Tensor>| -> Result<Tensor> {
            input.and_then(|t| t.unsqueeze(0)).map_err(Error::backend)
        };
        let logits = match self {
            Self::Llama(w) => w.forward(&candle(Tensor::new(tokens, device))?, position),
            Self::Qwen2(w) => w.forward(&candle(Tensor::new(tokens, device))?, position),
            #[cfg(target_arch = "x86_64")]
            Self::Native(s) => {
                let logits = s.forward(tokens, position)?;
                let n = logits.len();
                return Tensor::from_vec(logits, n, device).map_err(Error::backend);
            }
        };
        logits
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.to_dtype(candle_core::DType::F32))
            .map_err(Error::backend)
    }
}

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ SEED_COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

fn lock(mutex: &Mutex<QueueState>) -> MutexGuard<'_, QueueState> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl ChatModel ===

impl ChatModel {
    /// Loads a GGUF chat model and starts its `options.parallel` slot threads.
    ///
    /// Blocking (reads the whole file): call it from a blocking thread.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        if options.parallel == 0 {
            return Err(Error::invalid_request("`parallel` must be at least 1"));
        }
        let (content, _) = read_header(path)?;
        let info = ModelInfo::from_content(&content)?;
        let tokenizer = GgufTokenizer::from_metadata(&content.metadata)?;
        if tokenizer.tokens.len() != info.vocab_size {
            return Err(Error::invalid_metadata(
                "tokenizer.ggml.tokens",
                format!(
                    "{} tokens but `token_embd.weight` has {} rows",
                    tokenizer.tokens.len(),
                    info.vocab_size
                ),
            ));
        }
        let chat_template_source = match content.metadata.get("tokenizer.chat_template") {
            Some(candle_core::quantized::gguf_file::Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(Error::invalid_metadata(
                    "tokenizer.chat_template",
                    "expected a string",
                ))
            }
            None => {
                tracing::warn!(path = %path.display(), "no `tokenizer.chat_template`; using ChatML");
                DEFAULT_CHAT_TEMPLATE.to_owned()
            }
        };
        let template = ChatTemplate::new(
            chat_template_source.clone(),
            tokenizer.token_text(tokenizer.bos),
            tokenizer.token_text(tokenizer.eos),
        )?;
        let chosen = Chosen::decide(options.engine, options.device, path, &content, &info)?;
        let context_length = chosen.context(&info, options.context_length);
        let kv_cache_bytes = info.kv_cache_bytes(
            context_length,
            options.parallel,
            chosen.kv_value_bytes(options.kv_cache),
        );

        let device = match chosen {
            Chosen::Candle => options.device.open()?,
            #[cfg(target_arch = "x86_64")]
            Chosen::Native(_) => Device::Cpu,
        };
        let mut slots = Vec::with_capacity(options.parallel);
        let weights_bytes;
        match chosen {
            #[cfg(target_arch = "x86_64")]
            Chosen::Native(isa) => {
                let model = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    crate::native::Model::load(path, &content, &info, isa)
                }))
                .map_err(|payload| panic_error("model loader", payload.as_ref()))??;
                weights_bytes = model.bytes() as u64;
                let model = Arc::new(model);
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let threads = options
                    .threads
                    .filter(|&t| t > 0)
                    .unwrap_or(if options.parallel > 1 { 1 } else { cores });
                for i in 0..options.parallel {
                    let session = crate::native::Session::new(
                        Arc::clone(&model),
                        context_length,
                        options.kv_cache,
                        threads,
                        &format!("sluice-local-{i}"),
                    )?;
                    slots.push(Weights::Native(session));
                }
            }
            Chosen::Candle => {
                weights_bytes =
                    gguf::held_weight_bytes(&content, &info) * info.weight_copies(options.parallel);
                let first = Weights::load(path, info.architecture, &device)?;
                for _ in 1..options.parallel {
                    slots.push(match &first {
                        Weights::Llama(w) => Weights::Llama(w.clone()),
                        _ => Weights::load(path, info.architecture, &device)?,
                    });
                }
                slots.push(first);
            }
        }
        drop(content);
        let memory = MemoryUsage {
            weights_bytes,
            kv_cache_bytes,
            context_length,
        };

        let shared = Arc::new(Shared {
            info,
            context_length,
            tokenizer,
            template,
            chat_template_source,
            queue: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            queue_capacity: options.queue_capacity,
            slots: options.parallel,
            device,
        });
        let mut model = Self {
            shared: Arc::clone(&shared),
            workers: Vec::new(),
            memory,
            path: path.to_path_buf(),
            engine: chosen.name(),
        };
        for (i, weights) in slots.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("sluice-local-{i}"))
                .spawn(move || slot_loop(&shared, weights))
                .map_err(|e| ErrorKind::Internal(format!("cannot start a slot thread: {e}")))?;
            model.workers.push(handle);
        }
        tracing::info!(
            path = %model.path.display(),
            architecture = model.shared.info.architecture.as_str(),
            parallel = options.parallel,
            engine = chosen.name(),
            context = context_length,
            memory_bytes = memory.total(),
            "loaded local chat model"
        );
        Ok(model)
    }

    /// The model's shape and metadata.
    pub fn info(&self) -> &ModelInfo {
        &self.shared.info
    }

    /// The context length the model runs with.
    pub fn context_length(&self) -> usize {
        self.shared.context_length
    }

    /// Memory held: weights as loaded plus all slots' KV caches at full context
    /// (see [`crate::estimate_memory`] for what is not counted).
    pub fn memory(&self) -> MemoryUsage {
        self.memory
    }

    /// The engine running it: `native` or `candle`.
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Jinja source of the chat template in use.
    pub fn chat_template(&self) -> &str {
        &self.shared.chat_template_source
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).pending.len()
    }

    /// Requests being generated right now.
    pub fn active(&self) -> usize {
        lock(&self.shared.queue).busy
    }

    /// Renders the messages through the chat template, with the assistant prompt appended.
    pub fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        self.shared.template.render(messages, true)
    }

    /// Token ids of text (special tokens matched, nothing added).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.shared.tokenizer.encode(text)
    }

    /// Token ids of the prompt exactly as generation feeds it (rendered, BOS added if needed).
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.shared
            .tokenizer
            .encode_prompt(&self.render_prompt(messages)?)
    }

    /// Text of token ids (control tokens skipped).
    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.shared.tokenizer.decode(ids)
    }

    /// Queues a request. Never blocks: a full queue is [`ErrorKind::QueueFull`]. The prompt is
    /// rendered and tokenized here, so that one too long for the context is refused at once
    /// ([`ErrorKind::ContextLengthExceeded`]), before a stream starts.
    pub fn submit(&self, request: ChatRequest) -> Result<Generation> {
        validate(&request)?;
        let prompt_ids = self.prompt_tokens(&request.messages)?;
        if prompt_ids.is_empty() {
            return Err(Error::invalid_request("the rendered prompt is empty"));
        }
        let context = self.shared.context_length;
        if prompt_ids.len() >= context {
            return Err(ErrorKind::ContextLengthExceeded {
                prompt_tokens: prompt_ids.len(),
                context_length: context,
            }
            .into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut queue = lock(&self.shared.queue);
            if queue.closed {
                return Err(ErrorKind::Unloaded.into());
            }
            let idle = self.shared.slots.saturating_sub(queue.busy);
            if queue.pending.len() >= self.shared.queue_capacity + idle {
                return Err(ErrorKind::QueueFull {
                    capacity: self.shared.queue_capacity,
                }
                .into());
            }
            queue.pending.push_back(Job {
                request,
                prompt_ids,
                tx,
                submitted: Instant::now(),
            });
        }
        self.shared.ready.notify_one();
        Ok(Generation { rx })
    }

    /// Queues a request and waits for its [`Completion`].
    pub async fn complete(&self, request: ChatRequest) -> Result<Completion> {
        self.submit(request)?.collect().await
    }

    /// Queues a request and blocks the thread until it ends, calling `on_delta` for each delta
    /// (not for use inside an async runtime).
    pub fn generate_blocking(
        &self,
        request: ChatRequest,
        mut on_delta: impl FnMut(&str),
    ) -> Result<Completion> {
        let mut generation = self.submit(request)?;
        while let Some(event) = generation.blocking_next() {
            match event? {
                GenerationEvent::Delta(text) => on_delta(&text),
                GenerationEvent::Done(completion) => return Ok(completion),
            }
        }
        Err(ErrorKind::Internal("generation ended without a result".into()).into())
    }
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("path", &self.path)
            .field("info", &self.shared.info)
            .field("context_length", &self.shared.context_length)
            .field("slots", &self.workers.len())
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl Drop for ChatModel {
    fn drop(&mut self) {
        let pending = {
            let mut queue = lock(&self.shared.queue);
            queue.closed = true;
            std::mem::take(&mut queue.pending)
        };
        self.shared.ready.notify_all();
        for job in pending {
            let _ = job.tx.send(Err(ErrorKind::Unloaded.into()));
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a local model slot thread panicked");
            }
        }
    }
}

fn validate(request: &ChatRequest) -> Result<()> {
    if request.max_tokens == Some(0) {
        return Err(Error::invalid_request("`max_tokens` must be at least 1"));
    }
    let s = &request.sampling;
    if let Some(t) = s.temperature {
        if !t.is_finite() || t < 0.0 {
            return Err(Error::invalid_request(
                "`temperature` must be a non-negative number",
            ));
        }
    }
    if let Some(p) = s.top_p {
        if !p.is_finite() || p <= 0.0 {
            return Err(Error::invalid_request("`top_p` must be in (0, 1]"));
        }
    }
    Ok(())
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

// --- slot threads ---

fn slot_loop(shared: &Shared, mut weights: Weights) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if queue.closed {
                    return;
                }
                if let Some(job) = queue.pending.pop_front() {
                    queue.busy += 1;
                    break job;
                }
                queue = shared
                    .ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let tx = job.tx.clone();
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| generate(shared, &mut weights, &job)));
        let outcome = match result {
            Ok(Ok(Some(completion))) => Some(Ok(GenerationEvent::Done(completion))),
            Ok(Ok(None)) => None, // cancelled: nobody is listening
            Ok(Err(error)) => Some(Err(error)),
            Err(payload) => Some(Err(panic_error("generation", payload.as_ref()))),
        };
        // Free the slot before the caller hears the result, so a follow-up request is admitted.
        lock(&shared.queue).busy -= 1;
        if let Some(outcome) = outcome {
            let _ = tx.send(outcome);
        }
    }
}

/// Runs one request on a slot; `Ok(None)` when the receiver went away (cancelled).
fn generate(shared: &Shared, weights: &mut Weights, job: &Job) -> Result<Option<Completion>> {
    // Taken off the queue just now: the wait ends here.
    let queue_wait = job.submitted.elapsed();
    let request = &job.request;
    let prompt_ids = &job.prompt_ids;
    let room = shared.context_length - prompt_ids.len();
    let limit = request.max_tokens.map_or(room, |max| max.min(room));

    let seed = request.sampling.seed.unwrap_or_else(random_seed);
    let mut sampler = LogitsProcessor::from_sampling(seed, sampling(&request.sampling));
    let mut stops = StopBuffer::new(&request.stop);
    let mut utf8 = Utf8Stream::default();
    // SentencePiece: the space prefix of the answer's first word is not part of the answer.
    let mut strip_space = shared.tokenizer.strip_first_space;
    let mut text = String::new();
    let mut token_ids: Vec<u32> = Vec::new();
    let emit = |delta: String, text: &mut String| -> bool {
        if delta.is_empty() {
            return true;
        }
        text.push_str(&delta);
        job.tx.send(Ok(GenerationEvent::Delta(delta))).is_ok()
    };

    let device = &shared.device;
    let mut stopped_by_string = false;
    let mut position = 0;
    let mut logits = None;
    for chunk in prompt_ids.chunks(PREFILL_CHUNK) {
        logits = Some(weights.forward(chunk, position, device)?);
        position += chunk.len();
    }
    let mut row = logits.ok_or_else(|| Error::invalid_request("the rendered prompt is empty"))?;

    let finish_reason = loop {
        let next = sampler.sample(&row).map_err(Error::backend)?;
        token_ids.push(next);
        if !request.ignore_eos && shared.tokenizer.stop_ids.contains(&next) {
            break FinishReason::Stop;
        }
        let mut piece = utf8.push(shared.tokenizer.token_bytes(next));
        if strip_space && !piece.is_empty() {
            strip_space = false;
            if let Some(rest) = piece.strip_prefix(' ') {
                piece = rest.to_owned();
            }
        }
        if !piece.is_empty() {
            let pushed = stops.push(&piece);
            if !emit(pushed.emit, &mut text) {
                return Ok(None);
            }
            if pushed.stopped {
                stopped_by_string = true;
                break FinishReason::Stop;
            }
        }
        if token_ids.len() >= limit {
            break FinishReason::Length;
        }
        if lock(&shared.queue).closed {
            return Err(ErrorKind::Unloaded.into());
        }
        if job.tx.is_closed() {
            return Ok(None);
        }
        row = weights.forward(&[next], position, device)?;
        position += 1;
    };

    // Unless a stop string matched, whatever was held back is ordinary output.
    let mut finish_reason = finish_reason;
    if !stopped_by_string {
        let tail = utf8.finish();
        let mut rest = String::new();
        let mut stopped = false;
        if !tail.is_empty() {
            let pushed = stops.push(&tail);
            rest = pushed.emit;
            stopped = pushed.stopped;
        }
        if stopped {
            finish_reason = FinishReason::Stop;
        } else {
            rest.push_str(&stops.finish());
        }
        if !emit(rest, &mut text) {
            return Ok(None);
        }
    }
    Ok(Some(Completion {
        text,
        finish_reason,
        usage: Usage {
            prompt_tokens: prompt_ids.len(),
            completion_tokens: token_ids.len(),
        },
        token_ids,
        queue_wait,
    }))
}
