//! How an upstream's answer is read back into OpenAI's format: whole bodies passed through
//! or translated, and streams decoded event by event (or line by line, for Ollama's NDJSON)
//! as they arrive.
//!
//! A [`StreamReader`] splits each read into whole events (see `sluice_types::sse`), notes
//! usage, `finish_reason` and `[DONE]` on the way, and yields what the client is sent: for
//! an OpenAI-format upstream, slices of the upstream's own buffer (less the usage chunk
//! sluice asked for on the client's behalf); for the others, the OpenAI chunks the
//! translation writes.

use crate::anthropic::{self, StreamStep, StreamTranslator as AnthropicStream};
use crate::gemini::{self, StreamTranslator as GeminiStream};
use crate::ollama::{self, LineStep, LineTranslator};
use bytes::Bytes;
use sluice_types::sse::{after_key, event_data, Keep, SseScanner};
use sluice_types::Usage;

/// How one upstream answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// OpenAI's format: passed through; for a stream, hide the usage chunk sluice asked for.
    OpenAi {
        /// Drop the usage-only chunk (the client did not ask for it).
        strip_usage: bool,
    },
    /// OpenAI's legacy text completions (`text_completion` objects): passed through as
    /// [`Self::OpenAi`] is; a stream's pieces are `choices[].text`.
    TextCompletion {
        /// Drop the usage-only event (the client did not ask for it).
        strip_usage: bool,
    },
    /// Anthropic's Messages API: translated.
    Anthropic {
        /// The client asked for a usage chunk.
        include_usage: bool,
    },
    /// Ollama's native chat: translated (NDJSON streams).
    Ollama {
        /// The client asked for a usage chunk.
        include_usage: bool,
    },
    /// Ollama's native embeddings: translated.
    OllamaEmbed,
    /// Gemini's `generateContent`: translated (SSE streams without an end marker).
    Gemini {
        /// The client asked for a usage chunk.
        include_usage: bool,
    },
    /// Gemini's `batchEmbedContents`: translated; Gemini counts no tokens for them.
    GeminiEmbed {
        /// Tokens estimated from the request, reported as usage.
        estimated_tokens: u64,
    },
    /// A media endpoint's answer in OpenAI's format (a transcript in any
    /// `response_format`, images, a ranking, a classification): passed through; usage read
    /// from its `usage`, `duration` and (for images) `data`. Streams are OpenAI's typed
    /// events, finished by their `*.done` or `*.completed` event.
    Media {
        /// The answer's `data` holds images, counted.
        images: bool,
    },
    /// Audio bytes (text to speech): piped to the client as they arrive, never buffered
    /// whole.
    Audio,
    /// A Responses API answer from a native upstream: passed through; usage read from the
    /// `response` object (whole) or the event that ends the stream.
    Responses,
}

impl Reader {
    /// Whether the answer is passed through in the upstream's own format (its content type
    /// kept).
    pub fn passes_through(self) -> bool {
        matches!(
            self,
            Self::OpenAi { .. }
                | Self::TextCompletion { .. }
                | Self::Media { .. }
                | Self::Audio
                | Self::Responses
        )
    }

    /// Whether the answer is raw bytes to pipe through as they arrive, whatever the
    /// client's `stream`.
    pub fn pipes(self) -> bool {
        matches!(self, Self::Audio)
    }

    /// Whether a streamed answer comes as newline-delimited JSON rather than SSE (so the
    /// response's content type does not say it streams).
    pub fn streams_lines(self) -> bool {
        matches!(self, Self::Ollama { .. })
    }

    /// A whole answer in OpenAI's format, and its usage when the answer reports one.
    /// `model` is what the client asked for (translated answers name it). `Err` says why
    /// the upstream's body could not be read.
    pub fn whole(self, body: Bytes, model: &str) -> Result<(Bytes, Option<Usage>), String> {
        let translated = match self {
            Self::OpenAi { .. } | Self::TextCompletion { .. } | Self::Responses => {
                let usage = Usage::from_response(&body);
                return Ok((body, usage));
            }
            Self::Media { images } => {
                let usage = Usage::from_media_response(&body, images);
                return Ok((body, usage));
            }
            Self::Audio => return Ok((body, None)),
            Self::Anthropic { .. } => anthropic::from_response(&body, model),
            Self::Ollama { .. } => ollama::from_chat_response(&body, model),
            Self::Gemini { .. } => gemini::from_response(&body, model),
            Self::GeminiEmbed { estimated_tokens } => {
                gemini::from_embed_response(&body, model, estimated_tokens)
            }
            Self::OllamaEmbed => ollama::from_embed_response(&body, model),
        };
        translated.map(|(body, usage)| (Bytes::from(body), Some(usage)))
    }

