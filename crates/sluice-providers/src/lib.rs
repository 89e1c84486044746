//! Dispatch to upstreams: one module per upstream wire format (named after its config
//! `type`), the closed [`Provider`] type that dispatches to them statically, and the pooled
//! HTTP client each provider owns.
//!
//! Given a request [`View`] and the client's body, [`Provider::prepare`] writes the upstream
//! request (the body spliced, or translated for Anthropic, Gemini and Ollama) and picks the
//! [`Reader`] of its answer, which turns it back into OpenAI's format whole or as a
//! [`StreamReader`], event by event. Upstream error responses become
//! [`sluice_core::Error`]s ([`error`]). Models sluice runs itself are
//! [`Prepared::InProcess`]: the server hands them to the local runtime.
#![forbid(unsafe_code)]

pub mod anthropic;
pub mod audio_duration;
pub mod batch_api;
mod call_order;
pub mod chunks;
pub mod client;
pub mod error;
pub mod gemini;
pub mod h1;
mod json;
pub mod ollama;
pub mod openai;
mod outbound;
mod provider;
pub mod reader;
pub mod reasoning;
pub mod reframe;
pub mod responses;
pub mod slots;
#[cfg(test)]
mod test_support;
pub mod text_completion;
pub mod upload;
mod upstream_body;
pub mod view;

pub use client::{BodyError, HttpClient, ResponseBody, UpstreamBody};
pub use provider::{set_worker, worker, Prepared, Provider, NOT_A_WORKER};
pub use reader::{Reader, StreamFault, StreamReader};
pub use reframe::Reframe;
pub use upload::{Feed, Growing, SpooledFile, Upload, UploadBody};
pub use view::View;
