//! A route's static answer (`fallback_response`), sent when every deployment failed: a
//! chat completion, or a stream of one, written by the providers' one chunk writer (a legacy
//! text completion's request gets a `text_completion`, or its events).

use super::answer::Answer;
use bytes::Bytes;
use sluice_providers::chunks::{completion, ChunkWriter, Delta};
use sluice_providers::text_completion::{TextChoice, TextWriter};
use sluice_types::Usage;

/// `text` as the answer of route `route`, whole or streamed.
pub fn answer(route: &str, text: &str, stream: bool) -> Answer {
    if !stream {
        let body = completion("degraded", route, text, "", &[], "stop", &Usage::default());
        return Answer::json(Bytes::from(body), None);
    }
    let writer = ChunkWriter::new(route, "degraded");
    let mut out = Vec::with_capacity(text.len() + 512);
    let first = Delta {
        role: Some("assistant"),
        content: Some(text),
        ..Delta::default()
    };
    writer.delta(&mut out, first, None);
    writer.finish(&mut out, "stop", None);
    Answer::Events(Bytes::from(out))
}

/// `text` as route `route`'s answer to a legacy text completion, whole or streamed.
pub fn text_answer(route: &str, text: &str, stream: bool) -> Answer {
    let writer = TextWriter::new(route, "degraded", sluice_core::rng::next_u64());
    if !stream {
        let body = writer.whole(&[TextChoice::first(text, Some("stop"))], &Usage::default());
        return Answer::json(Bytes::from(body), None);
    }
    let mut out = Vec::with_capacity(text.len() + 512);
    writer.text(&mut out, text);
    writer.finish(&mut out, "stop", None);
    Answer::Events(Bytes::from(out))
}
