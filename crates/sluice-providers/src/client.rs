//! The pooled, keep-alive HTTP client of one provider: HTTP/1.1 and HTTP/2 (ALPN over TLS,
//! or prior knowledge for h2c), rustls with the webpki roots, no OpenSSL.

use crate::upload::UploadBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_core::config::ProviderConfig;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Body of an upstream request: the (possibly spliced or translated) client body, sent
/// whole; or a multipart upload streamed from its spool.
#[derive(Debug)]
pub enum UpstreamBody {
    /// A body in memory.
    Whole(Full<Bytes>),
    /// An upload, its files read from disk as they are sent.
    Upload(UploadBody),
}

impl UpstreamBody {
    /// A body in memory.
    pub fn new(body: Bytes) -> Self {
        Self::Whole(Full::new(body))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Self::Whole(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            Self::Upload(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(b) => b.is_end_stream(),
            Self::Upload(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Whole(b) => b.size_hint(),
            Self::Upload(b) => b.size_hint(),
        }
    }
}

/// One provider's connection pool.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Builds the pooled client for `config`.
pub fn build(config: &ProviderConfig) -> HttpClient {
    builder()
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .http2_only(config.http2_prior_knowledge)
        .build(connector(config.connect_timeout))
}

/// A pooled client for calls that are not to a provider (guardrail webhooks).
pub fn plain(connect_timeout: std::time::Duration) -> HttpClient {
    builder().build(connector(connect_timeout))
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new()).pool_timer(TokioTimer::new());
    b
}

fn connector(connect_timeout: std::time::Duration) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http)
}
