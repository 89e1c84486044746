//! [`ChatModel`]: a loaded GGUF chat model serving up to `parallel` sequences at once.
//!
//! # Threads and sequences
//!
//! A model holds `parallel` sequence slots, each with a KV cache. Nothing runs on the caller's
//! (tokio) threads except rendering and tokenizing the prompt (to refuse one too long for the
//! context at once) and queueing: [`ChatModel::submit`] puts the request in a bounded FIFO and
//! returns a [`Generation`] whose tokio channel carries the text deltas and the final
//! [`Completion`]; a full queue is [`ErrorKind::QueueFull`] at once. Dropping the
//! [`Generation`] cancels the request at the next token. Dropping the model fails queued and
//! running requests with [`ErrorKind::Unloaded`] and joins its threads.
//!
//! - **Native engine** ([`batching`]): one scheduler thread runs all running sequences in one
//!   forward pass per step (continuous batching), on one pool of `threads` workers; requests
//!   join and leave between steps, prompts go in by chunks, and a slot's cache is reused by a
//!   request whose prompt begins with what it holds; [`LoadOptions::prompt_cache_slots`] more
//!   slots keep finished sequences' caches for that.
//! - **candle** ([`slots`]): a thread per slot, one request at a time. llama slots are clones
//!   of one loaded model (`Arc`-shared weights); candle's qwen2 `ModelWeights` is not `Clone`,
//!   so each qwen2 slot loads its own copy (the memory accounting counts `parallel` copies).
//!   candle's CPU matmuls share one process-wide thread pool, which serialises concurrent
//!   forwards; slots still overlap sampling and keep a long generation from blocking a short
//!   one.
//!
//! Both drive a [`sequence::Sequence`] per request: sampling, text, stop strings, usage.

#[cfg(target_arch = "x86_64")]
mod batching;
mod calls;
mod queue;
mod sequence;
mod slots;
mod types;

use crate::constrain::{Constraint, Grammar};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::Device;
use tokio::sync::mpsc;

use crate::engine::Chosen;
pub use crate::engine::{Engine, LoadOptions, DEFAULT_CONTEXT_LENGTH};
use crate::error::{panic_error, Error, ErrorKind, Result};
use crate::gguf::file::read_header;
pub use crate::gguf::file::Weights;
pub use crate::gguf::KvCacheType;
use crate::gguf::{self, MemoryUsage, ModelInfo};
use crate::template::{ChatMessage, ChatTemplate, DEFAULT_CHAT_TEMPLATE};
use crate::tokenizer::GgufTokenizer;
use crate::tools::ToolFormat;
use queue::{lock, QueueState, Shared};
use sequence::Job;
pub use types::{
    ChatRequest, Completion, FinishReason, Generation, GenerationEvent, SamplingParams,
    TokenLogprob, Usage,
};

/// A loaded chat model.
pub struct ChatModel {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    memory: MemoryUsage,
    path: PathBuf,
    engine: &'static str,
}

/// What runs a model's sequences.
enum Runner {
    /// The native engine: one scheduler thread batching every sequence.
    #[cfg(target_arch = "x86_64")]
    Native(crate::native::Batch),
    /// candle: a thread per slot.
    Candle(Vec<slots::Weights>),
}

// === impl Runner ===

