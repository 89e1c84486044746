//! Answer guardrails on a streamed chat answer: each choice's content deltas (a legacy
//! text completion's: its `text` pieces) go through a hold-back window of its own
//! ([`sluice_guard::stream::Holdback`]), so a value split across chunks is redacted (or
//! blocks the stream) before any of it leaves, and placeholders of the request's redaction
//! are put back whole. Each tool call's argument pieces go through a hold-back of their
//! own the same way; a call's held-back rest is released before anything that follows it
//! (another call, content, the choice's end). Events without content (the role, usage,
//! `[DONE]`) pass as they are, after what is held back is released. A block ends the stream
//! with an error event (`guardrail_blocked`) and cancels the upstream. With no detector and
//! nothing to put back, content is not held back at all.
//!
//! With a `validate_json` guardrail every choice's content and tool calls are gathered
//! ([`super::guard_gather`]) and checked against the request's schemas at `[DONE]`: a
//! failure refused ends the stream with an error event (`output_validation_failed`)
//! instead of `[DONE]`; a failure passed is counted only (the headers are gone).
//!
//! With answer webhooks, what leaves is also assembled into a whole answer and sent to
//! them once the stream has ended cleanly ([`super::guard_late`]).

use super::ending::{Ending, Tracked};
use super::guard_gather::{Gathered, Pieces};
use super::guard_json::Validation;
use super::guard_late::Late;
use bytes::Bytes;
use http_body::{Body, Frame};
use serde_json::Value;
use sluice_guard::stream::Holdback;
use sluice_guard::{Finding, Guardrail};
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
    /// The webhooks get the usage of the stream's [`Tracked::ending`], not of its events.
    usage_at_ending: bool,
}

impl<B> GuardedStream<B> {
    /// Guards `inner`'s content.
    pub fn new(inner: B, filter: EventFilter) -> Self {
        Self {
            inner,
            filter,
            ended: false,
            usage_at_ending: false,
        }
    }

    /// The stream's answer goes to the webhooks with the usage its ending says.
    pub fn usage_at_ending(mut self) -> Self {
        self.usage_at_ending = true;
        self
    }

    /// The next event out, as the webhooks see it too.
    fn next_out(&mut self) -> Option<Bytes> {
        let b = self.filter.out.pop_front()?;
        if let Some(late) = &mut self.filter.late {
            late.event(&b);
        }
        Some(b)
    }
}

/// One choice's held-back text.
struct Held {
    index: u64,
    holdback: Holdback,
    /// Its last content entry, as the shape of one that releases held-back text.
    template: Option<Value>,
    /// Its tool calls' held-back arguments, by call index, in the order they came.
    calls: Vec<(u64, Holdback)>,
}

/// Chat chunk events in, the same events out with each choice's content held back and
/// guarded.
pub struct EventFilter {
    scanner: SseScanner,
    /// The answer guardrails' detectors, and the placeholders to put back: what each
    /// choice's hold-back is made of (neither: content passes as it comes).
    guards: Vec<Arc<Guardrail>>,
    restore: Vec<(String, String)>,
    held: Vec<Held>,
    pieces: Pieces,
    /// A content chunk without its choices, as the shell of one that releases text.
    shell: Option<Value>,
    out: VecDeque<Bytes>,
    blocked: bool,
    /// The status a blocked stream ends with (400 a guardrail's block, 502 a schema's).
    status: u16,
    /// The schema check and what it gathered of the choices (`None` once checked).
    validation: Option<(Validation, Gathered)>,
    /// What the request's guardrails found, then what this stream's did.
    found: Vec<Finding>,
    /// The answer webhooks, sent what leaves once the stream has ended cleanly.
    late: Option<Late>,
    state: Arc<crate::state::AppState>,
}

impl EventFilter {
    /// A filter guarding with the detectors of `guards`, putting `restore`'s
    /// placeholders back.
    pub fn new(
        (guards, restore): (Vec<Arc<Guardrail>>, Vec<(String, String)>),
        state: Arc<crate::state::AppState>,
        pieces: Pieces,
    ) -> Self {
        Self {
            scanner: SseScanner::new(4 << 20),
            guards,
            restore,
            held: Vec::new(),
            pieces,
            shell: None,
            out: VecDeque::new(),
            blocked: false,
            status: 400,
            validation: None,
            found: Vec::new(),
            late: None,
            state,
        }
    }