    /// A reader for the answer as a stream, with events of at most `max_event` bytes.
    pub fn stream(self, model: &str, max_event: usize) -> StreamReader {
        let decoder = match self {
            Self::OpenAi { strip_usage } => Decoder::Passthrough {
                strip_usage,
                events: Events::Chat,
            },
            Self::TextCompletion { strip_usage } => Decoder::Passthrough {
                strip_usage,
                events: Events::Text,
            },
            Self::Anthropic { include_usage } => {
                Decoder::Anthropic(AnthropicStream::new(model, include_usage))
            }
            Self::Ollama { include_usage } => {
                Decoder::Ollama(LineTranslator::new(model, include_usage))
            }
            Self::Gemini { include_usage } => {
                Decoder::Gemini(GeminiStream::new(model, include_usage))
            }
            // Embeddings do not stream: read whatever comes as OpenAI's format.
            Self::OllamaEmbed | Self::GeminiEmbed { .. } => Decoder::Passthrough {
                strip_usage: false,
                events: Events::Chat,
            },
            Self::Media { .. } | Self::Audio => Decoder::Passthrough {
                strip_usage: false,
                events: Events::Typed,
            },
            Self::Responses => Decoder::Passthrough {
                strip_usage: false,
                events: Events::Responses,
            },
        };
        let scanner = match decoder {
            Decoder::Ollama(_) => SseScanner::lines(max_event),
            _ => SseScanner::new(max_event),
        };
        StreamReader {
            scanner,
            decoder,
            seen: Seen::default(),
        }
    }
}

/// Why a stream cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFault {
    /// An event over the size limit (the limit, in bytes).
    TooLarge(usize),
    /// The upstream reported an error in the stream.
    Upstream(String),
    /// The upstream closed the stream before it finished.
    Cut,
    /// The upstream ended the stream with a failure event of its own format, which the
    /// client got (a native Responses stream's `response.failed`): a failure, with nothing
    /// more to send.
    Reported(String),
}

/// The events of a stream passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Events {
    /// Chat completion chunks, finished by `[DONE]` (or a `finish_reason`).
    Chat,
    /// Legacy text completion objects, finished as chat's are; their pieces are `text`.
    Text,
    /// OpenAI's typed events (media endpoints), finished by a `*.done` event.
    Typed,
    /// The Responses API's events, finished by `response.completed`,
    /// `response.incomplete`, `response.failed` or `error`.
    Responses,
}

/// Turns a non-OpenAI stream into OpenAI chunks, or watches an OpenAI one pass.
enum Decoder {
    Passthrough { strip_usage: bool, events: Events },
    Anthropic(AnthropicStream),
    Ollama(LineTranslator),
    Gemini(GeminiStream),
}

impl Decoder {
    /// Feeds one event (or line) to a translation; appends what it yields. `Ok(true)` when
    /// the stream is finished.
    fn feed(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        match self {
            Self::Passthrough { .. } => Ok(false),
            Self::Anthropic(t) => match event_data(raw) {
                None => Ok(false),
                Some(data) => match t.on_event(&data, out) {
                    StreamStep::Continue => Ok(false),
                    StreamStep::Done => Ok(true),
                    StreamStep::Error(m) => Err(m),
                },
            },
            Self::Ollama(t) => match t.on_line(raw, out) {
                LineStep::Continue => Ok(false),
                LineStep::Done => Ok(true),
                LineStep::Error(m) => Err(m),
            },
            Self::Gemini(t) => match event_data(raw) {
                None => Ok(false),
                Some(data) => t.on_event(&data, out).map(|()| false),
            },
        }
    }

    /// The upstream ended: whether that finishes the stream (appending what closes it).
    fn end(&mut self, out: &mut Vec<u8>) -> bool {
        match self {
            Self::Gemini(t) => t.end(out),
            _ => false,
        }
    }

    /// What a translation has counted so far.
    fn usage(&self) -> Option<Usage> {
        match self {
            Self::Passthrough { .. } => None,
            Self::Anthropic(t) => Some(t.usage()),
            Self::Ollama(t) => Some(t.usage()),
            Self::Gemini(t) => Some(t.usage()),
        }
    }

