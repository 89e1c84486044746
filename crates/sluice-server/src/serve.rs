//! The accept loop, the router, and graceful shutdown.
//!
//! sluice serves eight routes, so the router is a `match` on method and path: no route
//! table, no boxing, no per-request allocation. Every connection is served by hyper
//! (HTTP/1.1 with keep-alive, or HTTP/2 prior knowledge) and watched for graceful
//! shutdown: on the signal the listener closes, in-flight requests (streams included)
//! finish, and whatever is still running after `server.shutdown_grace_ms` is cut.

use crate::body::ResponseBody;
use crate::handlers;
use crate::metrics::Endpoint;
use crate::proxy;
use crate::request_id::{self, X_REQUEST_ID};
use crate::state::AppState;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sluice_core::config::Config;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A bound, not yet running, gateway.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

/// Routes one request.
async fn route(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let request_id = request_id::for_request(req.headers());
    let method = req.method().clone();
    let path = req.uri().path();
    let mut response = match (&method, path) {
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
            proxy::serve(&state, Endpoint::Chat, req, &request_id).await
        }
        (&Method::POST, "/v1/embeddings" | "/embeddings") => {
            proxy::serve(&state, Endpoint::Embeddings, req, &request_id).await
        }
        (&Method::GET, "/v1/models" | "/models") => handlers::models(&state),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            handlers::model(&state, &p["/v1/models/".len()..])
        }
        (&Method::GET, "/health") => handlers::health(),
        (&Method::GET, "/health/detailed") => handlers::health_detailed(&state),
        (&Method::GET, "/metrics") => handlers::metrics(&state),
        (
            m,
            p @ ("/v1/chat/completions" | "/chat/completions" | "/v1/embeddings" | "/embeddings"),
        ) => handlers::method_not_allowed(m, p, "POST"),
        (m, p @ ("/v1/models" | "/models" | "/health" | "/health/detailed" | "/metrics")) => {
            handlers::method_not_allowed(m, p, "GET")
        }
        (_, p) => handlers::not_found(p),
    };
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    Ok(response)
}

impl Server {
    /// Builds the state and binds the listener (`server.listen`).
    pub async fn bind(config: Config) -> io::Result<Self> {
        std::fs::create_dir_all(&config.storage.data_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create data directory `{}`: {e}",
                    config.storage.data_dir.display()
                ),
            )
        })?;
        let listen = config.server.listen;
        let state = AppState::new(config).map_err(|e| io::Error::other(e.to_string()))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
        Ok(Self {
            listener,
            state: Arc::new(state),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests for up to
    /// `server.shutdown_grace_ms`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Self { listener, state } = self;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(state.server.request_read_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(state.server.max_connections));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, _peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            state.metrics.connections.fetch_add(1, Relaxed);
            let st = Arc::clone(&state);
            let service = service_fn(move |req| route(Arc::clone(&st), req));
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
                drop(permit);
            });
        }
        drop(listener);
        let grace = state.server.shutdown_grace;
        tracing::info!(
            in_flight = state.metrics.in_flight.load(Relaxed),
            grace_ms = grace.as_millis() as u64,
            "shutting down: finishing in-flight requests"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = state.metrics.in_flight.load(Relaxed),
                "grace period over: cutting the requests still in flight"
            );
        }
        Ok(())
    }
}