    /// Sends the answer to the answer webhooks when the stream has ended cleanly.
    pub fn late(mut self, late: Option<Late>) -> Self {
        self.late = late;
        self
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

    /// Checks every choice's content and tool calls against the request's schemas when
    /// the stream ends.
    pub fn validating(mut self, validation: Option<Validation>) -> Self {
        self.validation = validation.map(|v| (v, Gathered::default()));
        self
    }

    /// The schema check, once: `false` when it refuses the stream (an error event is out).
    fn validated(&mut self) -> bool {
        let Some((v, gathered)) = self.validation.take() else {
            return true;
        };
        let Err(failure) = v.check_gathered(&gathered) else {
            return true;
        };
        let action = if v.pass {
            sluice_guard::Action::Pass
        } else {
            sluice_guard::Action::Error
        };
        self.count(vec![v.finding(failure.check, action)]);
        if v.pass {
            return true;
        }
        self.fail(&v.error(failure.reason));
        self.status = 502;
        false
    }

    /// Whole events (a cached answer replayed) through the filter at once.
    pub fn whole(mut self, events: &Bytes) -> Bytes {
        self.push(events.clone());
        self.end();
        if let Some(mut late) = self.late.take() {
            self.out.iter().for_each(|b| late.event(b));
            if !self.blocked {
                late.send(None);
            }
        }
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
        let mut findings = Vec::new();
        for h in &mut self.held {
            findings.extend(h.holdback.take_findings());
            for (_, call) in &mut h.calls {
                findings.extend(call.take_findings());
            }
        }
        self.count(findings);
    }

    /// Whether content passes as it comes: nothing to detect or put back.
    fn inert(&self) -> bool {
        self.guards.is_empty() && self.restore.is_empty()
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
        let Ok(chunk) = serde_json::from_slice::<Value>(&data) else {
            self.out.push_back(Bytes::copy_from_slice(raw));
            return;
        };
        if let Some((_, gathered)) = &mut self.validation {
            gathered.take(&chunk, self.pieces);
        }
        if self.inert() {
            self.out.push_back(Bytes::copy_from_slice(raw));
            return;
        }
        self.hold(chunk);
    }

    /// The hold-back of choice `index`.
    fn held(&mut self, index: u64) -> &mut Held {
        let at = match self.held.iter().position(|h| h.index == index) {
            Some(at) => at,
            None => {
                self.held.push(Held {
                    index,
                    holdback: Holdback::new(self.guards.clone(), self.restore.clone()),
                    template: None,
                    calls: Vec::new(),
                });
                self.held.len() - 1
            }
        };
        &mut self.held[at]
    }

    /// A chunk through its choices' hold-backs: each content piece replaced by what may
    /// be released; a chunk that is left with nothing to say is dropped.
    fn hold(&mut self, mut chunk: Value) {
        let pieces = self.pieces;
        let mut keep = !chunk["usage"].is_null();
        let mut before = Vec::new();
        let entries = match chunk["choices"].as_array_mut() {
            Some(entries) if !entries.is_empty() => std::mem::take(entries),
            _ => return self.push_chunk(&chunk),
        };
        let mut kept = Vec::with_capacity(entries.len());
        for (position, mut entry) in entries.into_iter().enumerate() {
            let index = entry["index"].as_u64().unwrap_or(position as u64);
            let (holder, key) = pieces.holder_of(&entry);
            let content = holder[key].as_str().map(str::to_string);
            let has_content = holder.get(key).is_some();
            let finishes = !entry["finish_reason"].is_null();
            let says_more = content.as_deref().is_some_and(|t| !t.is_empty());
            let has_calls = entry["delta"]["tool_calls"]
                .as_array()
                .is_some_and(|c| !c.is_empty());
            if has_calls && pieces == Pieces::Chat {
                // Text held back before a call goes out before it.
                match self.held(index).holdback.finish() {
                    Ok(text) if !text.is_empty() => before.push((index, None, text)),
                    Ok(_) => {}
                    Err(f) => return self.block(f),
                }
            }
            let calls = match pieces {
                Pieces::Chat => self.hold_calls(index, &mut entry, says_more || finishes),
                Pieces::Text => Ok(Vec::new()),
            };
            match calls {
                Ok(rests) => before.extend(rests.into_iter().map(|(c, t)| (index, Some(c), t))),
                Err(f) => return self.block(f),
            }
            let held = self.held(index);
            let mut released = match content {
                Some(text) => {
                    held.template = Some(entry.clone());
                    held.holdback.push(&text)
                }
                None => Ok(String::new()),
            };
            if finishes {
                released = released.and_then(|r| Ok(r + &held.holdback.finish()?));
            }
            let released = match released {
                Ok(r) => r,
                Err(f) => return self.block(f),
            };
            if has_content {
                keep |= !released.is_empty() || finishes || carries_more(&entry);
                pieces.set(&mut entry, released);
            } else {
                keep = true;
                if !released.is_empty() {
                    before.push((index, None, released));
                }
            }
            kept.push(entry);
        }
        if self.shell.is_none() {
            self.shell = Some(chunk.clone());
        }
        for (index, call, text) in before {
            match call {
                Some(call) => self.push_arguments(index, call, text),
                None => self.push_content(index, text),
            }
        }
        if keep {
            chunk["choices"] = Value::Array(kept);
            self.push_chunk(&chunk);
        }
    }

    /// Releases everything held back, each choice's as a content chunk of its own and each
    /// call's as an arguments chunk of its own.
    fn release_rest(&mut self) {
        for at in 0..self.held.len() {
            let index = self.held[at].index;
            let mut found = Vec::new();
            let released = release_calls(&mut self.held[at].calls, None, &mut found);
            self.count(found);
            let rests = match released {
                Ok(rests) => rests,
                Err(f) => return self.block(f),
            };
            for (call, text) in rests {
                self.push_arguments(index, call, text);
            }
            match self.held[at].holdback.finish() {
                Ok(rest) if !rest.is_empty() => self.push_content(index, rest),
                Ok(_) => {}
                Err(f) => return self.block(f),
            }
        }
    }

    /// Choice `index`'s tool-call pieces in `entry` through their calls' hold-backs (each
    /// piece replaced by what may be released); returns the held-back rests of the calls
    /// that end here, to be released before `entry`: the other calls when one comes, and
    /// every call when `ends_calls` (content follows, or the choice finishes).
    fn hold_calls(
        &mut self,
        index: u64,
        entry: &mut Value,
        ends_calls: bool,
    ) -> Result<Vec<(u64, String)>, Finding> {
        let mut found = Vec::new();
        let held = hold_calls_of(self.held(index), entry, ends_calls, &mut found);
        self.count(found);
        held
    }

    /// A chunk of choice `index` with `text` as a piece of call `call`'s arguments.
    fn push_arguments(&mut self, index: u64, call: u64, text: String) {
        let Some(mut chunk) = self.shell.clone() else {
            return;
        };
        let entry = serde_json::json!({
            "index": index,
            "delta": {"tool_calls": [{"index": call, "function": {"arguments": text}}]},
            "finish_reason": null,
        });
        chunk["choices"] = Value::Array(vec![entry]);
        self.push_chunk(&chunk);
    }

    /// A chunk of choice `index` with `text` as its content.
    fn push_content(&mut self, index: u64, text: String) {
        let template = self
            .held
            .iter()
            .find(|h| h.index == index)
            .and_then(|h| h.template.clone());
        let (Some(mut chunk), Some(mut entry)) = (self.shell.clone(), template) else {
            return;
        };
        match self.pieces {
            Pieces::Chat => entry["delta"] = serde_json::json!({ "content": text }),
            Pieces::Text => entry["text"] = Value::String(text),
        }
        entry["finish_reason"] = Value::Null;
        chunk["choices"] = Value::Array(vec![entry]);
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

/// [`EventFilter::hold_calls`] on `held`, the choice's hold-backs; what the finished
/// calls' hold-backs found is added to `found`.
///
/// A call ends when another one comes: its held-back rest goes with its own piece when it
/// has one earlier in this entry (its id and name, and what was released of it, are there),
/// else out before this entry (its pieces came in earlier chunks).
fn hold_calls_of(
    held: &mut Held,
    entry: &mut Value,
    ends_calls: bool,
    found: &mut Vec<Finding>,
) -> Result<Vec<(u64, String)>, Finding> {
    let mut rests = Vec::new();
    let empty = &mut Vec::new();
    let calls = entry["delta"]["tool_calls"].as_array_mut().unwrap_or(empty);
    // The calls of this entry, by position: (call index, position).
    let mut here: Vec<(u64, usize)> = Vec::new();
    for position in 0..calls.len() {
        let at = calls[position]["index"].as_u64().unwrap_or(position as u64);
        for (call, rest) in release_calls(&mut held.calls, Some(at), found)? {
            match here.iter().find(|(c, _)| *c == call) {
                Some(&(_, earlier)) => append_arguments(&mut calls[earlier], &rest),
                None => rests.push((call, rest)),
            }
        }
        here.push((at, position));
        let Some(piece) = calls[position]["function"]["arguments"].as_str() else {
            continue;
        };
        let i = match held.calls.iter().position(|(c, _)| *c == at) {
            Some(i) => i,
            None => {
                let fresh = held.holdback.sibling();
                held.calls.push((at, fresh));
                held.calls.len() - 1
            }
        };
        let pushed = held.calls[i].1.push(piece);
        found.extend(held.calls[i].1.take_findings());
        calls[position]["function"]["arguments"] = Value::String(pushed?);
    }
    if !ends_calls {
        return Ok(rests);
    }
    // The calls end here: each rest goes with the call's last piece in this entry, or
    // before the entry.
    for (call, rest) in release_calls(&mut held.calls, None, found)? {
        match here.iter().rev().find(|(c, _)| *c == call) {
            Some(&(_, last)) => append_arguments(&mut calls[last], &rest),
            None => rests.push((call, rest)),
        }
    }
    Ok(rests)
}

/// Appends `rest` to a tool-call entry's `function.arguments`.
fn append_arguments(call: &mut Value, rest: &str) {
    let piece = call["function"]["arguments"].as_str().unwrap_or_default();
    call["function"]["arguments"] = Value::String(format!("{piece}{rest}"));
}

/// The held-back rests of `calls` other than `except` (all of them for `None`), in the
/// order the calls came; those calls are done, and what they found (a block's findings
/// too) is added to `found`.
fn release_calls(
    calls: &mut Vec<(u64, Holdback)>,
    except: Option<u64>,
    found: &mut Vec<Finding>,
) -> Result<Vec<(u64, String)>, Finding> {
    let mut rests = Vec::new();
    let mut kept = Vec::new();
    let mut blocked = None;
    for (call, mut holdback) in std::mem::take(calls) {
        if Some(call) == except || blocked.is_some() {
            kept.push((call, holdback));
            continue;
        }
        let rest = holdback.finish();
        found.extend(holdback.take_findings());
        match rest {
            Ok(rest) if !rest.is_empty() => rests.push((call, rest)),
            Ok(_) => {}
            Err(f) => blocked = Some(f),
        }
    }
    *calls = kept;
    match blocked {
        Some(f) => Err(f),
        None => Ok(rests),
    }
}

/// Whether a choice's entry says more than its content: a role, tool calls.
fn carries_more(entry: &Value) -> bool {
    let delta = &entry["delta"];
    delta.get("role").is_some() || delta.get("tool_calls").is_some()
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
            if let Some(b) = this.next_out() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended && !this.filter.blocked && !this.usage_at_ending {
                if let Some(late) = this.filter.late.take() {
                    late.send(None);
                }
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
        if self.ended && !blocked && ending.status == 200 {
            if let Some(late) = self.filter.late.take() {
                late.send(Some(&ending.usage));
            }
        }
        ending
    }

    fn guardrails(&self) -> Option<String> {
        sluice_guard::summarize(&self.filter.found)
    }
}
