//! The exporter's HTTP/1.1 client: POSTs an encoded export request to the OTLP receiver
//! over one kept-alive connection, made again when the receiver closed it.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use sluice_core::config::OtlpEndpoint;
use std::time::Duration;
use tokio::net::TcpStream;

/// A connection to the receiver, made when first needed.
pub struct Poster {
    endpoint: OtlpEndpoint,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Poster {
    /// A client of `endpoint`, each export allowed `timeout`.
    pub fn new(endpoint: OtlpEndpoint, timeout: Duration) -> Self {
        Self {
            endpoint,
            timeout,
            conn: None,
        }
    }

    /// Sends `body` (an `ExportTraceServiceRequest`); `Err` says why it did not arrive.
    pub async fn post(&mut self, body: Bytes) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.try_post(body)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(format!("no answer within {} ms", self.timeout.as_millis()))
            }
        }
    }

    async fn try_post(&mut self, body: Bytes) -> Result<(), String> {
        let mut conn = match self.conn.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => self.connect().await?,
        };
        conn.ready().await.map_err(|e| e.to_string())?;
        let request = http::Request::post(&self.endpoint.path)
            .header(HOST, &self.endpoint.authority)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = conn
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read to its end (a partial-success body is not acted on), so the connection is
        // free for the next export.
        let read = response.into_body().collect().await;
        if read.is_ok() {
            self.conn = Some(conn);
        }
        match status.is_success() {
            true => Ok(()),
            false => Err(format!("the receiver answered {status}")),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let authority = &self.endpoint.authority;
        let stream = TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}
