//! Upstream answers through the whole pipeline: the fake upstream replays a mutated
//! transcript (split into writes at random points) to a gateway in process, over loopback,
//! for each provider type, to `/v1/chat/completions` and `/v1/messages`, whole and streamed.
//! The relay, the translations and the client-side re-framing must answer: a 200 whose
//! body is JSON (whole) or whole SSE events of JSON (sluice's own error event when the
//! upstream's stream broke), or an error in the endpoint's shape; never a 500, a panic or a
//! hang. OpenAI-format answers to chat are relayed byte for byte, broken or not: only their
//! status and error shape are checked.

use super::http::{check, Shape};
use super::shape;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use sluice_core::config::Config;
use sluice_core::env::MapEnv;
use sluice_server::AppState;
use sluice_testkit::fuzz::{self, Rng};
use sluice_testkit::FakeUpstream;
use std::sync::Arc;

const ITERS: usize = 400;

/// A gateway with one model per provider type on `fake`: `oa`, `an`, `ge`, `ol`.
fn gateway(fake: &FakeUpstream) -> Arc<AppState> {
    let dir = std::env::temp_dir().join(format!("sluice-fuzz-relay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n",
        dir.display()
    );
    for (name, kind, base) in [
        ("oa", "openai", fake.base_url()),
        ("an", "anthropic", fake.url("")),
        ("ge", "gemini", fake.url("")),
        ("ol", "ollama", fake.url("")),
    ] {
        toml.push_str(&format!(
            "[[providers]]\nname = \"{name}\"\ntype = \"{kind}\"\nbase_url = \"{base}\"\n\
             api_key = \"k\"\n[[models]]\nname = \"{name}\"\nprovider = \"{name}\"\n\
             upstream = \"up-model\"\n"
        ));
    }
    let config = Config::from_toml(&toml, &MapEnv::default()).unwrap();
    Arc::new(AppState::new(config, 1).unwrap())
}

/// Replays every input of `target` as `model`'s answer, streamed or whole, to chat and to
/// Messages.
fn drive(target: &str, model: &'static str, stream: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (fake, state) = rt.block_on(async {
        let fake = FakeUpstream::start().await;
        let state = gateway(&fake);
        (fake, state)
    });
    fuzz::run(target, ITERS, move |b, rng| {
        let _keep = &fake;
        let replay = writes(b, rng, stream);
        for (path, shape) in [
            ("/v1/chat/completions", Shape::OpenAi),
            ("/v1/messages", Shape::Anthropic),
        ] {
            let body = json!({
                "model": model, "stream": stream, "max_tokens": 100,
                "messages": [{"role": "user", "content": "hi"}],
                "x_fake": {"replay": replay},
            });
            let req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let (status, out) = rt.block_on(async {
                let r = sluice_server::route(Arc::clone(&state), req).await.unwrap();
                let status = r.status();
                (status, r.into_body().collect().await.unwrap().to_bytes())
            });
            check(path, status, &out, shape);
            // OpenAI's answers to chat are relayed as they came (bodies are never parsed
            // whole nor re-serialised); everything else sluice wrote.
            if status.is_success() && !(model == "oa" && path.contains("chat")) {
                if stream {
                    shape::sse(&out, "a relayed stream");
                } else {
                    shape::json(&out, "a relayed answer");
                }
            }
        }
    });
}

/// The fake's writes: a stream's bytes cut at random points, or a whole body.
fn writes(b: &[u8], rng: &mut Rng, stream: bool) -> Vec<String> {
    let text = String::from_utf8_lossy(b);
    if !stream {
        return vec![text.into_owned()];
    }
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in rng.splits(bytes.len()).into_iter().chain([bytes.len()]) {
        // Cut on a character boundary (the replay is text).
        let mut cut = cut.max(from);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        if cut > from {
            out.push(text[from..cut].to_string());
            from = cut;
        }
    }
    out
}

#[test]
fn openai_answers_relayed() {
    drive("answer-openai", "oa", false);
    drive("answer-openai-sse", "oa", true);
}

#[test]
fn anthropic_answers_relayed() {
    drive("answer-anthropic", "an", false);
    drive("answer-anthropic-sse", "an", true);
}

#[test]
fn gemini_answers_relayed() {
    drive("answer-gemini", "ge", false);
    drive("answer-gemini-sse", "ge", true);
}

#[test]
fn ollama_answers_relayed() {
    drive("answer-ollama", "ol", false);
    drive("answer-ollama-ndjson", "ol", true);
}
