//! Answer guardrails on a streamed chat answer: the content deltas of the first choice (a
//! legacy text completion's: its `text` pieces) go through a hold-back window ([`sluice_guard::stream::Holdback`]), so a value split across
//! chunks is redacted (or blocks the stream) before any of it leaves, and placeholders of
//! the request's redaction are put back whole. Events without content (the role, tool
//! calls, usage, `[DONE]`) pass as they are, after what is held back is released. A block
//! ends the stream with an error event (`guardrail_blocked`) and cancels the upstream.
//! With a `validate_json` guardrail the first choice's content is gathered and checked
//! against the request's schema at `[DONE]`: a failure refused ends the stream with an
//! error event (`output_validation_failed`) instead of `[DONE]`; a failure passed is
//! counted only (the headers are gone).

use super::ending::{Ending, Tracked};
use super::guard_json::Validation;
use bytes::Bytes;
use http_body::{Body, Frame};
use serde_json::Value;
use sluice_guard::stream::Holdback;
use sluice_guard::Finding;
use sluice_types::sse::{event_data, Keep, SseScanner};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The guarded stream: a live stream (the request's own, or a coalesced follower's copy)
/// through an [`EventFilter`].
pub struct GuardedStream<B> {
    inner: B,
    filter: EventFilter,
    ended: bool,
}

impl<B> GuardedStream<B> {
    /// Guards `inner`'s content.
    pub fn new(inner: B, filter: EventFilter) -> Self {
        Self {
            inner,
            filter,
            ended: false,
        }
    }
}

/// Where a stream's events carry their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pieces {
    /// Chat chunks: `choices[0].delta.content`.
    Chat,
    /// Legacy text completions: `choices[0].text`.
    Text,
}

impl Pieces {
    /// The pieces of an `op` request's stream.
    pub fn of(op: sluice_core::Operation) -> Self {
        match op {
            sluice_core::Operation::Completion => Self::Text,
            _ => Self::Chat,
        }
    }

    /// The text's key, and the object in `chunk` that holds it (`Null` when there is none:
    /// a usage chunk's `choices` are empty).
    fn holder(self, chunk: &Value) -> (&Value, &'static str) {
        match self {
            Self::Chat => (&chunk["choices"][0]["delta"], "content"),
            Self::Text => (&chunk["choices"][0], "text"),
        }
    }

    /// Sets the text of a chunk that has one.
    fn set(self, chunk: &mut Value, text: String) {
        match self {
            Self::Chat => chunk["choices"][0]["delta"]["content"] = Value::String(text),
            Self::Text => chunk["choices"][0]["text"] = Value::String(text),
        }
    }
}

/// Chat chunk events in, the same events out with their content held back and guarded.
pub struct EventFilter {
    scanner: SseScanner,
    holdback: Holdback,
    pieces: Pieces,
    /// The last content chunk, as the shape of a chunk that releases held-back text.
    template: Option<Value>,
    out: VecDeque<Bytes>,
    blocked: bool,
    /// The status a blocked stream ends with (400 a guardrail's block, 502 a schema's).
    status: u16,
    /// The schema check and the content gathered for it (`None` once checked).
    validation: Option<(Validation, String)>,
    /// What the request's guardrails found, then what this stream's did.
    found: Vec<Finding>,
    state: Arc<crate::state::AppState>,
}

impl EventFilter {
    /// A filter guarding with `holdback`.
    pub fn new(holdback: Holdback, state: Arc<crate::state::AppState>, pieces: Pieces) -> Self {
        Self {
            scanner: SseScanner::new(4 << 20),
            holdback,
            pieces,
            template: None,
            out: VecDeque::new(),
            blocked: false,
            status: 400,
            validation: None,
            found: Vec::new(),
            state,
        }
    }

    /// Counts what the guardrails found of the request before the stream's own findings, so
    /// that the stream's spend record says all of it.
    pub fn after(mut self, found: Vec<Finding>) -> Self {
        self.found = found;
        self
    }

    /// Counts findings in the metrics and for the spend record.
    fn count(&mut self, findings: Vec<Finding>) {
        self.state.tab_metrics.guarded(&findings);
        self.found.extend(findings);
    }

    /// Checks the first choice's content against a JSON schema when the stream ends.
    pub fn validating(mut self, validation: Option<Validation>) -> Self {
        self.validation = validation.map(|v| (v, String::new()));
        self
    }

    /// The schema check, once: `false` when it refuses the stream (an error event is out).
    fn validated(&mut self) -> bool {
        let Some((v, text)) = self.validation.take() else {
            return true;
        };
        let Err(reason) = v.check_text(&text) else {
            return true;
        };
        let action = if v.pass {
            sluice_guard::Action::Pass
        } else {
            sluice_guard::Action::Error
        };
        self.count(vec![v.finding(action)]);
        if v.pass {
            return true;
        }
        self.fail(&v.error(reason));
        self.status = 502;
        false
    }

    /// Whole events (a cached answer replayed) through the filter at once.
    pub fn whole(mut self, events: &Bytes) -> Bytes {
        self.push(events.clone());
        self.end();
        self.out
            .into_iter()
            .flat_map(|b| b.to_vec())
            .collect::<Vec<u8>>()
            .into()
    }

