//! A route's static answer (`fallback_response`), sent when every deployment failed: a
//! chat completion, or a stream of one, written by the providers' one chunk writer.

use super::answer::Answer;
use bytes::Bytes;
use sluice_providers::chunks::{completion, ChunkWriter, Delta};
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
