//! The fake's media endpoints, in OpenAI's documented wire formats: `/v1/audio/speech`
//! (audio bytes in several frames, or `speech.audio.*` SSE events), transcriptions and
//! translations (multipart in; `json`, `text`, `srt`, `vtt`, `verbose_json` or
//! `transcript.text.*` SSE events out), images (generations JSON; edits and variations
//! multipart), `/v1/rerank` (Cohere/Jina/vLLM shape) and `/v1/moderations`.
//!
//! Answers are deterministic functions of the request, so tests can check what reached
//! the upstream: a transcript names the model, the file's name, its length and a checksum
//! of its bytes.

use crate::body::{CancelGuard, FakeBody, SseStream};
use crate::Behavior;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;

/// Bytes of fake audio per character of speech input.
pub const AUDIO_BYTES_PER_CHAR: usize = 64;

/// One part of a multipart body, read naively (whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPart {
    /// Field name.
    pub name: String,
    /// File name, for file parts.
    pub filename: Option<String>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// Reads a whole multipart body (an implementation independent of sluice's streaming one).
pub fn parse_form(content_type: &str, body: &[u8]) -> Result<Vec<FormPart>, String> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .ok_or("no boundary")?;
    let delim = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let mut pos = find(text, delim.as_bytes(), 0).ok_or("no first boundary")? + delim.len();
    loop {
        if text[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        pos += 2; // CRLF
        let head_end = find(text, b"\r\n\r\n", pos).ok_or("no header end")?;
        let head = String::from_utf8_lossy(&text[pos..head_end]).to_string();
        let next = find(text, format!("\r\n{delim}").as_bytes(), head_end + 4)
            .ok_or("no closing boundary")?;
        let data = text[head_end + 4..next].to_vec();
        let param = |key: &str| {
            head.split(';').find_map(|p| {
                p.trim().strip_prefix(&format!("{key}=\"")).map(|v| {
                    v.trim_end_matches('"')
                        .split('"')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
            })
        };
        parts.push(FormPart {
            name: param("name").ok_or("a part without a name")?,
            filename: param("filename"),
            data,
        });
        pos = next + 2 + delim.len();
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A checksum of bytes (FNV-1a), named in transcripts.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The fake audio of `text`: `AUDIO_BYTES_PER_CHAR` bytes per character.
pub fn fake_audio(text: &str) -> Vec<u8> {
    let seed = checksum(text.as_bytes());
    (0..text.chars().count() * AUDIO_BYTES_PER_CHAR)
        .map(|i| (seed.rotate_left((i % 64) as u32) as u8) ^ (i as u8))
        .collect()
}

fn respond(status: StatusCode, content_type: &'static str, body: FakeBody) -> Response<FakeBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn error(message: &str) -> Response<FakeBody> {
    respond(
        StatusCode::BAD_REQUEST,
        "application/json",
        FakeBody::full(Bytes::from(
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
                .to_string(),
        )),
    )
}

fn events(events: Vec<Value>, behavior: &Behavior, guard: CancelGuard) -> Response<FakeBody> {
    // `replay` answers with its own events instead (framing included).
    let queue: VecDeque<Bytes> = match &behavior.replay {
        Some(raw) => raw.iter().map(|e| Bytes::from(e.clone())).collect(),
        None => events
            .into_iter()
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .collect(),
    };
    let delay = Duration::from_millis(behavior.chunk_delay_ms);
    respond(
        StatusCode::OK,
        "text/event-stream",
        FakeBody::sse(SseStream::new(
            queue,
            None,
            delay,
            behavior.cut_after_chunks,
            guard,
        )),
    )
}

/// The media paths the fake serves.
const PATHS: [&str; 8] = [
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/images/variations",
    "/v1/rerank",
    "/v1/moderations",
];

/// Whether `path` is a media endpoint.
pub(crate) fn is_media(path: &str) -> bool {
    PATHS.contains(&path)
}

/// Serves media endpoint `path`.
pub(crate) fn route(
    path: &str,
    content_type: &str,
    body: &Bytes,
    behavior: &Behavior,
    mut guard: CancelGuard,
) -> Response<FakeBody> {
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let response = match path {
        "/v1/audio/speech" => return speech(&json(), behavior, guard),
        "/v1/audio/transcriptions" | "/v1/audio/translations" => {
            return transcription(content_type, body, behavior, guard)
        }
        "/v1/images/generations" => {
            let v = json();
            let n = v["n"].as_u64().unwrap_or(1);
            images(n, v["prompt"].as_str().unwrap_or(""))
        }
        "/v1/images/edits" | "/v1/images/variations" => match parse_form(content_type, body) {
            Err(e) => error(&e),
            Ok(parts) => {
                let field = |n: &str| parts.iter().find(|p| p.name == n);
                let n = field("n")
                    .and_then(|p| String::from_utf8_lossy(&p.data).parse().ok())
                    .unwrap_or(1);
                let prompt = field("prompt").map(|p| String::from_utf8_lossy(&p.data).to_string());
                images(n, &prompt.unwrap_or_default())
            }
        },
        "/v1/rerank" => rerank(&json()),
        _ => moderation(&json()),
    };
    guard.disarm();
    response
}

fn speech(v: &Value, behavior: &Behavior, mut guard: CancelGuard) -> Response<FakeBody> {
    let Some(input) = v["input"].as_str() else {
        guard.disarm();
        return error("`input` is required");
    };
    let audio = fake_audio(input);
    if v["stream_format"] == "sse" {
        let mut evs: Vec<Value> = audio
            .chunks(1024)
            .map(|c| json!({"type": "speech.audio.delta", "audio": hex(c)}))
            .collect();
        evs.push(json!({"type": "speech.audio.done", "usage": {"input_tokens": input.len() / 4, "output_tokens": audio.len() / 100, "total_tokens": input.len() / 4 + audio.len() / 100}}));
        return events(evs, behavior, guard);
    }
    // Audio in frames of 4 KiB, chunked (no length), as a streaming TTS server sends it.
    let queue: VecDeque<Bytes> = audio.chunks(4096).map(Bytes::copy_from_slice).collect();
    let delay = Duration::from_millis(behavior.chunk_delay_ms);
    respond(
        StatusCode::OK,
        "audio/mpeg",
        FakeBody::sse(SseStream::new(
            queue,
            None,
            delay,
            behavior.cut_after_chunks,
            guard,
        )),
    )
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn transcription(
    content_type: &str,
    body: &[u8],
    behavior: &Behavior,
    mut guard: CancelGuard,
) -> Response<FakeBody> {
    let parts = match parse_form(content_type, body) {
        Ok(p) => p,
        Err(e) => {
            guard.disarm();
            return error(&e);
        }
    };
    let field = |n: &str| {
        parts
            .iter()
            .find(|p| p.name == n)
            .map(|p| String::from_utf8_lossy(&p.data).to_string())
    };
    let Some(file) = parts.iter().find(|p| p.name == "file") else {
        guard.disarm();
        return error("no file part");
    };
    let text = format!(
        "model {} heard {} bytes of {} checksum {:016x}",
        field("model").unwrap_or_default(),
        file.data.len(),
        file.filename.clone().unwrap_or_default(),
        checksum(&file.data)
    );
    // One second of audio per 16 KB.
    let seconds = (file.data.len() as f64 / 16_000.0).max(0.1);
    if field("stream").as_deref() == Some("true") {
        let mut evs: Vec<Value> = text
            .split_inclusive(' ')
            .map(|w| json!({"type": "transcript.text.delta", "delta": w}))
            .collect();
        evs.push(json!({"type": "transcript.text.done", "text": text, "usage": {"type": "tokens", "input_tokens": 20, "output_tokens": 10, "total_tokens": 30}}));
        return events(evs, behavior, guard);
    }
    guard.disarm();
    let (ct, out) = match field("response_format").as_deref().unwrap_or("json") {
        "text" => ("text/plain; charset=utf-8", format!("{text}\n")),
        "srt" => ("text/plain; charset=utf-8", format!("1\n00:00:00,000 --> 00:00:01,000\n{text}\n")),
        "vtt" => ("text/vtt", format!("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n")),
        "verbose_json" => ("application/json", json!({"task": "transcribe", "language": "english", "duration": seconds, "text": text, "segments": []}).to_string()),
        _ => ("application/json", json!({"text": text, "usage": {"type": "duration", "seconds": seconds.ceil()}}).to_string()),
    };
    respond(StatusCode::OK, ct, FakeBody::full(Bytes::from(out)))
}

fn images(n: u64, prompt: &str) -> Response<FakeBody> {
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"b64_json": format!("aW1hZ2Ug{i}"), "revised_prompt": prompt}))
        .collect();
    respond(
        StatusCode::OK,
        "application/json",
        FakeBody::full(Bytes::from(
            json!({"created": 1_700_000_000, "data": data, "usage": {"input_tokens": 10, "output_tokens": 100 * n, "total_tokens": 10 + 100 * n}}).to_string(),
        )),
    )
}

fn rerank(v: &Value) -> Response<FakeBody> {
    let query = v["query"].as_str().unwrap_or_default().to_lowercase();
    let words: Vec<&str> = query.split_whitespace().collect();
    let docs = v["documents"].as_array().cloned().unwrap_or_default();
    let mut results: Vec<(usize, f64, Value)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let text = d
                .as_str()
                .or_else(|| d["text"].as_str())
                .unwrap_or_default();
            let lower = text.to_lowercase();
            let hits = words.iter().filter(|w| lower.contains(*w)).count();
            (i, hits as f64 / words.len().max(1) as f64, d.clone())
        })
        .collect();
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = v["top_n"].as_u64().map_or(results.len(), |n| n as usize);
    let with_docs = v["return_documents"].as_bool().unwrap_or(false);
    let results: Vec<Value> = results
        .into_iter()
        .take(top)
        .map(|(i, s, d)| {
            let mut r = json!({"index": i, "relevance_score": s});
            if with_docs {
                r["document"] = if d.is_string() { json!({"text": d}) } else { d };
            }
            r
        })
        .collect();
    respond(
        StatusCode::OK,
        "application/json",
        FakeBody::full(Bytes::from(
            json!({"id": "rerank-fake", "model": v["model"], "results": results, "usage": {"total_tokens": 7 * docs.len()}}).to_string(),
        )),
    )
}

fn moderation(v: &Value) -> Response<FakeBody> {
    let inputs: Vec<String> = match &v["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => vec![],
    };
    let results: Vec<Value> = inputs
        .iter()
        .map(|t| {
            let violent = t.contains("kill");
            json!({"flagged": violent, "categories": {"violence": violent}, "category_scores": {"violence": if violent { 0.9 } else { 0.01 }}})
        })
        .collect();
    respond(
        StatusCode::OK,
        "application/json",
        FakeBody::full(Bytes::from(
            json!({"id": "modr-fake", "model": v["model"], "results": results}).to_string(),
        )),
    )
}
