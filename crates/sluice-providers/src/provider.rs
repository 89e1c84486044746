//! The closed set of providers, dispatched statically.

use crate::anthropic::{self, Anthropic};
use crate::client::{ResponseBody, Upstream, UpstreamBody};
use crate::gemini::{self, Gemini};
use crate::ollama::{self, Ollama};
use crate::openai::OpenAi;
use crate::reader::Reader;
use crate::view::View;
use bytes::Bytes;
use http::header::HeaderValue;
use sluice_core::config::{HealthCheckKind, ProviderConfig, ProviderType};
use sluice_core::{Error, ErrorKind, Operation};

/// [`worker`] on a thread that is not a worker's (the acceptor's).
pub const NOT_A_WORKER: usize = usize::MAX;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(NOT_A_WORKER) };
}

/// Marks the current thread as worker `index`: requests sent from it use connection pool
/// `index` of every provider, so that a worker thread only ever wakes its own connections.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The current thread's worker index (see [`set_worker`]; [`NOT_A_WORKER`] on any other
/// thread, whose requests use a pool of their own and the slots of a worker's share).
pub fn worker() -> usize {
    WORKER.with(std::cell::Cell::get)
}

enum Adapter {
    OpenAi(OpenAi),
    Anthropic(Anthropic),
    Ollama(Ollama),
    Gemini(Gemini),
    /// Models sluice runs itself: no HTTP, the server calls the runtime.
    Local,
}

/// One upstream call, made ready.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per attempt and unpacked at once: boxing would add an allocation per request"
)]
pub enum Prepared {
    /// An HTTP request to send, and how to read its answer.
    Http {
        /// The request, in the upstream's format.
        request: http::Request<UpstreamBody>,
        /// How the answer is read back into OpenAI's format.
        reader: Reader,
    },
    /// A model sluice runs itself: the client's own body, served in process.
    InProcess,
}

/// A configured provider: its adapter and its connection pool.
pub struct Provider {
    /// The provider's config.
    pub config: ProviderConfig,
    /// `x-sluice-provider` value, built once.
    pub header_value: HeaderValue,
    /// One pool per worker thread.
    client: Upstream,
    adapter: Adapter,
    /// OpenAI's Files and Batch APIs, for an `openai` provider with `batch = "native"`.
    batch_api: Option<crate::batch_api::BatchApi>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.config.name)
            .field("type", &self.config.kind.as_str())
            .field("base_url", &self.config.base_url)
            .finish()
    }
}

impl Provider {
    /// Builds the adapter and `pools` connection pools (one per worker thread). Fails only
    /// on a base URL or key that does not form a valid request.
    pub fn new(config: ProviderConfig, pools: usize) -> Result<Self, Error> {
        let adapter = match config.kind {
            ProviderType::OpenAi => Adapter::OpenAi(OpenAi::new(&config)?),
            ProviderType::Anthropic => Adapter::Anthropic(Anthropic::new(&config)?),
            ProviderType::Ollama => Adapter::Ollama(Ollama::new(&config)?),
            ProviderType::Gemini => Adapter::Gemini(Gemini::new(&config)?),
            ProviderType::Local => Adapter::Local,
        };
        let header_value = HeaderValue::from_str(&config.name).map_err(|_| {
            Error::from(sluice_core::ErrorKind::Internal {
                message: format!(
                    "provider name `{}` is not a valid header value",
                    config.name
                ),
            })
        })?;
        let native_batches = config.kind == ProviderType::OpenAi
            && config.batch == sluice_core::config::BatchMode::Native;
        let batch_api = native_batches
            .then(|| crate::batch_api::BatchApi::new(&config))
            .transpose()?;
        Ok(Self {
            client: Upstream::new(&config, pools),
            header_value,
            adapter,
            batch_api,
            config,
        })
    }

