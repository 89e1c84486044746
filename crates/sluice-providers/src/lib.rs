//! Provider adapters: one module per upstream wire format (named after its config `type`),
//! a closed [`Provider`] enum that dispatches to them statically, and the pooled HTTP client
//! each provider owns.
//!
//! An adapter turns a validated client request into an upstream `http::Request` and an
//! upstream error response into an [`sluice_core::Error`]. Success bodies of the `openai`
//! type are OpenAI's own format and pass through as bytes.
#![forbid(unsafe_code)]

pub mod anthropic;
pub mod chunks;
pub mod client;
pub mod error;
pub mod gemini;
pub mod ollama;
pub mod openai;
mod provider;
#[cfg(test)]
mod test_support;

pub use client::{HttpClient, UpstreamBody};
pub use provider::{set_worker, Endpoint, Provider, Translation};
