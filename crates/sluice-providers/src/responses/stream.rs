//! A stream of OpenAI `chat.completion.chunk` events re-framed as the Responses API's
//! event sequence: `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, for reasoning its summary part
//! (`response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta`/`.done`,
//! `response.reasoning_summary_part.done`), for a message its parts
//! (`response.content_part.added`,
//! `response.output_text.delta`/`.done` or `response.refusal.delta`/`.done`,
//! `response.content_part.done`) or its arguments (`response.function_call_arguments.delta`
//! /`.done`), `response.output_item.done`; last `response.completed`,
//! `response.incomplete` or, on an error midway, `response.failed`. Every event carries its
//! `sequence_number`.

use super::object::{
    assistant_message, item_id, ContentPart, Echo, Failure, OutputItem, Parts, ResponseObject,
    Status, SummaryText,
};
use super::signed::InBlock;
use crate::call_order::{CallDelta, CallOrder, Step};
use crate::chunks::now_secs;
use crate::reframe::Reframe;
use serde::{Deserialize, Serialize};
use sluice_types::Usage;
use std::borrow::Cow;

#[derive(Deserialize)]
struct InChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<InChoice<'a>>,
    #[serde(default, borrow)]
    error: Option<InError<'a>>,
}

#[derive(Deserialize)]
struct InChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<InDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<CallDelta<'a>>>,
    #[serde(default, borrow)]
    thinking_blocks: Option<Vec<InBlock<'a>>>,
}

/// What a chunk carries besides tool calls, written in its turn (held while a call is open).
#[derive(Debug)]
enum Said<'a> {
    Reasoning(Cow<'a, str>),
    Signed(InBlock<'a>),
    Text(Cow<'a, str>),
    Refusal(Cow<'a, str>),
}

impl Said<'_> {
    fn into_owned(self) -> Said<'static> {
        let owned = |t: Cow<'_, str>| Cow::Owned(t.into_owned());
        match self {
            Self::Reasoning(t) => Said::Reasoning(owned(t)),
            Self::Signed(b) => Said::Signed(b.into_owned()),
            Self::Text(t) => Said::Text(owned(t)),
            Self::Refusal(t) => Said::Refusal(owned(t)),
        }
    }
}

#[derive(Deserialize)]
struct InError<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    sequence_number: u64,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize)]
struct ResponseEv<'a> {
    response: ResponseObject<'a>,
}

#[derive(Serialize)]
struct ItemEv<'a> {
    output_index: usize,
    item: &'a OutputItem,
}

#[derive(Serialize)]
struct PartEv<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    part: &'a ContentPart,
}

#[derive(Serialize)]
struct TextEv<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[(); 0]>,
}

#[derive(Serialize)]
struct SummaryPartEv<'a> {
    item_id: &'a str,
    output_index: usize,
    summary_index: usize,
    part: &'a SummaryText,
}

#[derive(Serialize)]
struct SummaryTextEv<'a> {
    item_id: &'a str,
    output_index: usize,
    summary_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct ArgsEv<'a> {
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// Numbers and writes events.
#[derive(Debug, Default)]
struct Writer {
    seq: u64,
}

impl Writer {
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, body: impl Serialize) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        let env = Envelope {
            kind,
            sequence_number: self.seq,
            body,
        };
        // Writing plain structs of strings and numbers into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, &env);
        out.extend_from_slice(b"\n\n");
        self.seq += 1;
    }
}

/// What a completed (or incomplete) stream was, for the response store.
#[derive(Debug)]
pub struct Done {
    /// The chat `assistant` message it was.
    pub assistant: Vec<u8>,
    /// The `response` object its last event carried.
    pub response: Vec<u8>,
}

/// Called with what a completed (or incomplete) stream was.
pub type OnDone = Box<dyn FnOnce(Done) + Send>;

