//! `type = "openai"`: OpenAI's API and every server that speaks it (Groq, DeepSeek, Together,
//! Mistral, vLLM, llama.cpp's server, Ollama's `/v1`, ...). Bodies pass through as bytes;
//! only the URL and the headers are the adapter's work.

use crate::client::UpstreamBody;
use crate::outbound::{post, static_headers, uri};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::{Request, Uri};
use sluice_core::config::ProviderConfig;
use sluice_core::{Error, Operation};

/// The config `type` of this adapter.
pub const PROVIDER_TYPE: &str = "openai";

/// The `openai` adapter: URIs and headers built once at start.
#[derive(Debug)]
pub struct OpenAi {
    chat_uri: Uri,
    embeddings_uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl OpenAi {
    /// Prepares URIs and headers for `config`.
    pub fn new(config: &ProviderConfig) -> Result<Self, Error> {
        let auth = config
            .api_key
            .as_ref()
            .map(|k| (AUTHORIZATION, format!("Bearer {}", k.expose())));
        Ok(Self {
            chat_uri: uri(config, "/chat/completions")?,
            embeddings_uri: uri(config, "/embeddings")?,
            headers: static_headers(config, auth)?,
        })
    }

    /// The upstream request.
    pub fn request(
        &self,
        op: Operation,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Request<UpstreamBody> {
        let uri = match op {
            Operation::Chat => &self.chat_uri,
            Operation::Embeddings => &self.embeddings_uri,
        };
        post(uri, &self.headers, body, request_id)
    }
}
