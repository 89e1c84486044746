//! `[[guardrails]]`: detectors of personal data and secrets and what to do when they find
//! some (`sluice-guard`), applied to the requests (and, if configured, the answers) of the
//! models and routes that name them (`guardrails = ["NAME", ...]`). Detector names and
//! patterns are checked here, so `serve --check` refuses a config that names an unknown
//! detector or an invalid pattern.

use super::error::ConfigError;
use super::values::{positive, resolve_secret};
use crate::env::Env;
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
    /// `redact`, `block` or `log` (required with detectors).
    pub action: Option<String>,
    /// `redact`: put the values back in the answer.
    #[serde(default)]
    pub restore: bool,
    /// `requests` (default), `answers` or `both`.
    pub apply_to: Option<String>,
    /// A webhook that allows, denies or rewrites what the guardrail applies to.
    pub webhook: Option<UninitializedWebhook>,
    /// Answers checked against the request's schemas: `response_format: json_schema`, and
    /// each tool call's arguments against its tool's `parameters`.
    pub validate_json: Option<UninitializedValidateJson>,
}

/// `validate_json = { retries, on_failure, tools }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedValidateJson {
    /// How often to ask again when an answer does not validate (default 1).
    pub retries: Option<u32>,
    /// `error` (default: 502 `output_validation_failed`) or `pass` (the answer with
    /// `x-sluice-output-valid: false`).
    pub on_failure: Option<String>,
    /// Check tool calls too: each call names a tool the request offered, and its arguments
    /// match that tool's `parameters` (default `true`).
    pub tools: Option<bool>,
}

/// A validated `validate_json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidateJson {
    /// How often to ask again.
    pub retries: u32,
    /// Pass an answer that still fails (with a header) rather than refuse it.
    pub pass: bool,
    /// Check tool calls against the offered tools' schemas.
    pub tools: bool,
}

/// `webhook = { url, timeout_ms, on_error, headers }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedWebhook {
    /// Where to POST (http or https).
    pub url: String,
    /// How long to wait for its verdict (default 1,000 ms).
    pub timeout_ms: Option<u64>,
    /// `allow` (fail open) or `deny` (fail closed, the default) when it does not answer
    /// in time or answers something else than a verdict.
    pub on_error: Option<String>,
    /// Headers sent with each call; values may be `env::VAR`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A validated webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// How long to wait.
    pub timeout: std::time::Duration,
    /// Allow when the webhook fails (else deny).
    pub fail_open: bool,
    /// Headers sent with each call.
    pub headers: Vec<(String, crate::secret::Secret)>,
}

/// A validated guardrail.
#[derive(Debug, Clone)]
pub struct GuardrailConfig {
    /// Its name.
    pub name: String,
    /// The compiled detectors and action (none for a webhook-only guardrail).
    pub guard: Option<Arc<Guardrail>>,
    /// The webhook, if any.
    pub webhook: Option<WebhookConfig>,
    /// `redact`: the answer gets the values back.
    pub restore: bool,
    /// Applied to requests.
    pub requests: bool,
    /// Applied to answers.
    pub answers: bool,
    /// Answers validated against the request's JSON schema.
    pub validate_json: Option<ValidateJson>,
}

impl GuardrailConfig {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

pub(super) fn load_guardrails(
    raw: Vec<UninitializedGuardrail>,
    env: &dyn Env,
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
            let webhook = g
                .webhook
                .map(|w| load_webhook(w, env, &at("webhook")))
                .transpose()?;
            let validate_json = g
                .validate_json
                .map(|v| load_validate_json(v, &at("validate_json")))
                .transpose()?;
            let only_checks = webhook.is_some() || validate_json.is_some();
            let action = match (g.action.as_deref(), only_checks) {
                (Some(a), _) => Action::parse(a).ok_or_else(|| {
                    ConfigError::new(at("action"), "must be `redact`, `block` or `log`")
                })?,
                (None, true) => Action::Log,
                (None, false) => {
                    return Err(ConfigError::new(
                        at("action"),
                        "is required: `redact`, `block` or `log`",
                    ))
                }
            };
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
            let guard = if g.detectors.is_empty() && patterns.is_empty() && only_checks {
                None
            } else {
                let guard = Guardrail::new(&g.name, &g.detectors, &patterns, action)
                    .map_err(|e| ConfigError::new(at("detectors"), e))?;
                Some(Arc::new(guard))
            };
            Ok(GuardrailConfig {
                name: g.name,
                guard,
                webhook,
                restore: g.restore,
                requests,
                answers,
                validate_json,
            })
        })
        .collect()
}

fn load_validate_json(v: UninitializedValidateJson, at: &str) -> Result<ValidateJson, ConfigError> {
    let pass = match v.on_failure.as_deref() {
        None | Some("error") => false,
        Some("pass") => true,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{at}.on_failure"),
                format!("must be `error` or `pass`, not `{other}`"),
            ))
        }
    };
    let retries = v.retries.unwrap_or(1);
    if retries > 5 {
        return Err(ConfigError::new(
            format!("{at}.retries"),
            "must be at most 5",
        ));
    }
    Ok(ValidateJson {
        retries,
        pass,
        tools: v.tools.unwrap_or(true),
    })
}

fn load_webhook(
    w: UninitializedWebhook,
    env: &dyn Env,
    at: &str,
) -> Result<WebhookConfig, ConfigError> {
    let rest = w
        .url
        .strip_prefix("http://")
        .or_else(|| w.url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(char::is_whitespace)) {
        return Err(ConfigError::new(
            format!("{at}.url"),
            "must be an http:// or https:// URL",
        ));
    }
    let fail_open = match w.on_error.as_deref() {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{at}.on_error"),
                format!("must be `allow` or `deny`, not `{other}`"),
            ))
        }
    };
    let headers = w
        .headers
        .iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                resolve_secret(v, env, &format!("{at}.headers.{k}"))?,
            ))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(WebhookConfig {
        url: w.url,
        timeout: std::time::Duration::from_millis(positive(
            w.timeout_ms,
            &format!("{at}.timeout_ms"),
            1_000,
        )?),
        fail_open,
        headers,
    })
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
