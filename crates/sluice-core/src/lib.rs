//! sluice's pure logic: configuration (load, validate), errors and their HTTP mapping,
//! provider presets and pricing. No network I/O: everything here is fast to compile and
//! to test.
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
