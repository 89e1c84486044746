//! One try on one deployment: the upstream call prepared by its provider
//! ([`sluice_providers::Provider::prepare`]), sent on the worker's pool under the
//! attempt's deadlines, and its answer read whole or handed to a relay; or, for a model
//! sluice runs itself, the local runtime's answer.

use super::answer::Answer;
#[cfg(feature = "local")]
use super::local;
use super::pipe::Pipe;
use super::relay::{Relay, RelayParams};
use crate::request_body::{self, UpstreamReadError};
use crate::state::AppState;
use bytes::Bytes;
use http::header::HeaderValue;
use http::Response;
use http_body_util::BodyExt;
use sluice_core::{retry, Error, ErrorKind, Operation};
use sluice_providers::client::UpstreamBody;
use sluice_providers::error as upstream_error;
use sluice_providers::ResponseBody;
use sluice_providers::{Growing, Prepared, Provider, Reader};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest upstream error body read.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// The deadlines of one try.
struct Deadlines {
    /// The try's end (the provider's timeout, or the route's deadline if sooner).
    total: tokio::time::Instant,
    /// The response head's (and a stream's first byte's) deadline.
    head: tokio::time::Instant,
    /// `first_token_timeout_ms`, for a stream.
    first_wait: Option<Duration>,
    /// Longest wait between two reads of the body.
    chunk: Duration,
}

/// One try on one deployment.
pub struct Attempt<'a> {
    pub state: &'a Arc<AppState>,
    pub provider: &'a Provider,
    pub deployment: usize,
    pub op: Operation,
    pub started: Instant,
    pub attempt_started: Instant,
    pub deadline: Instant,
    pub first_token_timeout: Option<Duration>,
    pub stream: bool,
    /// What the client asked for (translated answers name it).
    pub model: &'a str,
    /// The model id sent upstream.
    pub upstream_model: &'a str,
    /// Prompt tokens estimated from the request.
    pub estimated_prompt_tokens: u64,
    /// The upload the try sends while it is still arriving: the try's deadlines count
    /// from its end, not from the try's start.
    pub arriving: Option<&'a Arc<Growing>>,
}

