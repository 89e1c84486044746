//! The closed set of providers, dispatched statically.

use crate::anthropic::{Anthropic, RequestOptions};
use crate::client::{self, HttpClient, UpstreamBody};
use crate::gemini::{self, Gemini};
use crate::ollama::Ollama;
use crate::openai::OpenAi;
use bytes::Bytes;
use http::header::HeaderValue;
use hyper::body::Incoming;
use sluice_core::config::{ProviderConfig, ProviderType};
use sluice_core::Error;

/// Which API an upstream request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Chat completions.
    Chat,
    /// Embeddings.
    Embeddings,
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as worker `index`: requests sent from it use connection pool
/// `index` of every provider, so that a worker thread only ever wakes its own connections.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

enum Adapter {
    OpenAi(OpenAi),
    Anthropic(Anthropic),
    Ollama(Ollama),
    Gemini(Gemini),
    /// Models sluice runs itself: no HTTP, the server calls the runtime.
    Local,
}

/// How requests to a provider are written and its answers read.
#[derive(Debug, Clone)]
pub enum Translation {
    /// OpenAI's own format: bodies pass through.
    None,
    /// Anthropic's Messages API.
    Anthropic(RequestOptions),
    /// Ollama's native API, with the default `keep_alive`.
    Ollama(Option<String>),
    /// Google's Gemini API.
    Gemini,
    /// A model sluice runs itself (`sluice-local`): the server serves it in process.
    Local,
}

/// A configured provider: its adapter and its connection pool.
pub struct Provider {
    /// The provider's config.
    pub config: ProviderConfig,
    /// `x-sluice-provider` value, built once.
    pub header_value: HeaderValue,
    /// One pool per worker thread.
    clients: Box<[HttpClient]>,
    adapter: Adapter,
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
        Ok(Self {
            clients: (0..pools.max(1)).map(|_| client::build(&config)).collect(),
            header_value,
            adapter,
            config,
        })
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// How requests must be translated for this provider.
    pub fn translation(&self) -> Translation {
        match &self.adapter {
            Adapter::OpenAi(_) => Translation::None,
            Adapter::Anthropic(a) => Translation::Anthropic(a.options),
            Adapter::Ollama(o) => Translation::Ollama(o.keep_alive.clone()),
            Adapter::Gemini(_) => Translation::Gemini,
            Adapter::Local => Translation::Local,
        }
    }

    /// Whether the provider serves `/v1/embeddings`.
    pub fn has_embeddings(&self) -> bool {
        !matches!(self.adapter, Adapter::Anthropic(_))
    }

    /// Whether the upstream accepts `stream_options.include_usage`.
    pub fn stream_usage(&self) -> bool {
        self.config.stream_usage
    }

    /// The upstream request for `endpoint` carrying `body` (already in the upstream's
    /// format), for upstream model `model`, streamed or not (Gemini puts both in the URL).
    pub fn request(
        &self,
        endpoint: Endpoint,
        model: &str,
        stream: bool,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<http::Request<UpstreamBody>, Error> {
        Ok(match &self.adapter {
            Adapter::OpenAi(a) => a.request(endpoint, body, request_id),
            Adapter::Anthropic(a) => a.request(body, request_id),
            Adapter::Ollama(o) => o.request(endpoint == Endpoint::Embeddings, body, request_id),
            Adapter::Gemini(g) => {
                let method = match (endpoint, stream) {
                    (Endpoint::Embeddings, _) => gemini::Method::Embed,
                    (Endpoint::Chat, true) => gemini::Method::Stream,
                    (Endpoint::Chat, false) => gemini::Method::Generate,
                };
                g.request(model, method, body, request_id)?
            }
            Adapter::Local => {
                return Err(sluice_core::ErrorKind::Internal {
                    message: format!(
                        "provider `{}` runs its models in process: no HTTP request",
                        self.config.name
                    ),
                }
                .into())
            }
        })
    }

    /// Sends a request on the pool and waits for the response head.
    pub async fn send(
        &self,
        request: http::Request<UpstreamBody>,
    ) -> Result<http::Response<Incoming>, Error> {
        let worker = WORKER.with(std::cell::Cell::get);
        self.clients[worker % self.clients.len()]
            .request(request)
            .await
            .map_err(|e| crate::error::from_transport(&self.config.name, &e))
    }
}