    fn translates(&self) -> bool {
        !matches!(self, Self::Passthrough { .. })
    }
}

/// What has passed of an OpenAI-format stream.
#[derive(Debug, Default)]
struct Seen {
    done: bool,
    finish: bool,
    usage: Option<Usage>,
    /// Events carrying content: the basis of an estimate when the upstream sends no usage
    /// (OpenAI-compatible servers stream about one token per event).
    content_events: u64,
    /// The message of an error event the upstream sent in the stream (`data: {"error":
    /// {...}}`, as OpenAI and vLLM report a failure midway): the stream ends there.
    upstream_error: Option<String>,
    /// The message of a failure event passed on to the client ([`StreamFault::Reported`]).
    reported_failure: Option<String>,
}

impl Seen {
    fn observe(&mut self, event: &[u8], strip_usage: bool, events: Events) -> Keep {
        let Some(data) = event_data(event) else {
            return Keep::Yes;
        };
        if events == Events::Responses {
            return self.observe_responses(&data);
        }
        let typed = events == Events::Typed;
        if data.as_ref() == b"[DONE]" {
            self.done = true;
            return Keep::Yes;
        }
        if self.upstream_error.is_some() {
            return Keep::Drop;
        }
        // An error event is an object whose first key is `error` (OpenAI's and vLLM's
        // shape); a look at its first bytes keeps content events from paying for a scan.
        if data.trim_ascii_start().starts_with(b"{\"error\"") {
            // The relay ends the stream with its own error event, which names this one.
            self.upstream_error = Some(error_message(&data));
            return Keep::Drop;
        }
        // The typed events of the media endpoints end with `transcript.text.done`,
        // `speech.audio.done`, `image_generation.completed` and the like.
        if let Some(kind) = after_key(&data, b"\"type\"").filter(|_| typed) {
            let kind = kind
                .split(|&b| b == b',' || b == b'}')
                .next()
                .unwrap_or_default();
            let kind = kind.trim_ascii_end();
            if kind.ends_with(b".done\"") || kind.ends_with(b".completed\"") {
                self.done = true;
            }
        }
        if after_key(&data, b"\"usage\"").is_some_and(|v| !v.starts_with(b"null")) {
            if let Some(u) = Usage::from_response(&data) {
                self.usage = Some(u);
                let usage_only =
                    after_key(&data, b"\"choices\"").is_some_and(|v| v.starts_with(b"[]"));
                if strip_usage && usage_only {
                    return Keep::Drop;
                }
            }
        }
        let piece: &[u8] = match events {
            Events::Text => b"\"text\"",
            _ => b"\"content\"",
        };
        if after_key(&data, piece).is_some_and(|v| v.starts_with(b"\"") && !v.starts_with(b"\"\""))
        {
            self.content_events += 1;
        }
        if !self.finish
            && after_key(&data, b"\"finish_reason\"").is_some_and(|v| v.starts_with(b"\""))
        {
            self.finish = true;
        }
        Keep::Yes
    }
}

