//! `POST /v1/messages`: Anthropic's Messages API in front of every provider, for Claude-native
//! clients and SDKs. The request is turned into the gateway's OpenAI format and goes through
//! the same proxy path (routes, retries, breakers, metrics); the answer, whole or streamed,
//! is turned back into Anthropic's format, errors included.

use crate::body::{json, ResponseBody};
use crate::proxy::{self, BodySource};
use crate::state::AppState;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_providers::anthropic::inbound::{self, StreamConverter};
use sluice_types::sse::{event_data, Keep, SseScanner};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response<ResponseBody> {
    json(status, inbound::error_body(kind, message))
}

/// Serves `POST /v1/messages`.
pub async fn serve(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let (parts, incoming) = req.into_parts();
    let raw = match proxy::read_body(state, &parts, incoming).await {
        Ok(b) => b,
        Err(e) => {
            let status = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::BAD_REQUEST);
            return anthropic_error(status, e.error_type(), &e.message());
        }
    };
    let (body, model, stream) = match inbound::to_openai(&raw) {
        Ok(x) => x,
        Err(e) => return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", &e.0),
    };
    let response = proxy::serve(
        state,
        sluice_core::Operation::Chat,
        parts,
        BodySource::Ready(Bytes::from(body)),
        request_id,
    )
    .await;
    let (mut head, body) = response.into_parts();
    if !head.status.is_success() {
        // The error is in OpenAI's shape: say the same in Anthropic's.
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let kind = v["error"]["type"].as_str().unwrap_or("api_error");
        let message = v["error"]["message"].as_str().unwrap_or("upstream error");
        head.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Response::from_parts(head, ResponseBody::full(inbound::error_body(kind, message)));
    }
    let is_sse = head
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if stream && is_sse {
        let converted = ToAnthropic {
            inner: body,
            scanner: SseScanner::new(state.server.max_event_bytes as usize),
            converter: StreamConverter::new(&model),
            ended: false,
        };
        return Response::from_parts(head, ResponseBody::Converted(Box::new(converted)));
    }
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    match inbound::from_openai(&bytes, &model) {
        Ok(out) => {
            head.headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Response::from_parts(head, ResponseBody::full(out))
        }
        Err(m) => anthropic_error(StatusCode::BAD_GATEWAY, "api_error", &m),
    }
}

/// A stream of OpenAI chunks re-framed as Anthropic's event sequence, event by event.
pub struct ToAnthropic {
    inner: ResponseBody,
    scanner: SseScanner,
    converter: StreamConverter,
    ended: bool,
}

impl Body for ToAnthropic {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let mut out = Vec::new();
                    let ToAnthropic {
                        scanner, converter, ..
                    } = this;
                    let _ = scanner.push(data, |ev| {
                        if let Some(d) = event_data(ev) {
                            converter.on_event(&d, &mut out);
                        }
                        Keep::Drop
                    });
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => {
                    this.ended = true;
                    if !this.converter.is_done() {
                        let mut out = Vec::new();
                        this.converter.finish_stream(&mut out);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
