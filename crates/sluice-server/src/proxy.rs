//! The proxy path of `/v1/chat/completions` and `/v1/embeddings`: read and check the body,
//! resolve the model, call the upstream, and answer with its response (whole, or relayed
//! as a stream), counting everything on the way.

use crate::body::{self, error_response, ResponseBody, UpstreamReadError};
use crate::metrics::{Endpoint, EndpointMetrics, UpstreamError};
use crate::relay::{Relay, RelayParams};
use crate::state::AppState;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use sluice_core::{Error, ErrorKind};
use sluice_providers::error as upstream_error;
use sluice_types::{ChatRequest, EmbeddingsRequest, Usage};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// `x-sluice-model`.
pub const X_SLUICE_MODEL: HeaderName = HeaderName::from_static("x-sluice-model");
/// `x-sluice-provider`.
pub const X_SLUICE_PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");

/// Longest upstream error body read.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// What a proxied request resolved to, for headers and metrics.
struct Resolved {
    series: usize,
    model: HeaderValue,
    provider: HeaderValue,
}

/// The part of a [`crate::state::Target`] that outlives the request view.
struct Chosen<'s> {
    provider: &'s sluice_providers::Provider,
    model_header: HeaderValue,
    series: usize,
}

impl<'s> From<crate::state::Target<'s, '_>> for Chosen<'s> {
    fn from(t: crate::state::Target<'s, '_>) -> Self {
        Self {
            provider: t.provider,
            model_header: t.model_header,
            series: t.series,
        }
    }
}

/// Serves one proxied request of `endpoint`.
pub async fn serve(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let started = Instant::now();
    state.metrics.in_flight.fetch_add(1, Relaxed);
    let mut resolved = None;
    let result = proxy(state, endpoint, req, request_id, started, &mut resolved).await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let metrics = match &resolved {
        Some(r) => state.metrics.series(r.series),
        None => state.metrics.unresolved(),
    }
    .endpoint(endpoint);
    metrics.count_status(response.status().as_u16());
    if let Some(r) = resolved {
        let h = response.headers_mut();
        h.insert(X_SLUICE_MODEL, r.model);
        h.insert(X_SLUICE_PROVIDER, r.provider);
    }
    // A relayed stream records its own latency and in-flight count when it ends.
    if !matches!(response.body(), ResponseBody::Relay(_)) {
        metrics.latency.observe(started.elapsed());
        state.metrics.in_flight.fetch_sub(1, Relaxed);
    }
    response
}

fn count_upstream_error(m: &EndpointMetrics, e: &Error) {
    let kind = match e.kind() {
        ErrorKind::UpstreamStatus { status: 429, .. } => UpstreamError::RateLimited,
        ErrorKind::UpstreamStatus { status, .. } if *status < 500 => UpstreamError::Status4xx,
        ErrorKind::UpstreamStatus { .. } => UpstreamError::Status5xx,
        ErrorKind::UpstreamConnect { .. } => UpstreamError::Connect,
        ErrorKind::UpstreamTimeout { .. } => UpstreamError::Timeout,
        _ => UpstreamError::Protocol,
    };
    m.upstream_error(kind);
}

async fn proxy(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    started: Instant,
    resolved: &mut Option<Resolved>,
) -> Result<Response<ResponseBody>, Error> {
    let (parts, incoming) = req.into_parts();
    let content_length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body = body::read_limited(
        incoming,
        content_length,
        expects_continue,
        state.server.max_body_bytes,
        state.server.request_read_timeout,
    )
    .await?;

    let invalid = |e: sluice_types::InvalidRequest| -> Error {
        ErrorKind::InvalidRequest {
            message: e.message,
            param: e.param,
        }
        .into()
    };
    // Parse, resolve, and build the upstream body in one scope: the views borrow `body`.
    let (target, upstream_body, stream, strip_usage): (Chosen<'_>, _, _, _) = match endpoint {
        Endpoint::Chat => {
            let chat = ChatRequest::parse(&body).map_err(invalid)?;
            let target = state.resolve(&chat.model)?;
            let ask_usage = chat.stream && target.provider.stream_usage();
            let upstream_body = chat.upstream_body(&body, target.upstream, ask_usage);
            let strip = ask_usage && !chat.include_usage;
            (target.into(), upstream_body, chat.stream, strip)
        }
        Endpoint::Embeddings => {
            let emb = EmbeddingsRequest::parse(&body).map_err(invalid)?;
            let target = state.resolve(&emb.model)?;
            let upstream_body = emb.upstream_body(&body, target.upstream);
            (target.into(), upstream_body, false, false)
        }
    };
    let provider = target.provider;
    *resolved = Some(Resolved {
        series: target.series,
        model: target.model_header.clone(),
        provider: provider.header_value.clone(),
    });
    let metrics = state.metrics.series(target.series).endpoint(endpoint);

    let provider_endpoint = match endpoint {
        Endpoint::Chat => sluice_providers::Endpoint::Chat,
        Endpoint::Embeddings => sluice_providers::Endpoint::Embeddings,
    };
    let upstream_req = provider.request(provider_endpoint, upstream_body, request_id);
    let deadline = tokio::time::Instant::from_std(started) + provider.config.timeout;
    let response = match tokio::time::timeout_at(deadline, provider.send(upstream_req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            count_upstream_error(metrics, &e);
            return Err(e);
        }
        Err(_) => {
            let e: Error = ErrorKind::UpstreamTimeout {
                provider: provider.name().to_string(),
                message: format!(
                    "no response within {} ms (`timeout_ms`)",
                    provider.config.timeout.as_millis()
                ),
            }
            .into();
            count_upstream_error(metrics, &e);
            return Err(e);
        }
    };
    let (head, upstream) = response.into_parts();
    let read_error = |e: UpstreamReadError| -> Error {
        let name = provider.name().to_string();
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
                    state.server.max_response_bytes
                ),
            },
        }
        .into()
    };

    if !head.status.is_success() {
        let retry_after = head
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = body::read_upstream(
            upstream,
            MAX_ERROR_BODY,
            deadline,
            provider.config.chunk_timeout,
        )
        .await
        .unwrap_or_default();
        let e = upstream_error::from_response(
            provider.name(),
            head.status.as_u16(),
            retry_after,
            &bytes,
        );
        count_upstream_error(metrics, &e);
        return Err(e);
    }

    let is_sse = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if stream && is_sse {
        let relay = Relay::new(
            upstream,
            Arc::clone(state),
            RelayParams {
                strip_usage,
                provider: provider.name().into(),
                chunk_timeout: provider.config.chunk_timeout,
                deadline,
                series: target.series,
                started,
            },
        );
        let mut r = Response::new(ResponseBody::Relay(Box::new(relay)));
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        h.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        return Ok(r);
    }

    let bytes: Bytes = match body::read_upstream(
        upstream,
        state.server.max_response_bytes,
        deadline,
        provider.config.chunk_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            let e = read_error(e);
            count_upstream_error(metrics, &e);
            return Err(e);
        }
    };
    if let Some(u) = Usage::from_response(&bytes) {
        metrics.add_usage(&u);
    }
    let mut r = Response::new(ResponseBody::full(bytes));
    *r.status_mut() = head.status;
    let content_type = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, content_type);
    Ok(r)
}
