//! The upstream client for plain-HTTP (`http://`) providers spoken to in HTTP/1.1, with
//! sluice's own exchange (as the server side's, sluice-server's `front`): each worker thread keeps its own
//! idle connections, and a request uses its connection in its own task: it writes itself
//! ([`write`]), reads the response head ([`head`]), then the response body reads the rest
//! as it is read ([`H1Body`], framed by [`framing`]), and the connection goes back to the
//! worker's pool as soon as the body's framing says it ended. No connection task, no
//! hand-off between tasks.
//!
//! Why not hyper's client connection (which this used before): it keeps an 8 KiB write
//! buffer and an 8 KiB read buffer for the connection's whole life, and reads until the
//! socket says "nothing more". Here a connection is its socket ([`conn`]): idle in the pool
//! or waiting for its upstream, it holds no buffer; a request's head is a buffer of its
//! size, written with its body (a body in memory: one write); reads go into the worker
//! thread's scratch buffer and come out as `Bytes` of what was read; and no read is made
//! once the framing says the answer is complete.
//!
//! An idle connection taken from the pool is checked first: one the upstream closed, or
//! sent something on unasked, is dropped. A request that fails on a reused connection
//! before any of it was written (the upstream had closed it) is sent once more on a new
//! connection.
//!
//! TLS and HTTP/2 upstreams keep hyper-util's pooled client ([`crate::client`]).

mod body;
mod conn;
mod error;
mod framing;
mod head;
mod pool;
#[cfg(test)]
mod tests;
mod write;

pub use body::H1Body;
pub use error::{Cause, Failure};

use crate::upstream_body::UpstreamBody;
use conn::Conn;
use http::header::{HeaderValue, HOST};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use pool::Pool;
use sluice_core::config::ProviderConfig;
use std::sync::Arc;

/// Which of `len` pools serves requests sent from worker `worker` ([`crate::worker`]): a
/// pool per worker thread, and the last for every other thread (the acceptor's batch lines
/// and health checks). A connection is tied to the runtime that opened it, and a worker's
/// runtime may end before the acceptor's work does (a shutdown), so the two never share one.
pub(crate) fn pool_index(worker: usize, len: usize) -> usize {
    worker.min(len.saturating_sub(1))
}

/// One provider's HTTP/1.1 client: a pool per worker thread, and one for the other threads.
pub struct H1Client {
    pools: Box<[Arc<Pool>]>,
    connector: HttpConnector,
    /// `scheme://authority` of the base URL: where connections go.
    origin: Uri,
    /// `Host` header value.
    host: HeaderValue,
}

impl H1Client {
    /// A client for `config`'s `base_url` for `workers` worker threads (see [`pool_index`]),
    /// or `None` when the URL is not a plain `http://` one (or HTTP/2 is asked for).
    pub fn new(config: &ProviderConfig, workers: usize) -> Option<Self> {
        if config.http2_prior_knowledge {
            return None;
        }
        let base: Uri = config.base_url.parse().ok()?;
        if base.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        let authority = base.authority()?.clone();
        // As hyper-util writes it: the host (no userinfo), the port only when it is not 80.
        let host = match base.port_u16() {
            None | Some(80) => HeaderValue::from_str(authority.host()),
            Some(port) => HeaderValue::from_str(&format!("{}:{port}", authority.host())),
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
        let pools = (0..=workers.max(1))
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
        self.pools[pool_index(worker, self.pools.len())].shrink(keep);
    }

    /// Sends `request` (an absolute URI on the base URL's host) on worker `worker`'s pool
    /// and waits for the response head.
    pub async fn send(
        &self,
        worker: usize,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<H1Body>, Failure> {
        let pool = &self.pools[pool_index(worker, self.pools.len())];
        request
            .headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.host.clone());
        // The request line names the URI's path and query (origin form).
        let mut out = write::Outgoing::new(request);
        let mut conn = match pool.checkout() {
            Some(conn) => conn,
            None => Conn::open(&self.connector, &self.origin).await?,
        };
        let answer = match conn.exchange(&mut out).await {
            Ok(answer) => answer,
            // The upstream closed the idle connection before the request went out (a write
            // failed before its first byte; not the request's own body failing).
            Err(failed)
                if failed.unsent && conn.reused && matches!(failed.cause, Cause::Write(_)) =>
            {
                conn = Conn::open(&self.connector, &self.origin).await?;
                conn.exchange(&mut out)
                    .await
                    .map_err(|failed| Failure::Exchange(failed.cause))?
            }
            Err(failed) => return Err(Failure::Exchange(failed.cause)),
        };
        drop(out);
        let (parts, body) = H1Body::from_answer(answer, conn, Arc::clone(pool));
        Ok(Response::from_parts(parts, body))
    }
}
