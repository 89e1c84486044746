//! sluice's pure logic. No network I/O: everything here is fast to compile and to test.
//!
//! - [`config`]: the TOML config, loaded and validated section by section, with
//!   `SLUICE__SECTION__KEY` overrides and errors that name the key at fault;
//! - [`error`]: every error a request can end in, and its HTTP mapping;
//! - [`routing`]: the strategies that order a route's targets (fallback, weighted, cost,
//!   latency, quality, tier), and the rules that size a request into a tier;
//! - [`breaker`], [`retry`], [`canary`]: a deployment's circuit breaker, which failures are
//!   retried and after how long, and the staged rollout of a candidate model on a route;
//! - [`cache`]: the response cache's request keys, its per-request directives and the
//!   decision to look up, store or coalesce;
//! - [`keys`]: virtual key secrets, made, shown once and stored as their hash;
//! - [`pricing`], [`simulate`]: what tokens cost, and recorded traffic replayed through a
//!   config to project its monthly spend;
//! - [`operation`], [`presets`], [`env`](mod@env), [`secret`], [`rng`]: what an upstream is
//!   asked to do, the OpenAI-compatible upstreams known by name, the environment variables
//!   read, secrets that are never printed, and a fast random source.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod cache;
pub mod canary;
pub mod config;
pub mod env;
pub mod error;
pub mod keys;
pub mod operation;
pub mod presets;
pub mod pricing;
pub mod retry;
pub mod rng;
pub mod routing;
pub mod secret;
pub mod simulate;

pub use config::Config;
pub use error::{Error, ErrorKind};
pub use operation::Operation;
pub use secret::Secret;
