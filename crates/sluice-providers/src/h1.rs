//! The upstream client for plain-HTTP (`http://`) providers spoken to in HTTP/1.1: each
//! worker thread keeps its own idle connections, and a request drives its connection in
//! its own task: the connection future is polled with the request until the response head,
//! then by the response body as it is read ([`H1Body`]), and the connection goes back to
//! the worker's pool once the body ended. No connection task, no hand-off between tasks,
//! no task spawned per request to put the connection back (as hyper-util's pooled client
//! has). A request that fails on a reused connection before any of it was sent (the
//! upstream had closed it) is sent once more on a new connection.
//!
//! TLS and HTTP/2 upstreams keep hyper-util's pooled client ([`crate::client`]).

mod body;
mod conn;
mod pool;
#[cfg(test)]
mod tests;

pub use body::H1Body;
pub use conn::Failure;

use crate::upstream_body::UpstreamBody;
use conn::Conn;
use http::header::{HeaderValue, HOST};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use pool::Pool;
use sluice_core::config::ProviderConfig;
use std::sync::Arc;

/// One provider's HTTP/1.1 client: a pool per worker thread.
pub struct H1Client {
    pools: Box<[Arc<Pool>]>,
    connector: HttpConnector,
    /// `scheme://authority` of the base URL: where connections go.
    origin: Uri,
    /// `Host` header value.
    host: HeaderValue,
}

impl H1Client {
    /// A client for `config`'s `base_url` with `pools` pools, or `None` when the URL is not
    /// a plain `http://` one (or HTTP/2 is asked for).
    pub fn new(config: &ProviderConfig, pools: usize) -> Option<Self> {
        if config.http2_prior_knowledge {
            return None;
        }
        let base: Uri = config.base_url.parse().ok()?;
        if base.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        let authority = base.authority()?.clone();
        // As hyper-util writes it: the port only when it is not 80.
        let host = match base.port_u16() {
            Some(80) => HeaderValue::from_str(authority.host()),
            _ => HeaderValue::from_str(authority.as_str()),
        }
        .ok()?;
        let origin = Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(authority)
            .path_and_query("/")
            .build()
            .ok()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let pools = (0..pools.max(1))
            .map(|_| {
                Arc::new(Pool::new(
                    config.pool_idle_timeout,
                    config.pool_max_idle_per_host,
                ))
            })
            .collect();
        Some(Self {
            pools,
            connector,
            origin,
            host,
        })
    }

    /// Closes worker `worker`'s idle connections beyond the `keep` most recently used.
    pub fn shrink_idle(&self, worker: usize, keep: usize) {
        self.pools[worker % self.pools.len()].shrink(keep);
    }

    /// Sends `request` (an absolute URI on the base URL's host) on worker `worker`'s pool
    /// and waits for the response head.
    pub async fn send(
        &self,
        worker: usize,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<H1Body>, Failure> {
        let pool = &self.pools[worker % self.pools.len()];
        origin_form(request.uri_mut());
        request
            .headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.host.clone());
        let pooled = std::future::poll_fn(|cx| std::task::Poll::Ready(pool.checkout(cx))).await;
        let mut conn = match pooled {
            Some(conn) => conn,
            None => Conn::open(&self.connector, &self.origin).await?,
        };
        let response = match conn.exchange(request).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                // The upstream closed the idle connection before the request went out.
                Some(request) if conn.reused => {
                    conn = Conn::open(&self.connector, &self.origin).await?;
                    conn.exchange(request)
                        .await
                        .map_err(|e| Failure::Http(e.into_error()))?
                }
                _ => return Err(Failure::Http(e.into_error())),
            },
        };
        Ok(response.map(|body| H1Body::new(body, conn, Arc::clone(pool))))
    }
}

/// `/path?query` of an absolute URI: what an HTTP/1.1 request line names.
fn origin_form(uri: &mut Uri) {
    let path = uri.path_and_query().cloned();
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
    if let Ok(origin) = Uri::from_parts(parts) {
        *uri = origin;
    }
}