impl Attempt<'_> {
    fn timeout(&self, message: String) -> Error {
        ErrorKind::UpstreamTimeout {
            provider: self.provider.name().to_string(),
            message,
        }
        .into()
    }

    fn read_error(&self, e: UpstreamReadError) -> Error {
        let name = self.provider.name().to_string();
        match e {
            UpstreamReadError::Timeout => ErrorKind::UpstreamTimeout {
                provider: name,
                message: "the response body did not arrive in time".into(),
            },
            UpstreamReadError::Broken(m) => ErrorKind::UpstreamConnect {
                provider: name,
                message: format!("the connection broke while reading the response: {m}"),
            },
            UpstreamReadError::TooLarge => ErrorKind::UpstreamProtocol {
                provider: name,
                message: format!(
                    "response larger than {} bytes (`server.max_response_bytes`)",
                    self.state.server.max_response_bytes
                ),
            },
        }
        .into()
    }

    /// Makes the try.
    pub async fn run(&self, prepared: Prepared, body: &Bytes) -> Result<Answer, Error> {
        let (request, reader) = match prepared {
            Prepared::Http { request, reader } => (request, reader),
            Prepared::InProcess => return self.in_process(body).await,
        };
        let (response, deadlines) = self.send(request).await?;
        let (head, upstream) = response.into_parts();
        if !head.status.is_success() {
            return Err(self.refused(&head, upstream, &deadlines).await);
        }
        let is_sse = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if reader.pipes() && !is_sse {
            return Ok(self.pipe(&head, upstream, &deadlines));
        }
        if self.stream && (is_sse || reader.streams_lines()) {
            return self.relay(upstream, &reader, &deadlines).await;
        }
        self.whole(&head, upstream, &reader, &deadlines).await
    }

    /// The try's deadlines, `shift` later than its start says (the time its upload took
    /// to arrive).
    fn deadlines(&self, shift: Duration) -> Deadlines {
        let total = tokio::time::Instant::from_std(self.deadline + shift);
        // A stream must show its first byte within `first_token_timeout_ms` of the try's
        // start (response head included), else the next deployment gets the request.
        let first_wait = match (self.stream, self.first_token_timeout) {
            (true, Some(t)) => Some(t),
            _ => None,
        };
        let head = first_wait.map_or(total, |t| {
            total.min(tokio::time::Instant::from_std(self.attempt_started + shift) + t)
        });
        Deadlines {
            total,
            head,
            first_wait,
            chunk: self.provider.config.chunk_timeout,
        }
    }

    /// Sends the request; the response head must come before the head deadline (counted
    /// from the upload's end while the request's upload still arrives). The deadlines used.
    async fn send(
        &self,
        request: http::Request<UpstreamBody>,
    ) -> Result<(Response<ResponseBody>, Deadlines), Error> {
        let sending = self.provider.send(request);
        tokio::pin!(sending);
        let mut shift = Duration::ZERO;
        if let Some(upload) = self.arriving {
            tokio::select! {
                r = &mut sending => return r.map(|r| (r, self.deadlines(shift))),
                () = upload.arrived() => shift = self.attempt_started.elapsed(),
            }
        }
        let d = self.deadlines(shift);
        match tokio::time::timeout_at(d.head, sending).await {
            Ok(r) => r.map(|r| (r, d)),
            Err(_) => Err(match d.first_wait {
                Some(t) if d.head < d.total => self.timeout(format!(
                    "no first token within {} ms (`first_token_timeout_ms`)",
                    t.as_millis()
                )),
                _ => self.timeout(format!(
                    "no response within {} ms",
                    self.deadline
                        .duration_since(self.attempt_started)
                        .as_millis()
                )),
            }),
        }
    }

    /// The upstream's refusal (a non-2xx status) as an error, with its `Retry-After`.
    async fn refused(
        &self,
        head: &http::response::Parts,
        upstream: ResponseBody,
        d: &Deadlines,
    ) -> Error {
        let header = |name: &str| head.headers.get(name).and_then(|v| v.to_str().ok());
        let retry_after = retry::parse_retry_after(header("retry-after"), header("retry-after-ms"));
        let bytes = request_body::read_upstream(upstream, MAX_ERROR_BODY, d.total, d.chunk)
            .await
            .unwrap_or_default();
        upstream_error::from_response(
            self.provider.name(),
            head.status.as_u16(),
            retry_after,
            &bytes,
        )
    }

    /// A streamed answer, committed once its first byte is here (until then, failing over
    /// is free), then relayed.
    async fn relay(
        &self,
        mut upstream: ResponseBody,
        reader: &Reader,
        d: &Deadlines,
    ) -> Result<Answer, Error> {
        let first_deadline = match d.first_wait {
            Some(_) => d.head,
            None => d.total.min(tokio::time::Instant::now() + d.chunk),
        };
        let wait = d.first_wait.unwrap_or(d.chunk);
        let name = || self.provider.name().to_string();
        let first = loop {
            match tokio::time::timeout_at(first_deadline, upstream.frame()).await {
                Err(_) => {
                    return Err(
                        self.timeout(format!("no first token within {} ms", wait.as_millis()))
                    )
                }
                Ok(None) => {
                    return Err(ErrorKind::UpstreamProtocol {
                        provider: name(),
                        message: "the stream ended before any data".into(),
                    }
                    .into())
                }
                Ok(Some(Err(e))) => {
                    return Err(ErrorKind::UpstreamConnect {
                        provider: name(),
                        message: format!("the stream broke before any data: {e}"),
                    }
                    .into())
                }
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => break data,
                    _ => continue,
                },
            }
        };
        self.state.deployments[self.deployment]
            .ttft
            .observe(self.attempt_started.elapsed());
        let metrics = self.state.metrics.series(self.deployment).endpoint(self.op);
        metrics.ttft.observe(self.started.elapsed());
        let relay = Relay::new(
            upstream,
            first,
            Arc::clone(self.state),
            RelayParams {
                reader: reader.stream(self.model, self.state.server.max_event_bytes as usize),
                provider: self.provider.name().into(),
                chunk_timeout: d.chunk,
                deadline: d.total,
                series: self.deployment,
                op: self.op,
                started: self.started,
                estimated_prompt_tokens: self.estimated_prompt_tokens,
                ttft: self.started.elapsed(),
            },
        );
        Ok(Answer::Stream(Box::new(relay)))
    }

    /// Raw bytes (audio) piped to the client as they come.
    fn pipe(&self, head: &http::response::Parts, upstream: ResponseBody, d: &Deadlines) -> Answer {
        let ttft = self.started.elapsed();
        self.state.deployments[self.deployment]
            .ttft
            .observe(self.attempt_started.elapsed());
        let content_type = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
        Answer::Piped {
            content_type,
            content_length: head.headers.get(http::header::CONTENT_LENGTH).cloned(),
            body: Box::new(Pipe::new(upstream, d.chunk, d.total, ttft)),
        }
    }

    /// A whole answer, read under the response size limit, its usage read.
    async fn whole(
        &self,
        head: &http::response::Parts,
        upstream: ResponseBody,
        reader: &Reader,
        d: &Deadlines,
    ) -> Result<Answer, Error> {
        let max = self.state.server.max_response_bytes;
        let bytes: Bytes = request_body::read_upstream(upstream, max, d.total, d.chunk)
            .await
            .map_err(|e| self.read_error(e))?;
        self.state.deployments[self.deployment]
            .total
            .observe(self.attempt_started.elapsed());
        let (bytes, seen) = reader
            .whole(bytes, self.model)
            .map_err(|message| -> Error {
                ErrorKind::UpstreamProtocol {
                    provider: self.provider.name().to_string(),
                    message,
                }
                .into()
            })?;
        let content_type = match reader.passes_through() {
            true => head.headers.get(http::header::CONTENT_TYPE).cloned(),
            false => None,
        }
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
        Ok(Answer::Whole {
            status: head.status,
            content_type,
            body: bytes,
            usage: seen,
        })
    }

    /// A model sluice runs itself.
    async fn in_process(&self, body: &Bytes) -> Result<Answer, Error> {
        #[cfg(feature = "local")]
        {
            match self.op {
                Operation::Embeddings => {
                    local::embeddings(self.state, self.upstream_model, self.model, body).await
                }
                Operation::Speech
                | Operation::Transcription
                | Operation::Translation
                | Operation::ImageGeneration
                | Operation::ImageEdit
                | Operation::ImageVariation
                | Operation::Moderation => Err(self.provider.unsupported(self.op)),
                Operation::Rerank => {
                    local::rerank(self.state, self.upstream_model, self.model, body).await
                }
                Operation::Completion => {
                    local::text_completion(
                        self.state,
                        self.upstream_model,
                        self.model,
                        body,
                        self.stream,
                    )
                    .await
                }
                Operation::Chat => {
                    local::chat(
                        self.state,
                        self.upstream_model,
                        self.model,
                        body,
                        self.stream,
                    )
                    .await
                }
            }
        }
        #[cfg(not(feature = "local"))]
        {
            let _ = (body, self.upstream_model);
            Err(ErrorKind::Unavailable {
                message: format!(
                    "provider `{}` runs its models in process, and this build of sluice has no local runtime (cargo feature `local`)",
                    self.provider.name()
                ),
            }
            .into())
        }
    }
}
