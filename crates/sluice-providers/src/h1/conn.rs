//! One upstream connection: hyper's HTTP/1.1 sender and the connection future behind it,
//! which whoever holds the connection polls (no task of its own).

use crate::upstream_body::UpstreamBody;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, TrySendError};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tower_service::Service;

/// Why a request got no response head.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange failed.
    Http(hyper::Error),
}

type Driver = http1::Connection<TokioIo<TcpStream>, UpstreamBody>;

/// A connection: the sender of its requests and the future that reads and writes it.
pub(super) struct Conn {
    sender: http1::SendRequest<UpstreamBody>,
    /// `None` once it ended (closed, failed): dropping it fails what it still held. Boxed
    /// once per connection, so that a request moves a pointer, not its buffers.
    driver: Option<Box<Driver>>,
    /// Taken from the idle pool (a request that fails on it unsent may be retried).
    pub(super) reused: bool,
}

impl Conn {
    /// Connects to `origin` (`scheme://authority`) and shakes hands.
    pub(super) async fn open(connector: &HttpConnector, origin: &Uri) -> Result<Self, Failure> {
        let mut connector = connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        let io = connector
            .call(origin.clone())
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(Failure::Http)?;
        Ok(Self {
            sender,
            driver: Some(Box::new(driver)),
            reused: false,
        })
    }

    /// Polls the connection future; `Ready` once it ended (it is dropped then, which
    /// fails a request or a body it still held).
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(driver) = &mut self.driver else {
            return Poll::Ready(());
        };
        match Pin::new(&mut **driver).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.driver = None;
                Poll::Ready(())
            }
        }
    }

    /// Whether the connection is idle and can take a request: its last exchange is over
    /// (request written, response read to its end) and it is still open.
    pub(super) fn is_ready(&self) -> bool {
        self.driver.is_some() && self.sender.is_ready()
    }

    /// Whether an idle connection is still usable: polled once, so that a close by the
    /// upstream (read as end of file) ends it.
    pub(super) fn is_alive(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx).is_pending() && self.is_ready()
    }

    /// Sends `request` and waits for the response head, driving the connection meanwhile.
    /// The request comes back in the error when it was not sent at all.
    pub(super) async fn exchange(
        &mut self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(request));
        std::future::poll_fn(|cx| {
            // The connection first: it writes the request and reads the answer, which
            // resolves the response future.
            let _ = self.drive(cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}
