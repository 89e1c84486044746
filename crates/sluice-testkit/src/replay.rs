//! Replayed answers: the fake sends exactly the bytes a test gives it, as a provider would
//! have sent them, instead of building an answer from the other [`Behavior`] fields.
//!
//! This is how a test states an upstream transcript taken from a provider's documented
//! format (an Anthropic stream with `thinking` blocks, an OpenAI-compatible stream with
//! `reasoning_content`, a Gemini answer cut by `SAFETY`, an Ollama line with `thinking`...)
//! without the fake having to know every variant. A streamed request is answered with the
//! events one write each (`chunk_delay_ms` and `cut_after_chunks` apply); a whole request
//! with the first event as the body. The content type is the API's: SSE, or NDJSON for
//! Ollama's `/api/chat`, JSON for whole answers.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::Value;
use std::time::Duration;

use crate::behavior::Behavior;
use crate::body::{CancelGuard, FakeBody, SseStream};

/// Whether a request to `path` with body `body` asks for a stream: `"stream": true`, or
/// Gemini's `:streamGenerateContent`.
fn streams(path: &str, body: Option<&Value>) -> bool {
    path.ends_with(":streamGenerateContent")
        || body.and_then(|b| b.get("stream")) == Some(&Value::Bool(true))
}

/// The answer replaying `events` (see the module docs) to a request to `path`.
pub(crate) fn response(
    path: &str,
    body: Option<&Value>,
    events: &[String],
    behavior: &Behavior,
    mut guard: CancelGuard,
) -> Response<FakeBody> {
    if !streams(path, body) {
        guard.disarm();
        let whole = events.first().cloned().unwrap_or_default();
        let mut resp = Response::new(FakeBody::full(Bytes::from(whole)));
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return resp;
    }
    let queue = events.iter().map(|e| Bytes::from(e.clone())).collect();
    let stream = SseStream::new(
        queue,
        None,
        Duration::from_millis(behavior.chunk_delay_ms),
        behavior.cut_after_chunks,
        guard,
    );
    let mut resp = Response::new(FakeBody::sse(stream));
    let content_type = if path == "/api/chat" {
        "application/x-ndjson"
    } else {
        "text/event-stream"
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
