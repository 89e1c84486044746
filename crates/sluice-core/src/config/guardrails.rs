//! `[[guardrails]]`: detectors of personal data and secrets and what to do when they find
//! some (`sluice-guard`), applied to the requests (and, if configured, the answers) of the
//! models and routes that name them (`guardrails = ["NAME", ...]`). Detector names and
//! patterns are checked here, so `serve --check` refuses a config that names an unknown
//! detector or an invalid pattern.

use super::error::ConfigError;
use serde::Deserialize;
use sluice_guard::{Action, Guardrail};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// `[[guardrails]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedGuardrail {
    /// The name models and routes refer to.
    pub name: String,
    /// Built-in detectors: `email`, `phone`, `card`, `iban`, `ssn`, `aadhaar`, `pan`, `ip`,
    /// `secret`.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Custom detectors: name = regular expression.
    #[serde(default)]
    pub patterns: BTreeMap<String, String>,
    /// `redact`, `block` or `log`.
    pub action: String,
    /// `redact`: put the values back in the answer.
    #[serde(default)]
    pub restore: bool,
    /// `requests` (default), `answers` or `both`.
    pub apply_to: Option<String>,
}

/// A validated guardrail.
#[derive(Debug, Clone)]
pub struct GuardrailConfig {
    /// The compiled detectors and action.
    pub guard: Arc<Guardrail>,
    /// `redact`: the answer gets the values back.
    pub restore: bool,
    /// Applied to requests.
    pub requests: bool,
    /// Applied to answers.
    pub answers: bool,
}

impl GuardrailConfig {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.guard.name
    }
}

pub(super) fn load_guardrails(
    raw: Vec<UninitializedGuardrail>,
) -> Result<Vec<GuardrailConfig>, ConfigError> {
    let mut names = HashSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, g)| {
            let at = |key: &str| format!("guardrails[{i}].{key}");
            if g.name.is_empty() || !names.insert(g.name.clone()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("must be a unique, non-empty name (`{}`)", g.name),
                ));
            }
            let action = Action::parse(&g.action).ok_or_else(|| {
                ConfigError::new(at("action"), "must be `redact`, `block` or `log`")
            })?;
            if g.restore && action != Action::Redact {
                return Err(ConfigError::new(
                    at("restore"),
                    "only applies to `action = \"redact\"`",
                ));
            }
            let (requests, answers) = match g.apply_to.as_deref() {
                None | Some("requests") => (true, false),
                Some("answers") => (false, true),
                Some("both") => (true, true),
                Some(other) => {
                    return Err(ConfigError::new(
                        at("apply_to"),
                        format!("must be `requests`, `answers` or `both`, not `{other}`"),
                    ))
                }
            };
            let patterns: Vec<(String, String)> = g.patterns.into_iter().collect();
            let guard = Guardrail::new(&g.name, &g.detectors, &patterns, action)
                .map_err(|e| ConfigError::new(at("detectors"), e))?;
            Ok(GuardrailConfig {
                guard: Arc::new(guard),
                restore: g.restore,
                requests,
                answers,
            })
        })
        .collect()
}

/// The guardrails `names` refers to, as indexes into `all`.
pub(super) fn resolve(
    names: Option<&[String]>,
    all: &[GuardrailConfig],
    at: &str,
) -> Result<Vec<usize>, ConfigError> {
    names
        .unwrap_or_default()
        .iter()
        .map(|n| {
            all.iter()
                .position(|g| g.name() == n)
                .ok_or_else(|| ConfigError::new(at, format!("no guardrail named `{n}` is defined")))
        })
        .collect()
}