    /// Closes worker `worker`'s idle upstream connections beyond the `keep` most recently
    /// used (the server calls it when a burst is over, see `sluice-server`'s `trim`).
    pub fn shrink_idle(&self, worker: usize, keep: usize) {
        self.client.shrink_idle(worker, keep);
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the provider serves `op`: an `openai` provider what its `endpoints` (or
    /// preset) say, else every operation; the others what their APIs have.
    pub fn serves(&self, op: Operation) -> bool {
        match &self.adapter {
            Adapter::OpenAi(_) => self
                .config
                .operations
                .as_ref()
                .is_none_or(|ops| ops.contains(&op)),
            Adapter::Anthropic(_) => op == Operation::Chat,
            Adapter::Ollama(_) | Adapter::Gemini(_) => {
                matches!(op, Operation::Chat | Operation::Embeddings)
            }
            Adapter::Local => matches!(
                op,
                Operation::Chat | Operation::Embeddings | Operation::Rerank | Operation::Completion
            ),
        }
    }

    /// The 404 for an operation the provider does not serve.
    pub fn unsupported(&self, op: Operation) -> Error {
        ErrorKind::EndpointUnsupported {
            provider: self.name().to_string(),
            kind: self.config.kind.as_str(),
            endpoint: endpoint_path(op),
        }
        .into()
    }

    /// Whether the upstream accepts `stream_options.include_usage`.
    pub fn stream_usage(&self) -> bool {
        self.config.stream_usage
    }

    /// OpenAI's Files and Batch APIs of this provider, when its batches are forwarded there
    /// (`batch = "native"`).
    pub fn batch_api(&self) -> Option<&crate::batch_api::BatchApi> {
        self.batch_api.as_ref()
    }

    /// Whether Responses API requests go to this provider natively (`responses = "native"`).
    pub fn responses_native(&self) -> bool {
        matches!(self.adapter, Adapter::OpenAi(_))
            && self.config.responses == sluice_core::config::ResponsesMode::Native
    }

    /// The upstream call for a Responses API request `body` (as the client sent it, its
    /// `previous_response_id` expanded) to a native provider, for upstream model `upstream`.
    pub fn prepare_responses(
        &self,
        body: &Bytes,
        upstream: &str,
        request_id: &HeaderValue,
    ) -> Result<Prepared, Error> {
        let Adapter::OpenAi(a) = &self.adapter else {
            return Err(self.unsupported(Operation::Chat));
        };
        let body = crate::responses::native::with_model(body, upstream).map_err(|message| {
            Error::from(ErrorKind::InvalidRequest {
                message,
                param: None,
            })
        })?;
        Ok(Prepared::Http {
            request: a.responses(body, request_id),
            reader: Reader::Responses,
        })
    }

    /// The request of the provider's active health check (`health_check`): its model list,
    /// or a chat completion of one token from the upstream model named (translated like a
    /// client's). `Err` for a local provider (nothing to check over HTTP).
    pub fn health_request(
        &self,
        kind: &HealthCheckKind,
        request_id: &HeaderValue,
    ) -> Result<http::Request<UpstreamBody>, Error> {
        let model = match kind {
            HealthCheckKind::Chat { model } => model,
            HealthCheckKind::Models => {
                return match &self.adapter {
                    Adapter::OpenAi(a) => Ok(a.list_models(request_id)),
                    Adapter::Anthropic(a) => Ok(a.list_models(request_id)),
                    Adapter::Gemini(g) => Ok(g.list_models(request_id)),
                    Adapter::Ollama(o) => Ok(o.list_models(request_id)),
                    Adapter::Local => Err(self.unsupported(Operation::Chat)),
                }
            }
        };
        let body = Bytes::from(
            serde_json::json!({
                "model": model,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            })
            .to_string(),
        );
        let view = View::parse(Operation::Chat, &body).map_err(|e| -> Error {
            ErrorKind::Internal {
                message: format!("health check request: {e:?}"),
            }
            .into()
        })?;
        match self.prepare(&view, &body, model, request_id)? {
            Prepared::Http { request, .. } => Ok(request),
            Prepared::InProcess => Err(self.unsupported(Operation::Chat)),
        }
    }

    /// Whether the provider runs its models in process.
    pub fn is_local(&self) -> bool {
        matches!(self.adapter, Adapter::Local)
    }

    /// The upstream call for the client's `body` (read as `view`), sent to upstream model
    /// `upstream`: the body spliced or translated into the upstream's format, the request
    /// built, and the reader of its answer chosen. `Err` when the request cannot be
    /// expressed for this provider (a 400 naming why).
    pub fn prepare(
        &self,
        view: &View<'_>,
        body: &Bytes,
        upstream: &str,
        request_id: &HeaderValue,
    ) -> Result<Prepared, Error> {
        if !self.serves(view.operation()) {
            return Err(self.unsupported(view.operation()));
        }
        let (request, reader) = match (&self.adapter, view) {
            (Adapter::Local, _) => return Ok(Prepared::InProcess),
            (Adapter::OpenAi(a), View::Media(m)) => {
                let op = view.operation();
                let reader = match op {
                    Operation::Speech if !m.stream => Reader::Audio,
                    Operation::ImageGeneration => Reader::Media { images: true },
                    _ => Reader::Media { images: false },
                };
                (
                    a.request(op, m.upstream_body(body, upstream), request_id),
                    reader,
                )
            }
            (Adapter::OpenAi(a), View::Upload(op, u)) => {
                let (content_type, upload) = u.body(upstream).map_err(|e| -> Error {
                    ErrorKind::Internal {
                        message: format!("a spooled upload could not be read: {e}"),
                    }
                    .into()
                })?;
                let images = matches!(op, Operation::ImageEdit | Operation::ImageVariation);
                let request = a.upload(*op, &content_type, upload, request_id)?;
                (request, Reader::Media { images })
            }
            (Adapter::OpenAi(a), View::Completion(c)) => {
                let ask = c.stream && self.config.stream_usage;
                let body = c.upstream_body(body, upstream, ask);
                let reader = Reader::TextCompletion {
                    strip_usage: ask && !c.include_usage,
                };
                (a.request(Operation::Completion, body, request_id), reader)
            }
            (_, View::Media(_) | View::Upload(..) | View::Completion(_)) => {
                return Err(self.unsupported(view.operation()))
            }
            (Adapter::OpenAi(a), View::Chat(c)) => {
                let ask = c.stream && self.config.stream_usage;
                let body = c.upstream_body(body, upstream, ask);
                let reader = Reader::OpenAi {
                    strip_usage: ask && !c.include_usage,
                };
                (a.request(Operation::Chat, body, request_id), reader)
            }
            (Adapter::OpenAi(a), View::Embeddings(e)) => {
                let body = e.upstream_body(body, upstream);
                let reader = Reader::OpenAi { strip_usage: false };
                (a.request(Operation::Embeddings, body, request_id), reader)
            }
            (Adapter::Anthropic(a), View::Chat(c)) => {
                let full = full_request(body)?;
                let translated = anthropic::to_request(&full, upstream, a.options)
                    .map_err(|e| untranslatable("Anthropic", &e.0))?;
                let reader = Reader::Anthropic {
                    include_usage: c.include_usage,
                };
                (a.request(Bytes::from(translated), request_id), reader)
            }
            (Adapter::Anthropic(_), View::Embeddings(_)) => {
                return Err(self.unsupported(Operation::Embeddings))
            }
            (Adapter::Ollama(o), View::Chat(c)) => {
                let full = full_request(body)?;
                let translated =
                    ollama::to_chat_request(&full, body, upstream, o.keep_alive.as_deref())
                        .map_err(|e| untranslatable("Ollama", &e.0))?;
                let reader = Reader::Ollama {
                    include_usage: c.include_usage,
                };
                (
                    o.request(false, Bytes::from(translated), request_id),
                    reader,
                )
            }
            (Adapter::Ollama(o), View::Embeddings(_)) => {
                let translated = ollama::to_embed_request(body, upstream, o.keep_alive.as_deref())
                    .map_err(|e| untranslatable("Ollama", &e.0))?;
                (
                    o.request(true, Bytes::from(translated), request_id),
                    Reader::OllamaEmbed,
                )
            }
            (Adapter::Gemini(g), View::Chat(c)) => {
                let full = full_request(body)?;
                let translated =
                    gemini::to_request(&full).map_err(|e| untranslatable("Gemini", &e.0))?;
                let method = if c.stream {
                    gemini::Method::Stream
                } else {
                    gemini::Method::Generate
                };
                let reader = Reader::Gemini {
                    include_usage: c.include_usage,
                };
                let request = g.request(upstream, method, Bytes::from(translated), request_id)?;
                (request, reader)
            }
            (Adapter::Gemini(g), View::Embeddings(e)) => {
                let translated = gemini::to_embed_request(body, upstream)
                    .map_err(|e| untranslatable("Gemini", &e.0))?;
                let reader = Reader::GeminiEmbed {
                    estimated_tokens: e.estimated_tokens(),
                };
                let request = g.request(
                    upstream,
                    gemini::Method::Embed,
                    Bytes::from(translated),
                    request_id,
                )?;
                (request, reader)
            }
        };
        Ok(Prepared::Http { request, reader })
    }

    /// Sends a request on the pool and waits for the response head.
    pub async fn send(
        &self,
        request: http::Request<UpstreamBody>,
    ) -> Result<http::Response<ResponseBody>, Error> {
        let worker = worker();
        self.client.send(&self.config.name, worker, request).await
    }
}

/// The client-facing path of an operation, for messages.
fn endpoint_path(op: Operation) -> &'static str {
    match op {
        Operation::Chat => "/v1/chat/completions",
        Operation::Embeddings => "/v1/embeddings",
        Operation::Speech => "/v1/audio/speech",
        Operation::Transcription => "/v1/audio/transcriptions",
        Operation::Translation => "/v1/audio/translations",
        Operation::ImageGeneration => "/v1/images/generations",
        Operation::ImageEdit => "/v1/images/edits",
        Operation::ImageVariation => "/v1/images/variations",
        Operation::Rerank => "/v1/rerank",
        Operation::Moderation => "/v1/moderations",
        Operation::Completion => "/v1/completions",
    }
}

/// The whole request, for the translating adapters (only they pay for a full parse).
fn full_request(body: &[u8]) -> Result<sluice_types::openai::ChatCompletionRequest, Error> {
    serde_json::from_slice(body).map_err(|e| {
        ErrorKind::InvalidRequest {
            message: format!("invalid request body: {e}"),
            param: None,
        }
        .into()
    })
}

fn untranslatable(to: &str, why: &str) -> Error {
    ErrorKind::InvalidRequest {
        message: format!("cannot be sent to {to}: {why}"),
        param: Some("messages"),
    }
    .into()
}