    /// Takes the next bytes of the stream.
    fn push(&mut self, data: Bytes) {
        let mut events = Vec::new();
        let pushed = self.scanner.push(data, |ev| {
            events.push(Bytes::copy_from_slice(ev));
            Keep::Drop
        });
        if pushed.is_err() {
            self.blocked = true;
        }
        for ev in events {
            if !self.blocked {
                self.on_event(&ev);
            }
        }
    }

    /// The stream ended.
    fn end(&mut self) {
        let tail = self.scanner.finish();
        if !tail.is_empty() && !self.blocked {
            self.on_event(&tail);
        }
        if !self.blocked {
            self.release_rest();
        }
        if !self.blocked {
            self.validated();
        }
        let findings = self.holdback.take_findings();
        self.count(findings);
    }

    /// Takes one event of the inner stream.
    fn on_event(&mut self, raw: &[u8]) {
        let Some(data) = event_data(raw) else {
            self.out.push_back(Bytes::copy_from_slice(raw));
            return;
        };
        if data.as_ref() == b"[DONE]" {
            self.release_rest();
            if !self.blocked && self.validated() {
                self.out.push_back(Bytes::copy_from_slice(raw));
            }
            return;
        }
        let Ok(mut chunk) = serde_json::from_slice::<Value>(&data) else {
            self.out.push_back(Bytes::copy_from_slice(raw));
            return;
        };
        let (holder, key) = self.pieces.holder(&chunk);
        let content = holder[key].as_str().map(str::to_string);
        let has_content = holder.get(key).is_some();
        let finishes = !chunk["choices"][0]["finish_reason"].is_null();
        if let (Some((_, gathered)), Some(text)) = (&mut self.validation, &content) {
            gathered.push_str(text);
        }
        let released = match content {
            Some(text) => {
                self.template = Some(chunk.clone());
                match self.holdback.push(&text) {
                    Ok(t) => t,
                    Err(f) => return self.block(f),
                }
            }
            None => String::new(),
        };
        let released = if finishes {
            match self.holdback.finish() {
                Ok(rest) => released + &rest,
                Err(f) => return self.block(f),
            }
        } else {
            released
        };
        if has_content {
            if released.is_empty() && !finishes && !carries_more(&chunk) {
                return;
            }
            self.pieces.set(&mut chunk, released);
        } else if !released.is_empty() {
            self.push_content(released);
        }
        self.push_chunk(&chunk);
    }

    /// Releases everything held back, as a content chunk of its own.
    fn release_rest(&mut self) {
        match self.holdback.finish() {
            Ok(rest) if !rest.is_empty() => self.push_content(rest),
            Ok(_) => {}
            Err(f) => self.block(f),
        }
    }

    fn push_content(&mut self, text: String) {
        let Some(mut chunk) = self.template.clone() else {
            return;
        };
        match self.pieces {
            Pieces::Chat => chunk["choices"][0]["delta"] = serde_json::json!({ "content": text }),
            Pieces::Text => chunk["choices"][0]["text"] = Value::String(text),
        }
        chunk["choices"][0]["finish_reason"] = Value::Null;
        self.push_chunk(&chunk);
    }

    fn push_chunk(&mut self, chunk: &Value) {
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(chunk.to_string().as_bytes());
        event.extend_from_slice(b"\n\n");
        self.out.push_back(Bytes::from(event));
    }

    fn block(&mut self, f: Finding) {
        self.count(vec![f.clone()]);
        let e: sluice_core::Error = sluice_core::ErrorKind::GuardrailBlocked {
            guardrail: f.guardrail,
            detector: f.detector,
            answer: true,
        }
        .into();
        self.fail(&e);
    }

    /// Ends the stream with the error event of `e`.
    fn fail(&mut self, e: &sluice_core::Error) {
        let body = sluice_types::ErrorBody {
            message: &e.message(),
            kind: e.error_type(),
            param: None,
            code: e.code(),
        }
        .to_json();
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\n");
        self.out.push_back(Bytes::from(event));
        self.blocked = true;
    }
}

/// Whether a chunk says more than its content: a role, tool calls, usage.
fn carries_more(chunk: &Value) -> bool {
    let delta = &chunk["choices"][0]["delta"];
    delta.get("role").is_some() || delta.get("tool_calls").is_some() || !chunk["usage"].is_null()
}

impl<B: Body<Data = Bytes> + Unpin> Body for GuardedStream<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.filter.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended || this.filter.blocked {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.filter.push(data);
                    }
                }
                Poll::Ready(Some(Err(aborted))) => return Poll::Ready(Some(Err(aborted))),
                Poll::Ready(None) => {
                    this.filter.end();
                    this.ended = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Tracked for GuardedStream<Box<dyn Tracked>> {
    fn ending(&mut self, completed: bool) -> Ending {
        let blocked = self.filter.blocked;
        let mut ending = self.inner.ending(completed || blocked);
        if blocked {
            ending.status = self.filter.status;
        }
        ending
    }

    fn guardrails(&self) -> Option<String> {
        sluice_guard::summarize(&self.filter.found)
    }
}