/// Turns a stream of OpenAI chunks into the Responses API's event sequence.
pub struct StreamConverter {
    echo: Echo,
    w: Writer,
    on_done: Option<OnDone>,
    created_at: u64,
    started: bool,
    output: Vec<OutputItem>,
    /// The output index of the open reasoning item.
    reasoning: Option<usize>,
    /// Its signed thinking.
    signed: super::signed::Signed,
    /// The output index of the open message.
    message: Option<usize>,
    /// Function calls: chat tool-call index → output index.
    tools: Vec<(u64, usize)>,
    /// The calls put in order: each one's items and `.done` events before anything else.
    calls: CallOrder<Said<'static>>,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

impl StreamConverter {
    /// A converter for a request that echoes `echo`.
    pub fn new(echo: Echo) -> Self {
        Self {
            echo,
            w: Writer::default(),
            on_done: None,
            created_at: now_secs(),
            started: false,
            output: Vec::new(),
            reasoning: None,
            signed: super::signed::Signed::default(),
            message: None,
            tools: Vec::new(),
            calls: CallOrder::default(),
            finish: None,
            usage: None,
            done: false,
        }
    }

    /// Calls `f` with the answer's `assistant` message and `response` object when the
    /// stream completes (not when it fails).
    pub fn on_done(mut self, f: OnDone) -> Self {
        self.on_done = Some(f);
        self
    }

    /// Writes a `response` snapshot event.
    fn snapshot(
        &mut self,
        out: &mut Vec<u8>,
        kind: &str,
        status: Status,
        error: Option<Failure<'_>>,
    ) {
        let parts = Parts {
            created_at: self.created_at,
            status,
            output: if status == Status::InProgress {
                &[]
            } else {
                &self.output
            },
            usage: self.usage.as_ref(),
            error,
        };
        let response = ResponseObject::new(&self.echo, parts);
        self.w.emit(out, kind, ResponseEv { response });
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.snapshot(out, "response.created", Status::InProgress, None);
        self.snapshot(out, "response.in_progress", Status::InProgress, None);
    }

    /// Opens an output item; returns its index.
    fn open_item(&mut self, out: &mut Vec<u8>, item: OutputItem) -> usize {
        let output_index = self.output.len();
        self.output.push(item);
        let item = &self.output[output_index];
        self.w.emit(
            out,
            "response.output_item.added",
            ItemEv { output_index, item },
        );
        output_index
    }

    /// The open reasoning item's index (one summary part), opening it (and closing what is
    /// open) first if need be.
    fn reasoning_item(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(i) = self.reasoning {
            return i;
        }
        self.close_message(out, "completed");
        let id = item_id(&self.echo.id, "rs", self.output.len());
        let item = OutputItem::reasoning(id, Vec::new(), None, false);
        let i = self.open_item(out, item);
        if let OutputItem::Reasoning { summary, .. } = &mut self.output[i] {
            summary.push(SummaryText::new(String::new()));
        }
        if let OutputItem::Reasoning { id, summary, .. } = &self.output[i] {
            let ev = SummaryPartEv {
                item_id: id,
                output_index: i,
                summary_index: 0,
                part: &summary[0],
            };
            self.w
                .emit(out, "response.reasoning_summary_part.added", ev);
        }
        self.reasoning = Some(i);
        i
    }

    /// Appends a piece of reasoning to the open reasoning item.
    fn on_reasoning(&mut self, out: &mut Vec<u8>, piece: &str) {
        let index = self.reasoning_item(out);
        self.signed.thought(piece);
        if let OutputItem::Reasoning { summary, .. } = &mut self.output[index] {
            if let Some(part) = summary.last_mut() {
                part.text.push_str(piece);
            }
        }
        let ev = SummaryTextEv {
            item_id: self.output[index].id(),
            output_index: index,
            summary_index: 0,
            delta: Some(piece),
            text: None,
        };
        self.w
            .emit(out, "response.reasoning_summary_text.delta", ev);
    }

