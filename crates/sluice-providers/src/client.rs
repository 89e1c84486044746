//! The pooled, keep-alive HTTP client of one provider: for a plain `http://` upstream in
//! HTTP/1.1, [`crate::h1`]'s client, whose connections are driven in the request's own task;
//! else hyper-util's pooled client: HTTP/1.1 and HTTP/2 (ALPN over TLS, or prior knowledge
//! for h2c), rustls with the webpki roots, no OpenSSL. One pool per worker thread either way,
//! and, with `max_connections`, a bound on the requests in flight ([`crate::slots`]).

use crate::h1::{self, H1Body, H1Client};
use crate::slots::{Slot, Slots};
pub use crate::upstream_body::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_core::config::ProviderConfig;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The body of an upstream's answer, read as it arrives, holding the request's slot (see
/// [`crate::slots`]) until it ended.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    slot: Option<Slot>,
}

#[derive(Debug)]
enum Inner {
    /// On a connection of hyper-util's pooled client (driven by its own task).
    Pooled(Incoming),
    /// On a connection driven by its reader ([`crate::h1`]).
    Driven(H1Body),
}

/// Why an upstream's body broke off, on either kind of connection. Shown as the connection
/// showed it (`error reading a body from connection`), the cause as its source.
#[derive(Debug)]
pub enum BodyError {
    /// On a connection of hyper-util's pooled client.
    Pooled(hyper::Error),
    /// On a connection of [`crate::h1`]'s.
    Driven(h1::Failure),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pooled(e) => e.fmt(f),
            Self::Driven(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Pooled(e) => e.source(),
            Self::Driven(e) => e.source(),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Pooled(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Pooled))),
            Inner::Driven(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Driven))),
        };
        // Ended (its connection back in the pool) or failed: the slot is free for the next.
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || this.is_end_stream() {
            this.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Pooled(b) => b.is_end_stream(),
            Inner::Driven(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Pooled(b) => b.size_hint(),
            Inner::Driven(b) => b.size_hint(),
        }
    }
}

/// A provider's client: its connection pools and its slots.
pub(crate) struct Upstream {
    pools: Pools,
    slots: Slots,
}

/// A provider's connection pools: one per worker thread, and one for the other threads
/// ([`h1::pool_index`]).
enum Pools {
    /// Plain HTTP/1.1.
    Driven(H1Client),
    /// TLS or HTTP/2: hyper-util's client, one per worker thread.
    Pooled(Box<[HttpClient]>),
}

impl Upstream {
    /// The client for `config` for `workers` worker threads.
    pub(crate) fn new(config: &ProviderConfig, workers: usize) -> Self {
        Self {
            pools: match H1Client::new(config, workers) {
                Some(c) => Pools::Driven(c),
                None => Pools::Pooled((0..=workers.max(1)).map(|_| build(config)).collect()),
            },
            slots: Slots::new(config.max_connections, workers),
        }
    }

    /// Closes worker `worker`'s idle connections beyond the `keep` most recently used
    /// (plain HTTP/1.1 upstreams; hyper-util's pools keep theirs to their idle timeout).
    pub(crate) fn shrink_idle(&self, worker: usize, keep: usize) {
        if let Pools::Driven(c) = &self.pools {
            c.shrink_idle(worker, keep);
        }
    }

    /// Sends `request` on worker `worker`'s pool, once it has a slot, and waits for the
    /// response head.
    pub(crate) async fn send(
        &self,
        provider: &str,
        worker: usize,
        request: http::Request<UpstreamBody>,
    ) -> Result<http::Response<ResponseBody>, sluice_core::Error> {
        let slot = self.slots.take(worker).await;
        let response = match &self.pools {
            // Boxed: the exchange's state (connect, the request going out) is allocated once
            // a slot is taken, not carried by every request that waits for one (thousands,
            // under a burst past `max_connections`).
            Pools::Driven(c) => Box::pin(c.send(worker, request))
                .await
                .map(|r| r.map(Inner::Driven))
                .map_err(|e| match e {
                    h1::Failure::Connect(e) => crate::error::from_connect(provider, &*e),
                    e @ (h1::Failure::Exchange(_) | h1::Failure::Body(_)) => {
                        crate::error::from_exchange(provider, &e)
                    }
                }),
            Pools::Pooled(clients) => clients[h1::pool_index(worker, clients.len())]
                .request(request)
                .await
                .map(|r| r.map(Inner::Pooled))
                .map_err(|e| crate::error::from_transport(provider, &e)),
        }?;
        Ok(response.map(|inner| ResponseBody { inner, slot }))
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