impl Runner {
    fn spawn(self, shared: &Arc<Shared>, parallel: usize) -> Result<Vec<JoinHandle<()>>> {
        let thread = |name: String, run: Box<dyn FnOnce(&Shared) + Send>| {
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name(name)
                .spawn(move || run(&shared))
                .map_err(|e| {
                    Error::from(ErrorKind::Internal(format!("cannot start a thread: {e}")))
                })
        };
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Native(batch) => Ok(vec![thread(
                "sluice-local-batch".into(),
                Box::new(move |shared| batching::batch_loop(shared, batch, parallel)),
            )?]),
            Self::Candle(weights) => weights
                .into_iter()
                .enumerate()
                .map(|(i, w)| {
                    thread(
                        format!("sluice-local-{i}"),
                        Box::new(move |shared| slots::slot_loop(shared, w)),
                    )
                })
                .collect(),
        }
    }
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
        let kv_type = chosen.kv_type(options.kv_cache, &info);
        let mut kv_cache_bytes =
            info.kv_cache_bytes(context_length, chosen.kv_slots(options), kv_type);

        let device = match chosen {
            Chosen::Candle => options.device.open()?,
            #[cfg(target_arch = "x86_64")]
            Chosen::Native(_) => Device::Cpu,
        };
        let (runner, weights_bytes) = match chosen {
            #[cfg(target_arch = "x86_64")]
            Chosen::Native(isa) => {
                let model = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    crate::native::Model::load(path, &content, &info, isa, options.weights)
                }))
                .map_err(|payload| panic_error("model loader", payload.as_ref()))??;
                let weights_bytes = model.bytes() as u64;
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let threads = options.threads.filter(|&t| t > 0).unwrap_or(cores);
                let batch = crate::native::Batch::new(
                    Arc::new(model),
                    chosen.kv_slots(options),
                    context_length,
                    kv_type,
                    threads,
                    "sluice-local",
                )?;
                // What the caches hold, as allocated (the estimate computes the same).
                kv_cache_bytes = batch.kv_bytes();
                (Runner::Native(batch), weights_bytes)
            }
            Chosen::Candle => (
                Runner::Candle(slots::Weights::load_slots(
                    path,
                    info.architecture,
                    &device,
                    options.parallel,
                )?),
                gguf::held_weight_bytes(&content, &info) * info.weight_copies(options.parallel),
            ),
        };
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
            token_trie: std::sync::OnceLock::new(),
        });
        let mut model = Self {
            shared: Arc::clone(&shared),
            workers: Vec::new(),
            memory,
            path: path.to_path_buf(),
            engine: chosen.name(),
        };
        model.workers = runner.spawn(&shared, options.parallel)?;
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

    /// Memory held: weights as loaded plus all slots' KV caches at full context (the prompt
    /// cache's included)
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

    /// The prompt of `messages` with `tools` (OpenAI's tool objects) rendered by the template.
    pub fn render_prompt_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
    ) -> Result<String> {
        self.shared
            .template
            .render_with_tools(messages, tools, true)
    }

    /// The chat template's tool format.
    pub fn tool_format(&self) -> ToolFormat {
        ToolFormat::of_template(&self.shared.chat_template_source)
    }

    /// Text of token ids (control tokens skipped).
    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.shared.tokenizer.decode(ids)
    }

    /// The bytes token `id` decodes to (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.shared.tokenizer.token_bytes(id)
    }

    /// A fresh [`Constraint`] of `grammar` over this model's vocabulary, as a request with that
    /// constraint gets (for sampling outside [`ChatModel::submit`], and for measuring it).
    pub fn constraint(&self, grammar: Arc<Grammar>) -> Constraint {
        Constraint::new(grammar, self.shared.token_trie())
    }

    /// Queues a request. Never blocks: a full queue is [`ErrorKind::QueueFull`]. The prompt is
    /// rendered (unless it is a [`ChatRequest::raw_prompt`]) and tokenized here, so that one too long for the context is refused at once
    /// ([`ErrorKind::ContextLengthExceeded`]), before a stream starts.
    pub fn submit(&self, request: ChatRequest) -> Result<Generation> {
        validate(&request)?;
        let prompt_ids = match &request.raw_prompt {
            Some(text) => self.shared.tokenizer.encode_prompt(text)?,
            None => {
                let mut prompt =
                    self.render_prompt_with_tools(&request.messages, request.tools.as_deref())?;
                prompt.push_str(request.answer_prefix.as_deref().unwrap_or_default());
                self.shared.tokenizer.encode_prompt(&prompt)?
            }
        };
        if prompt_ids.is_empty() {
            return Err(Error::invalid_request("the rendered prompt is empty"));
        }
        let prompt_tokens = prompt_ids.len();
        let context = self.shared.context_length;
        if prompt_ids.len() >= context {
            return Err(ErrorKind::ContextLengthExceeded {
                prompt_tokens: prompt_ids.len(),
                context_length: context,
            }
            .into());
        }
        let constraint = request
            .constraint
            .as_ref()
            .map(|grammar| Constraint::new(Arc::clone(grammar), self.shared.token_trie()));
        let watch = request
            .tool_calls
            .clone()
            .map(|spec| calls::CallWatch::new(spec, self.shared.token_trie()));
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
                constraint,
                watch,
                tx,
                submitted: Instant::now(),
            });
        }
        self.shared.ready.notify_one();
        Ok(Generation { rx, prompt_tokens })
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
                GenerationEvent::Call { .. } | GenerationEvent::Logprobs(_) => {}
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
