//! Upstream answers as the provider translations read them: OpenAI's (passed through),
//! Anthropic's, Gemini's, Ollama's, the Responses API's and embeddings, whole and streamed
//! (split into reads at random points), and OpenAI's answers as the client-side
//! translations to Anthropic's Messages and the Responses API read them. Translated output
//! must be JSON (whole) or whole SSE events of JSON (streams), whatever came in.

use super::shape;
use bytes::Bytes;
use sluice_providers::anthropic::inbound as messages;
use sluice_providers::responses::{answer, inbound as responses, stream as responses_stream};
use sluice_providers::{Reader, Reframe};
use sluice_testkit::fuzz::{self, Rng};

const ITERS: usize = 3000;
const MAX_EVENT: usize = 1 << 20;

/// A whole answer through `reader`: translations give JSON, or say why they could not.
fn whole(reader: Reader, body: &[u8]) {
    if let Ok((out, _usage)) = reader.whole(Bytes::copy_from_slice(body), "m") {
        if !reader.passes_through() {
            shape::json(&out, "a translated answer");
        }
    }
}

/// A streamed answer through `reader`, in reads split at random points.
fn stream(reader: Reader, body: &[u8], rng: &mut Rng) {
    let mut r = reader.stream("m", MAX_EVENT);
    let mut out = Vec::new();
    let mut from = 0;
    let mut cuts = rng.splits(body.len());
    cuts.push(body.len());
    for cut in cuts {
        let (sent, fault) = r.push(Bytes::copy_from_slice(&body[from..cut]));
        out.extend_from_slice(&sent.unwrap_or_default());
        from = cut;
        if fault.is_some() {
            break;
        }
    }
    if let Ok(Some(tail)) = r.end() {
        out.extend_from_slice(&tail);
    }
    let _ = r.usage_or_estimate(10);
    if !reader.passes_through() {
        shape::sse(&out, "a translated stream");
    }
}

#[test]
fn openai_answers() {
    fuzz::run("answer-openai", ITERS, |b, _| {
        whole(Reader::OpenAi { strip_usage: true }, b);
        whole(Reader::TextCompletion { strip_usage: true }, b);
        whole(Reader::Media { images: true }, b);
    });
}

#[test]
fn openai_streams() {
    fuzz::run("answer-openai-sse", ITERS, |b, rng| {
        stream(Reader::OpenAi { strip_usage: true }, b, rng);
        stream(Reader::Media { images: false }, b, rng);
    });
    fuzz::run("answer-text-completion-sse", ITERS / 4, |b, rng| {
        stream(Reader::TextCompletion { strip_usage: true }, b, rng);
    });
}

#[test]
fn anthropic_answers() {
    fuzz::run("answer-anthropic", ITERS, |b, _| {
        whole(
            Reader::Anthropic {
                include_usage: true,
            },
            b,
        );
    });
}

#[test]
fn anthropic_streams() {
    fuzz::run("answer-anthropic-sse", ITERS, |b, rng| {
        stream(
            Reader::Anthropic {
                include_usage: true,
            },
            b,
            rng,
        );
    });
}

#[test]
fn gemini_answers() {
    fuzz::run("answer-gemini", ITERS, |b, _| {
        whole(
            Reader::Gemini {
                include_usage: true,
            },
            b,
        );
    });
    fuzz::run("answer-embed-gemini", ITERS / 2, |b, _| {
        whole(
            Reader::GeminiEmbed {
                estimated_tokens: 3,
            },
            b,
        );
    });
}

#[test]
fn gemini_streams() {
    fuzz::run("answer-gemini-sse", ITERS, |b, rng| {
        stream(
            Reader::Gemini {
                include_usage: true,
            },
            b,
            rng,
        );
    });
}

#[test]
fn ollama_answers() {
    fuzz::run("answer-ollama", ITERS, |b, _| {
        whole(
            Reader::Ollama {
                include_usage: true,
            },
            b,
        );
    });
    fuzz::run("answer-embed-ollama", ITERS / 2, |b, _| {
        whole(Reader::OllamaEmbed, b);
    });
}

#[test]
fn ollama_streams() {
    fuzz::run("answer-ollama-ndjson", ITERS, |b, rng| {
        stream(
            Reader::Ollama {
                include_usage: false,
            },
            b,
            rng,
        );
    });
}

#[test]
fn native_responses_answers_and_streams() {
    fuzz::run("answer-responses", ITERS, |b, _| {
        whole(Reader::Responses, b);
        let _ = sluice_providers::responses::native::kept(b);
        let _ = sluice_providers::responses::native::response_id(b);
    });
    fuzz::run("answer-responses-sse", ITERS, |b, rng| {
        stream(Reader::Responses, b, rng);
    });
}

#[test]
fn upstream_error_bodies() {
    fuzz::run("answer-openai", ITERS / 2, |b, _| {
        let e = sluice_providers::error::from_response("p", 400, None, b);
        let _ = e.to_string();
    });
}

/// The settings a Responses request echoes: those of the first seed.
fn echo() -> sluice_providers::responses::object::Echo {
    let seed = &fuzz::corpus("responses")[0];
    responses::to_chat(seed, None)
        .expect("the seed translates")
        .echo
}

#[test]
fn openai_answers_as_messages_and_responses() {
    let echo = echo();
    fuzz::run("answer-openai", ITERS, move |b, _| {
        if let Ok(out) = messages::from_openai(b, "m") {
            shape::json(&out, "a Messages answer");
        }
        if let Ok(w) = answer::from_chat(b, &echo) {
            shape::json(&w.body, "a Responses answer");
            shape::json(&w.assistant, "a stored assistant message");
        }
    });
}

/// OpenAI chunk events re-framed by `converter`, the stream split into events first.
fn reframe(mut converter: impl Reframe, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut scanner = sluice_types::sse::SseScanner::new(MAX_EVENT);
    let mut events = Vec::new();
    let _ = scanner.push(Bytes::copy_from_slice(body), |ev| {
        events.push(ev.to_vec());
        sluice_types::sse::Keep::Yes
    });
    for ev in events {
        if let Some(data) = sluice_types::sse::event_data(&ev) {
            converter.on_event(&data, &mut out);
        }
    }
    if !converter.is_done() {
        converter.finish_stream(&mut out);
    }
    out
}

#[test]
fn openai_streams_as_messages_and_responses() {
    let echo = echo();
    fuzz::run("answer-openai-sse", ITERS, move |b, _| {
        let out = reframe(messages::StreamConverter::new("m"), b);
        shape::sse(&out, "a Messages stream");
        let out = reframe(responses_stream::StreamConverter::new(echo.clone()), b);
        shape::sse(&out, "a Responses stream");
    });
}
