//! The conformance suite (issue 15): every inbound API (`/v1/chat/completions`,
//! `/v1/messages`, `/v1/responses`) over every upstream format (OpenAI-compatible chat,
//! Anthropic, Gemini, Ollama; and `/v1/responses` over a native Responses upstream), whole
//! and streamed, in the scenarios agents depend on: plain
//! text, parallel tool calls with arguments streamed in pieces, reasoning, refusals, content
//! filters, token limits, errors midway and a connection cut midway.
//!
//! Each case replays an upstream transcript written from the provider's documented wire
//! format (`conformance/upstream/{format}/{scenario}.{whole.json,stream.sse,stream.ndjson}`)
//! through a real gateway and compares, event by event, what the client gets (and what
//! went upstream) with a reviewed golden transcript
//! (`conformance/golden/{inbound}/{format}/{scenario}.txt`), random ids and timestamps
//! normalised (`normalize.rs`). On top of the goldens, `checks.rs` checks the invariants of
//! each inbound protocol on every stream (event order, indices, `sequence_number`, ids that
//! must match) and that a stream assembles into the same answer as the whole call.
//!
//! `SLUICE_BLESS=1` rewrites the goldens from what the gateway does now; a rewritten golden
//! must be reviewed against the documented formats before it is committed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

#[path = "../common/mod.rs"]
mod common;

mod cases;
mod checks;
mod normalize;

use cases::{Inbound, Upstream};

async fn suite(inbound: Inbound, upstream: Upstream) {
    let mut failures = Vec::new();
    for scenario in cases::SCENARIOS {
        if let Some(problem) = cases::run(inbound, upstream, scenario).await {
            failures.push(problem);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

macro_rules! pair {
    ($name:ident, $inbound:ident, $upstream:ident) => {
        #[tokio::test]
        async fn $name() {
            suite(Inbound::$inbound, Upstream::$upstream).await;
        }
    };
}

pair!(chat_over_openai, Chat, OpenAi);
pair!(chat_over_anthropic, Chat, Anthropic);
pair!(chat_over_gemini, Chat, Gemini);
pair!(chat_over_ollama, Chat, Ollama);
pair!(messages_over_openai, Messages, OpenAi);
pair!(messages_over_anthropic, Messages, Anthropic);
pair!(messages_over_gemini, Messages, Gemini);
pair!(messages_over_ollama, Messages, Ollama);
pair!(responses_over_openai, Responses, OpenAi);
pair!(responses_over_native_openai, Responses, OpenAiResponses);
pair!(responses_over_anthropic, Responses, Anthropic);
pair!(responses_over_gemini, Responses, Gemini);
pair!(responses_over_ollama, Responses, Ollama);