    /// Closes the open reasoning item, if any: its text and part done, then the item (with
    /// its signed thinking).
    fn close_reasoning(&mut self, out: &mut Vec<u8>) {
        let Some(index) = self.reasoning.take() else {
            return;
        };
        if let OutputItem::Reasoning { id, summary, .. } = &mut self.output[index] {
            let (id, summary) = (std::mem::take(id), std::mem::take(summary));
            let signed = self.signed.take();
            self.output[index] =
                OutputItem::reasoning(id, summary, signed, self.echo.encrypted_reasoning);
        }
        let OutputItem::Reasoning { id, summary, .. } = &self.output[index] else {
            return;
        };
        for (summary_index, part) in summary.iter().enumerate() {
            let ev = SummaryTextEv {
                item_id: id,
                output_index: index,
                summary_index,
                delta: None,
                text: Some(&part.text),
            };
            self.w.emit(out, "response.reasoning_summary_text.done", ev);
            let ev = SummaryPartEv {
                item_id: id,
                output_index: index,
                summary_index,
                part,
            };
            self.w.emit(out, "response.reasoning_summary_part.done", ev);
        }
        let ev = ItemEv {
            output_index: index,
            item: &self.output[index],
        };
        self.w.emit(out, "response.output_item.done", ev);
    }

    /// The open message's index, opening one (and closing what is open) if none is.
    fn message(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(i) = self.message {
            return i;
        }
        self.close_reasoning(out);
        let item = OutputItem::Message {
            id: item_id(&self.echo.id, "msg", self.output.len()),
            status: "in_progress",
            role: "assistant",
            content: Vec::new(),
        };
        let i = self.open_item(out, item);
        self.message = Some(i);
        i
    }

    /// Makes the last part of the message at `index` a text part (or a refusal), closing
    /// the last one and opening another if it is of the other kind.
    fn part(&mut self, out: &mut Vec<u8>, index: usize, refusal: bool) {
        let same = match self.parts(index).last() {
            Some(ContentPart::Refusal { .. }) => refusal,
            Some(ContentPart::OutputText { .. }) => !refusal,
            None => false,
        };
        if same {
            return;
        }
        self.close_part(out, index);
        let part = if refusal {
            ContentPart::Refusal {
                refusal: String::new(),
            }
        } else {
            ContentPart::text(String::new())
        };
        if let Some(parts) = self.parts_mut(index) {
            parts.push(part);
        }
        let content_index = self.parts(index).len().saturating_sub(1);
        if let Some(part) = parts_of(&self.output, index).get(content_index) {
            let item_id = self.output[index].id();
            let ev = PartEv {
                item_id,
                output_index: index,
                content_index,
                part,
            };
            self.w.emit(out, "response.content_part.added", ev);
        }
    }

    /// Appends a piece of text (or of a refusal) to the open message, opening the message
    /// and the part as needed.
    fn on_text(&mut self, out: &mut Vec<u8>, piece: &str, refusal: bool) {
        let index = self.message(out);
        self.part(out, index, refusal);
        let content_index = self.parts(index).len().saturating_sub(1);
        match self.parts_mut(index).and_then(|p| p.last_mut()) {
            Some(ContentPart::OutputText { text, .. }) => text.push_str(piece),
            Some(ContentPart::Refusal { refusal, .. }) => refusal.push_str(piece),
            None => {}
        }
        let kind = if refusal {
            "response.refusal.delta"
        } else {
            "response.output_text.delta"
        };
        let ev = TextEv {
            item_id: self.output[index].id(),
            output_index: index,
            content_index,
            delta: Some(piece),
            text: None,
            refusal: None,
            logprobs: (!refusal).then_some([]),
        };
        self.w.emit(out, kind, ev);
    }

    fn parts(&self, index: usize) -> &[ContentPart] {
        parts_of(&self.output, index)
    }

    fn parts_mut(&mut self, index: usize) -> Option<&mut Vec<ContentPart>> {
        match &mut self.output[index] {
            OutputItem::Message { content, .. } => Some(content),
            OutputItem::FunctionCall { .. } | OutputItem::Reasoning { .. } => None,
        }
    }

