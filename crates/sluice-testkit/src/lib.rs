//! Test support for sluice: a fake upstream speaking OpenAI's, Anthropic's, Gemini's and
//! Ollama's APIs, and a small HTTP test client.
//!
//! [`FakeUpstream`] is a real HTTP/1.1 server on a loopback port, meant to sit
//! behind the gateway in integration tests and benchmarks. It serves
//! `POST /v1/chat/completions` (plain and SSE streaming), `POST /v1/completions`
//! (legacy text completions, plain and streaming), `POST /v1/embeddings` and
//! `GET /v1/models`, and the native shapes of the other providers (Anthropic's
//! `/v1/messages`, Gemini's `/v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent` and `:batchEmbedContents`, Ollama's `/api/chat` and
//! `/api/embed`), OpenAI's Responses API (`/v1/responses`), OpenAI's Files and Batch APIs
//! (`/v1/files`, `/v1/batches`; see [`BatchOutcome`]), records every request, and can be told per request —
//! through a [`Behavior`] — to delay, fail with a status, hang, reset the
//! connection, cut a stream short or stream forever. It also counts
//! connections and responses abandoned by the client, so tests can check that
//! the gateway propagates cancellation.
//!
//! The [`client`] module sends requests to the gateway (or to the fake)
//! over real sockets. [`fuzz`] is the mutation fuzzer of the parser tests.
//! over real sockets; [`load`] is a raw HTTP/1.1 client for latency and load
//! measurements (benchmarks, memory tests).
//!
//! ```no_run
//! # async fn demo() {
//! use sluice_testkit::{client, Behavior, FakeUpstream};
//!
//! let fake = FakeUpstream::start().await;
//! fake.push(Behavior::new().with_status(503).with_retry_after("1"));
//! let url = format!("{}/chat/completions", fake.base_url());
//! let resp = client::post_json(&url, r#"{"model":"m","messages":[]}"#, &[])
//!     .await
//!     .expect("request");
//! assert_eq!(resp.status, 503);
//! assert_eq!(resp.header("retry-after"), Some("1"));
//! # }
//! ```
#![forbid(unsafe_code)]

mod behavior;
mod body;
pub mod client;
mod completions;
pub mod fuzz;
pub mod load;
pub mod media;
mod native;
mod openai_batches;
mod openai_responses;
mod replay;
pub mod responses;
mod upstream;

pub use behavior::{Behavior, FakeToolCall, FakeUsage};
pub use body::CutError;
pub use client::{ClientError, TestClient, TestResponse, TestStream};
pub use openai_batches::BatchOutcome;
pub use upstream::{FakeUpstream, RecordedRequest};
