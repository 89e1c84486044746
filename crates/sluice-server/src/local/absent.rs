//! The local runtime of a build without the `local` feature: none.

use super::found::Found;
use sluice_core::config::Config;
use sluice_core::Error;

/// No runtime can exist in this build.
#[derive(Debug)]
pub enum LocalRuntime {}

/// No runtime, no models found; a `local` provider's configured models answer that this
/// build has no local runtime.
pub fn start(config: &Config) -> Result<(Vec<Found>, Option<LocalRuntime>), Error> {
    if config
        .providers
        .iter()
        .any(|p| p.kind == sluice_core::config::ProviderType::Local)
    {
        tracing::warn!("this build has no local runtime (cargo feature `local`): local models cannot be served");
    }
    Ok((Vec::new(), None))
}

/// Never called: there is no runtime.
pub fn health(local: &LocalRuntime) -> serde_json::Value {
    match *local {}
}

/// Never called: there is no runtime.
pub fn render(local: &LocalRuntime, _out: &mut String) {
    match *local {}
}

/// Never called: there is no runtime.
pub fn preload(local: &LocalRuntime) {
    match *local {}
}

/// Never called: there is no runtime.
pub fn sweep(local: &LocalRuntime) {
    match *local {}
}

/// Never called: there is no runtime.
pub async fn load(local: &LocalRuntime, _name: &str) -> Result<serde_json::Value, Error> {
    match *local {}
}

/// Never called: there is no runtime.
pub fn unload(local: &LocalRuntime, _name: &str) -> Result<serde_json::Value, Error> {
    match *local {}
}