    /// Closes the last part of the message at `index`, if any.
    fn close_part(&mut self, out: &mut Vec<u8>, index: usize) {
        let Some(content_index) = self.parts(index).len().checked_sub(1) else {
            return;
        };
        let item_id = self.output[index].id();
        let part = &parts_of(&self.output, index)[content_index];
        let (kind, text, refusal) = match part {
            ContentPart::OutputText { text, .. } => {
                ("response.output_text.done", Some(text.as_str()), None)
            }
            ContentPart::Refusal { refusal } => {
                ("response.refusal.done", None, Some(refusal.as_str()))
            }
        };
        let ev = TextEv {
            item_id,
            output_index: index,
            content_index,
            delta: None,
            text,
            refusal,
            logprobs: text.map(|_| []),
        };
        self.w.emit(out, kind, ev);
        let ev = PartEv {
            item_id,
            output_index: index,
            content_index,
            part,
        };
        self.w.emit(out, "response.content_part.done", ev);
    }

    fn close_message(&mut self, out: &mut Vec<u8>, status: &'static str) {
        let Some(index) = self.message.take() else {
            return;
        };
        self.close_part(out, index);
        self.output[index].set_status(status);
        let ev = ItemEv {
            output_index: index,
            item: &self.output[index],
        };
        self.w.emit(out, "response.output_item.done", ev);
    }

    fn on_tool(&mut self, out: &mut Vec<u8>, call: &CallDelta<'_>) {
        let mut calls = std::mem::take(&mut self.calls);
        calls.on_delta(call.piece(), &mut |step| self.on_call_step(out, step));
        self.calls = calls;
    }

    /// Writes one step of the ordered calls: the item added, a piece of its arguments, its
    /// arguments done and the item done.
    fn on_call_step(&mut self, out: &mut Vec<u8>, step: Step<'_, Said<'_>>) {
        match step {
            Step::Begin { call, id, name } => {
                self.close_reasoning(out);
                self.close_message(out, "completed");
                let item = OutputItem::FunctionCall {
                    id: item_id(&self.echo.id, "fc", self.output.len()),
                    call_id: id.unwrap_or_default().into_owned(),
                    name: name.unwrap_or_default().into_owned(),
                    arguments: String::new(),
                    status: "in_progress",
                };
                let i = self.open_item(out, item);
                self.tools.push((call, i));
            }
            Step::Args { call, piece } => {
                let Some(&(_, index)) = self.tools.iter().find(|(t, _)| *t == call) else {
                    return;
                };
                if let OutputItem::FunctionCall { arguments, .. } = &mut self.output[index] {
                    arguments.push_str(&piece);
                }
                let ev = ArgsEv {
                    item_id: self.output[index].id(),
                    output_index: index,
                    delta: Some(&piece),
                    arguments: None,
                    name: None,
                };
                self.w
                    .emit(out, "response.function_call_arguments.delta", ev);
            }
            Step::End { call } => {
                if let Some(&(_, index)) = self.tools.iter().find(|(t, _)| *t == call) {
                    self.close_call(out, index);
                }
            }
            Step::Other(said) => self.write_said(out, said),
        }
    }

    /// Writes what a chunk said besides calls now, or holds it until the open call ends.
    fn say(&mut self, out: &mut Vec<u8>, said: Said<'_>) {
        if !self.calls.is_open() {
            return self.write_said(out, said);
        }
        let mut calls = std::mem::take(&mut self.calls);
        calls.on_other(said.into_owned(), &mut |step| self.on_call_step(out, step));
        self.calls = calls;
    }

    fn write_said(&mut self, out: &mut Vec<u8>, said: Said<'_>) {
        match said {
            Said::Reasoning(r) => self.on_reasoning(out, &r),
            Said::Signed(b) => {
                self.reasoning_item(out);
                self.signed.block(&b);
            }
            Said::Text(t) => self.on_text(out, &t, false),
            Said::Refusal(r) => self.on_text(out, &r, true),
        }
    }

    /// Ends every call, open or waiting.
    fn close_tools(&mut self, out: &mut Vec<u8>) {
        let mut calls = std::mem::take(&mut self.calls);
        calls.flush(&mut |step| self.on_call_step(out, step));
        self.calls = calls;
    }

