//! The readers of bytes from outside, called directly: the SSE and NDJSON scanner and the
//! multipart reader (the same events whatever the reads), the request views and the inbound
//! translations (Anthropic's Messages and the Responses API into chat: JSON out, or a
//! reason), config (TOML) loading and the admin API's key specs.

use super::shape;
use bytes::Bytes;
use sluice_core::config::Config;
use sluice_core::env::MapEnv;
use sluice_core::operation::Operation;
use sluice_providers::anthropic::inbound as messages;
use sluice_providers::responses::inbound as responses;
use sluice_providers::View;
use sluice_server::key_spec::{KeySpec, NewKeySpec};
use sluice_testkit::fuzz::{self, Rng};
use sluice_types::multipart::{Event, Multipart};
use sluice_types::sse::{Keep, SseScanner};

const ITERS: usize = 3000;

/// The pieces of `body` cut at `cuts`.
fn pieces<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut from = 0;
    let mut out = Vec::new();
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        out.push(&body[from..cut]);
        from = cut;
    }
    out
}

/// The events (or lines) a scanner finds in `reads`, then what is left at the end.
fn scan(lines: bool, reads: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
    let mut s = if lines {
        SseScanner::lines(1 << 24)
    } else {
        SseScanner::new(1 << 24)
    };
    let mut events = Vec::new();
    let mut kept = Vec::new();
    for (i, read) in reads.iter().enumerate() {
        // Drop every third event: what is kept must be the others, in order.
        let out = s
            .push(Bytes::copy_from_slice(read), |ev| {
                events.push(ev.to_vec());
                if (events.len() + i) % 3 == 0 {
                    Keep::Drop
                } else {
                    Keep::Yes
                }
            })
            .expect("under the limit");
        kept.extend_from_slice(&out);
    }
    (events, kept, s.finish().to_vec())
}

fn scanner_check(b: &[u8], rng: &mut Rng, lines: bool) {
    let (whole, _, rest) = scan(lines, &[b]);
    let reads = pieces(b, &rng.splits(b.len()));
    let (split, kept, split_rest) = scan(lines, &reads);
    assert_eq!(whole, split, "the same events whatever the reads");
    assert_eq!(rest, split_rest);
    // The events are the input in order, and what is left is its tail (unless blank).
    let joined: Vec<u8> = whole.concat();
    assert!(b.starts_with(&joined));
    let tail = &b[joined.len()..];
    assert!(rest == tail || (rest.is_empty() && tail.iter().all(u8::is_ascii_whitespace)));
    assert!(kept.len() <= joined.len());
    for ev in &whole {
        let _ = sluice_types::sse::event_data(ev);
        let _ = sluice_types::sse::after_key(ev, b"\"usage\"");
    }
}

#[test]
fn sse_scanner() {
    fuzz::run("answer-openai-sse", ITERS, |b, rng| {
        scanner_check(b, rng, false)
    });
    fuzz::run("answer-anthropic-sse", ITERS, |b, rng| {
        scanner_check(b, rng, false)
    });
}

#[test]
fn ndjson_scanner() {
    fuzz::run("answer-ollama-ndjson", ITERS, |b, rng| {
        scanner_check(b, rng, true)
    });
}

/// What a multipart reader makes of `reads`: its events with adjacent data merged, and
/// whether the body was complete; or its error.
fn multipart(reads: &[&[u8]]) -> Result<(Vec<Event>, bool), String> {
    let mut m = Multipart::new("sluiceFuzzBoundary", 8);
    let mut events: Vec<Event> = Vec::new();
    for read in reads {
        m.push(read);
        while let Some(ev) = m.next_event().map_err(|e| e.0)? {
            match (ev, events.last_mut()) {
                (Event::Data(more), Some(Event::Data(data))) => {
                    *data = Bytes::from([data.as_ref(), more.as_ref()].concat());
                }
                (Event::Data(d), _) if d.is_empty() => {}
                (ev, _) => events.push(ev),
            }
        }
    }
    Ok((events, m.finish().is_ok()))
}

#[test]
fn multipart_reader() {
    fuzz::run("multipart", ITERS, |b, rng| {
        let whole = multipart(&[b]);
        let split = multipart(&pieces(b, &rng.splits(b.len())));
        match (&whole, &split) {
            (Ok(w), Ok(s)) => assert_eq!(w, s, "the same parts whatever the reads"),
            (Err(_), Err(_)) => {}
            _ => panic!("whole: {whole:?}, split: {split:?}"),
        }
        let ct = String::from_utf8_lossy(&b[..b.len().min(120)]);
        let _ = sluice_types::multipart::boundary(&format!("multipart/form-data; {ct}"));
    });
}

#[test]
fn request_views() {
    for (target, ops) in [
        ("chat", &[Operation::Chat][..]),
        ("completions", &[Operation::Completion]),
        (
            "embeddings",
            &[
                Operation::Embeddings,
                Operation::Rerank,
                Operation::Moderation,
            ],
        ),
    ] {
        fuzz::run(target, ITERS, move |b, _| {
            for &op in ops {
                if let Ok(v) = View::parse(op, b) {
                    let _ = (v.model(), v.stream(), v.include_usage(), v.user());
                    let _ = (v.estimated_prompt_tokens(), v.facts());
                }
            }
        });
    }
}

#[test]
fn messages_requests_into_chat() {
    fuzz::run("messages", ITERS, |b, _| {
        if let Ok((chat, _model, _stream)) = messages::to_openai(b) {
            shape::json(&chat, "a translated Messages request");
        }
    });
}

#[test]
fn responses_requests_into_chat() {
    let history = br#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]"#;
    fuzz::run("responses", ITERS, move |b, _| {
        if let Ok(read) = responses::read(b) {
            let _ = read.previous_response_id();
            if let Ok(t) = read.to_chat(None) {
                shape::json(&t.body, "a translated Responses request");
            }
        }
        for h in [None, Some(&history[..])] {
            if let Ok(t) = responses::to_chat(b, h) {
                shape::json(&t.body, "a translated Responses request");
                if let Some(input) = &t.input {
                    shape::json(input, "a stored Responses input");
                }
            }
        }
    });
}

#[test]
fn config_files() {
    fuzz::run("config", ITERS, |b, _| {
        let text = String::from_utf8_lossy(b);
        let _ = Config::from_toml(&text, &MapEnv::default());
    });
}

#[test]
fn key_specs() {
    fuzz::run("admin-keys", ITERS, |b, _| {
        if let Ok(serde_json::Value::Object(spec)) = serde_json::from_slice(b) {
            let _ = KeySpec::from_json(spec.clone());
            let _ = NewKeySpec::from_json(spec);
        }
    });
}
