//! The environment variables sluice reads, in one place, behind a trait so that tests can
//! inject a map instead of touching the process environment.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `SLUICE_CONFIG` | config file used when `--config` is not given |
//! | `SLUICE_LOG` | log filter: `error`, `warn`, `info`, `debug`, `trace`, or `target=level,...` |
//! | `SLUICE__SECTION__KEY` | overrides a scalar config key, e.g. `SLUICE__SERVER__LISTEN=0.0.0.0:8080` |
//! | `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, `GROQ_API_KEY`, `DEEPSEEK_API_KEY`, `MISTRAL_API_KEY`, `TOGETHER_API_KEY`, `OPENROUTER_API_KEY` | with no config file, one provider for each that is set |
//! | `OLLAMA_HOST` | with no config file, where to look for Ollama (default `127.0.0.1:11434`) |

use std::collections::BTreeMap;

/// Prefix of config overrides.
pub const OVERRIDE_PREFIX: &str = "SLUICE__";
/// Config file used when `--config` is absent.
pub const SLUICE_CONFIG: &str = "SLUICE_CONFIG";
/// Log filter.
pub const SLUICE_LOG: &str = "SLUICE_LOG";
/// Where Ollama listens.
pub const OLLAMA_HOST: &str = "OLLAMA_HOST";

/// A source of environment variables.
pub trait Env {
    /// The value of `key`, if set and valid UTF-8.
    fn get(&self, key: &str) -> Option<String>;
    /// Every variable whose name starts with `prefix`.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect()
    }
}

/// A fixed map, for tests.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl MapEnv {
    /// A map from pairs.
    pub fn from_pairs<const N: usize>(pairs: [(&str, &str); N]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
