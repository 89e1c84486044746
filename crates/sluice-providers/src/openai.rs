//! `type = "openai"`: OpenAI's API and every server that speaks it (Groq, DeepSeek, Together,
//! Mistral, vLLM, llama.cpp's server, Ollama's `/v1`, ...). Bodies pass through as bytes;
//! only the URL and the headers are the adapter's work.

use crate::client::UpstreamBody;
use crate::outbound::{get, post, static_headers, uri};
use crate::upload::UploadBody;
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
    /// One URI per operation, in [`Operation::index`] order.
    uris: Vec<Uri>,
    /// `POST {base_url}/responses`, for Responses API requests sent natively.
    responses_uri: Uri,
    /// `GET {base_url}/models`, the health check's model list.
    models_uri: Uri,
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
            uris: Operation::ALL
                .iter()
                .map(|op| uri(config, op.path()))
                .collect::<Result<_, _>>()?,
            responses_uri: uri(config, "/responses")?,
            models_uri: uri(config, "/models")?,
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
        post(&self.uris[op.index()], &self.headers, body, request_id)
    }

    /// `GET {base_url}/models`: the cheapest request that proves the upstream answers.
    pub fn list_models(&self, request_id: &HeaderValue) -> Request<UpstreamBody> {
        get(&self.models_uri, &self.headers, request_id)
    }

    /// A Responses API request, sent as it is to `{base_url}/responses`.
    pub fn responses(&self, body: Bytes, request_id: &HeaderValue) -> Request<UpstreamBody> {
        post(&self.responses_uri, &self.headers, body, request_id)
    }

    /// An upload to the upstream: the multipart body streamed from its spool.
    pub fn upload(
        &self,
        op: Operation,
        content_type: &str,
        body: UploadBody,
        request_id: &HeaderValue,
    ) -> Result<Request<UpstreamBody>, Error> {
        let mut req = post(
            &self.uris[op.index()],
            &self.headers,
            Bytes::new(),
            request_id,
        );
        *req.body_mut() = UpstreamBody::Upload(body);
        let ct = HeaderValue::from_str(content_type).map_err(|_| -> Error {
            sluice_core::ErrorKind::Internal {
                message: "a multipart content type is not a header value".into(),
            }
            .into()
        })?;
        req.headers_mut().insert(http::header::CONTENT_TYPE, ct);
        Ok(req)
    }
}