    /// A call's arguments done, then its item.
    fn close_call(&mut self, out: &mut Vec<u8>, index: usize) {
        self.output[index].set_status("completed");
        let item = &self.output[index];
        if let OutputItem::FunctionCall {
            id,
            name,
            arguments,
            ..
        } = item
        {
            let ev = ArgsEv {
                item_id: id,
                output_index: index,
                delta: None,
                arguments: Some(arguments),
                name: Some(name),
            };
            self.w
                .emit(out, "response.function_call_arguments.done", ev);
        }
        let ev = ItemEv {
            output_index: index,
            item,
        };
        self.w.emit(out, "response.output_item.done", ev);
    }

    fn fail(&mut self, out: &mut Vec<u8>, err: &InError<'_>) {
        self.start(out);
        let failure = Failure {
            code: err
                .code
                .as_deref()
                .or(err.kind.as_deref())
                .unwrap_or("server_error"),
            message: err.message.as_deref().unwrap_or("upstream error"),
        };
        self.snapshot(out, "response.failed", Status::Failed, Some(failure));
        self.done = true;
    }

    fn on_chunk(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<InChunk<'_>>(data) else {
            return;
        };
        if let Some(err) = &v.error {
            return self.fail(out, err);
        }
        self.start(out);
        if let Some(u) = Usage::from_response(data) {
            self.usage = Some(u);
        }
        let Some(choice) = v.choices.first() else {
            return;
        };
        if let Some(d) = &choice.delta {
            self.on_delta(out, d);
        }
        if let Some(f) = choice.finish_reason.as_deref() {
            self.finish = Some(f.to_owned());
            // The choice is over: so is every call.
            self.close_tools(out);
        }
    }

    /// One chunk's delta: reasoning, its signature, text, a refusal, then tool calls.
    fn on_delta(&mut self, out: &mut Vec<u8>, d: &InDelta<'_>) {
        fn some<'b>(t: &'b Option<Cow<'_, str>>) -> Option<&'b str> {
            t.as_deref().filter(|t| !t.is_empty())
        }
        if let Some(r) = some(&d.reasoning_content) {
            self.say(out, Said::Reasoning(Cow::Borrowed(r)));
        }
        for b in d.thinking_blocks.iter().flatten() {
            self.say(out, Said::Signed(b.borrowed()));
        }
        if let Some(t) = some(&d.content) {
            self.say(out, Said::Text(Cow::Borrowed(t)));
        }
        if let Some(r) = some(&d.refusal) {
            self.say(out, Said::Refusal(Cow::Borrowed(r)));
        }
        for call in d.tool_calls.iter().flatten() {
            self.on_tool(out, call);
        }
    }
}

/// The parts of the message at `index` (none for a function call).
fn parts_of(output: &[OutputItem], index: usize) -> &[ContentPart] {
    match &output[index] {
        OutputItem::Message { content, .. } => content,
        OutputItem::FunctionCall { .. } | OutputItem::Reasoning { .. } => &[],
    }
}

impl Reframe for StreamConverter {
    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if data == b"[DONE]" {
            return self.finish_stream(out);
        }
        self.on_chunk(data, out);
    }

    fn is_done(&self) -> bool {
        self.done
    }

    /// Closes the open items, then `response.completed` or `response.incomplete` with the
    /// whole response and its usage.
    fn finish_stream(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        let status = Status::of_finish(self.finish.as_deref());
        // The calls first: what was held behind them may open a message.
        self.close_tools(out);
        self.close_reasoning(out);
        self.close_message(out, status.item_status());
        let kind = match status {
            Status::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        self.snapshot(out, kind, status, None);
        self.done = true;
        if let Some(f) = self.on_done.take() {
            let parts = Parts {
                created_at: self.created_at,
                status,
                output: &self.output,
                usage: self.usage.as_ref(),
                error: None,
            };
            let response = ResponseObject::new(&self.echo, parts);
            f(Done {
                assistant: assistant_message(&self.output),
                response: serde_json::to_vec(&response).unwrap_or_default(),
            });
        }
    }
}
