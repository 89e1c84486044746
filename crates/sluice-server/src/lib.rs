//! The sluice HTTP server: accept loop, router, the proxy path with streaming relay,
//! metrics, health, graceful shutdown.
//!
//! Request flow (one path): request id → body read under `max_body_bytes` → light parse
//! and validation → model resolution → provider adapter → upstream (pooled client) →
//! response passed through as bytes, or relayed event by event for streams → metrics.
#![forbid(unsafe_code)]

pub mod admin_keys;
mod auth;
mod body;
pub mod cache;
mod handlers;
pub mod local;
mod messages;
pub mod metrics;
mod proxy;
mod relay;
mod request_id;
mod serve;
pub mod state;
mod tab;

pub use serve::Server;
pub use state::AppState;