/// The `error.message` of an OpenAI-shaped error event (the whole event when it has none).
fn error_message(data: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Event {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        message: Option<String>,
    }
    match serde_json::from_slice::<Event>(data) {
        Ok(Event {
            error: Detail { message: Some(m) },
        }) => m,
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

impl Seen {
    /// One event of a native Responses stream. Its `error` event ends it as a fault: the
    /// relay ends the stream with its own error event, which names this one's message (and
    /// is written back in the Responses API's shape).
    fn observe_responses(&mut self, data: &[u8]) -> Keep {
        let Some(kind) = crate::responses::native::head(data).kind else {
            return Keep::Yes;
        };
        if kind == "error" {
            self.upstream_error = Some(crate::responses::native::error_message(data));
            return Keep::Drop;
        }
        if kind == "response.output_text.delta" || kind == "response.function_call_arguments.delta"
        {
            self.content_events += 1;
        }
        if kind == "response.failed" {
            self.reported_failure = Some(crate::responses::native::failure_message(data));
        }
        if crate::responses::native::ends_stream(kind) {
            self.done = true;
            if let Some(u) = crate::responses::native::event_usage(data) {
                self.usage = Some(u);
            }
        }
        Keep::Yes
    }
}

/// Reads one streamed answer. See the module docs.
pub struct StreamReader {
    scanner: SseScanner,
    decoder: Decoder,
    seen: Seen,
}

impl StreamReader {
    /// Scans one read from the upstream: what to send the client now (`None`: nothing yet),
    /// and the fault that ends the stream, if one came (after what is sent).
    pub fn push(&mut self, data: Bytes) -> (Option<Bytes>, Option<StreamFault>) {
        let Self {
            scanner,
            decoder,
            seen,
        } = self;
        if let Decoder::Passthrough {
            strip_usage,
            events,
        } = *decoder
        {
            let pushed = scanner.push(data, |ev| seen.observe(ev, strip_usage, events));
            let fault = seen
                .upstream_error
                .take()
                .map(StreamFault::Upstream)
                .or_else(|| seen.reported_failure.take().map(StreamFault::Reported));
            return match pushed {
                Ok(out) if out.is_empty() => (None, fault),
                Ok(out) => (Some(out), fault),
                Err(too_large) => (None, Some(StreamFault::TooLarge(too_large.0))),
            };
        }
        let mut out = Vec::new();
        let mut upstream_error = None;
        let pushed = scanner.push(data, |ev| {
            match decoder.feed(ev, &mut out) {
                Ok(done) => seen.done |= done,
                Err(m) => upstream_error = Some(m),
            }
            Keep::Drop
        });
        seen.usage = decoder.usage();
        let fault = match (pushed, upstream_error) {
            (Err(too_large), _) => Some(StreamFault::TooLarge(too_large.0)),
            (Ok(_), Some(m)) => Some(StreamFault::Upstream(m)),
            (Ok(_), None) => None,
        };
        ((!out.is_empty()).then(|| Bytes::from(out)), fault)
    }

    /// The upstream closed the stream: the last bytes to send, or [`StreamFault::Cut`] when
    /// the stream had not finished.
    pub fn end(&mut self) -> Result<Option<Bytes>, StreamFault> {
        let tail = self.scanner.finish();
        let seen = &mut self.seen;
        if self.decoder.translates() {
            let mut out = Vec::new();
            if !tail.is_empty() {
                // An unterminated last record (NDJSON without a final newline) still counts.
                if let Ok(done) = self.decoder.feed(&tail, &mut out) {
                    seen.done |= done;
                    seen.usage = self.decoder.usage();
                }
            }
            // Streams without an end marker (Gemini's) finish when the upstream closes.
            if !seen.done && self.decoder.end(&mut out) {
                seen.done = true;
                seen.usage = self.decoder.usage();
            }
            return if seen.done {
                Ok((!out.is_empty()).then(|| Bytes::from(out)))
            } else {
                Err(StreamFault::Cut)
            };
        }
        if seen.done {
            Ok((!tail.is_empty()).then_some(tail))
        } else if seen.finish {
            // Finished but without the `[DONE]` marker some servers omit: complete it.
            let mut out = tail.to_vec();
            out.extend_from_slice(b"data: [DONE]\n\n");
            Ok(Some(Bytes::from(out)))
        } else {
            Err(StreamFault::Cut)
        }
    }

    /// The usage the upstream reported (or a translation counted), if any.
    pub fn reported_usage(&self) -> Option<Usage> {
        self.seen.usage
    }

    /// The usage, else an estimate from `prompt_tokens` and the content events seen.
    pub fn usage_or_estimate(&self, prompt_tokens: u64) -> Usage {
        self.seen.usage.unwrap_or(Usage {
            prompt_tokens,
            completion_tokens: self.seen.content_events,
            ..Usage::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &mut StreamReader, parts: &[&'static [u8]]) -> (Vec<u8>, Option<StreamFault>) {
        let mut out = Vec::new();
        for p in parts {
            let (sent, fault) = r.push(Bytes::from_static(p));
            out.extend_from_slice(&sent.unwrap_or_default());
            if fault.is_some() {
                return (out, fault);
            }
        }
        match r.end() {
            Ok(tail) => out.extend_from_slice(&tail.unwrap_or_default()),
            Err(f) => return (out, Some(f)),
        }
        (out, None)
    }

    #[test]
    fn openai_streams_pass_through_and_hide_the_asked_for_usage() {
        let mut r = Reader::OpenAi { strip_usage: true }.stream("m", 1 << 16);
        let (out, fault) = all(
            &mut r,
            &[
                b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
                b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
            ],
        );
        assert_eq!(fault, None);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("\"hi\"") && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
        assert!(!text.contains("usage"), "{text}");
        assert_eq!(r.reported_usage().map(|u| u.prompt_tokens), Some(3));
    }

    #[test]
    fn a_finished_stream_without_done_is_completed_and_an_unfinished_one_is_cut() {
        let mut r = Reader::OpenAi { strip_usage: false }.stream("m", 1 << 16);
        let (out, fault) = all(
            &mut r,
            &[b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"],
        );
        assert_eq!(fault, None);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let mut r = Reader::OpenAi { strip_usage: false }.stream("m", 1 << 16);
        let (_, fault) = all(
            &mut r,
            &[b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"],
        );
        assert_eq!(fault, Some(StreamFault::Cut));
        assert_eq!(
            r.usage_or_estimate(7).completion_tokens,
            1,
            "one content event"
        );
    }

    #[test]
    fn an_error_event_midway_is_a_fault_not_passed_on() {
        let mut r = Reader::OpenAi { strip_usage: false }.stream("m", 1 << 16);
        let (out, fault) = all(
            &mut r,
            &[
                b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
                b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
            ],
        );
        assert_eq!(fault, Some(StreamFault::Upstream("boom".into())));
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("\"hi\"") && !text.contains("boom"), "{text}");
    }

    #[test]
    fn native_responses_streams_finish_on_their_last_event_and_fault_on_an_error_event() {
        let created = b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"r\"}}\n\n";
        let delta = b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hi\"}\n\n";
        let done = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n";
        let mut r = Reader::Responses.stream("m", 1 << 16);
        let (out, fault) = all(&mut r, &[created, delta, done]);
        assert_eq!(fault, None);
        assert_eq!(
            out.len(),
            created.len() + delta.len() + done.len(),
            "as it came"
        );
        assert_eq!(r.reported_usage().map(|u| u.prompt_tokens), Some(5));
        let mut r = Reader::Responses.stream("m", 1 << 16);
        let (_, fault) = all(&mut r, &[created, delta]);
        assert_eq!(fault, Some(StreamFault::Cut));
        let failed = b"event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":2,\"response\":{\"id\":\"r\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"model crashed\"}}}\n\n";
        let mut r = Reader::Responses.stream("m", 1 << 16);
        let (out, fault) = all(&mut r, &[created, failed]);
        assert_eq!(fault, Some(StreamFault::Reported("model crashed".into())));
        assert_eq!(
            out.len(),
            created.len() + failed.len(),
            "the failure event passes on"
        );
        let error = b"event: error\ndata: {\"type\":\"error\",\"sequence_number\":2,\"code\":\"server_error\",\"message\":\"overloaded\",\"param\":null}\n\n";
        let mut r = Reader::Responses.stream("m", 1 << 16);
        let (out, fault) = all(&mut r, &[created, error]);
        assert_eq!(fault, Some(StreamFault::Upstream("overloaded".into())));
        assert_eq!(out, created, "the relay's own error event names it");
    }

    #[test]
    fn a_text_completion_stream_counts_its_pieces_and_hides_the_asked_for_usage() {
        let parts: [&'static [u8]; 3] = [
            b"data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"Once\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            b"data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\" upon\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            b"data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"length\"}]}\n\n",
        ];
        let mut r = Reader::TextCompletion { strip_usage: true }.stream("m", 1 << 16);
        let (out, fault) = all(&mut r, &parts);
        assert_eq!(fault, None);
        assert!(
            out.ends_with(b"data: [DONE]\n\n"),
            "finished without [DONE]: completed"
        );
        assert_eq!(
            r.usage_or_estimate(3).completion_tokens,
            2,
            "two pieces of text"
        );
        let mut r = Reader::TextCompletion { strip_usage: true }.stream("m", 1 << 16);
        let (out, _) = all(
            &mut r,
            &[b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n"],
        );
        assert!(!String::from_utf8_lossy(&out).contains("usage"));
        assert_eq!(r.reported_usage().map(|u| u.completion_tokens), Some(2));
    }

    #[test]
    fn an_event_over_the_limit_is_a_fault() {
        let mut r = Reader::OpenAi { strip_usage: false }.stream("m", 8);
        // An event that has not ended yet and is already over the limit.
        let (_, fault) = r.push(Bytes::from_static(b"data: 0123456789"));
        assert_eq!(fault, Some(StreamFault::TooLarge(8)));
    }

    #[test]
    fn gemini_streams_finish_when_the_upstream_closes() {
        let mut r = Reader::Gemini {
            include_usage: false,
        }
        .stream("m", 1 << 16);
        let (out, fault) = all(
            &mut r,
            &[b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}]}\n\n"],
        );
        assert_eq!(fault, None);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("chat.completion.chunk") && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
    }
}
