//! `[[providers]]`: the upstreams models are served by, with their wire format, URL, key,
//! headers, timeouts and connection pool.

use super::error::ConfigError;
use super::health::{load_health_check, HealthCheckConfig, UninitializedHealthCheck};
use super::values::{positive, resolve_secret, MS};
use crate::env::Env;
use crate::operation::Operation;
use crate::presets::{self, Preset};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Provider wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// OpenAI's API and every server compatible with it.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Ollama's native API.
    Ollama,
    /// Google's Gemini API.
    Gemini,
    /// Models sluice runs itself (`sluice-local`).
    Local,
}

impl ProviderType {
    /// The config name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Ollama => "ollama",
            Self::Gemini => "gemini",
            Self::Local => "local",
        }
    }
}

/// How an `openai` provider is sent `POST /v1/responses` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponsesMode {
    /// Translated to chat completions (`POST {base_url}/chat/completions`) and back.
    Chat,
    /// Sent as they are to `POST {base_url}/responses` (OpenAI's own API).
    Native,
}

impl ResponsesMode {
    /// The config name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Native => "native",
        }
    }
}

/// Who runs the `/v1/batches` batches whose lines all go to an `openai` provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchMode {
    /// sluice runs each line through its own pipeline.
    Sluice,
    /// The batch is forwarded to the upstream's own Batch API (`{base_url}/files` and
    /// `{base_url}/batches`), polled, and billed at the batch price.
    Native,
}

impl BatchMode {
    /// The config name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sluice => "sluice",
            Self::Native => "native",
        }
    }
}

/// `max_connections` when the config sets none: requests in flight to one provider at once
/// (see `sluice-providers`' `slots`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// `[[providers]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedProviderConfig {
    /// Name models refer to.
    pub name: String,
    /// Wire format.
    #[serde(rename = "type")]
    pub kind: ProviderType,
    /// A known OpenAI-compatible upstream; supplies `base_url` and `stream_usage`.
    pub preset: Option<String>,
    /// API root (with version path, e.g. `https://api.openai.com/v1`).
    pub base_url: Option<String>,
    /// Literal key or `env::VAR`.
    pub api_key: Option<String>,
    /// Extra headers sent upstream; values may be `env::VAR`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TCP+TLS connect timeout.
    pub connect_timeout_ms: Option<u64>,
    /// Whole-request timeout.
    pub timeout_ms: Option<u64>,
    /// Longest silence between two reads of a response body (streams included).
    pub chunk_timeout_ms: Option<u64>,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout_ms: Option<u64>,
    /// Most idle connections kept per host.
    pub pool_max_idle_per_host: Option<usize>,
    /// Most requests in flight to the provider at once (`0`: no bound).
    pub max_connections: Option<usize>,
    /// Speak HTTP/2 without TLS negotiation (h2c), for local servers that support it.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Ask for `stream_options.include_usage` on streams so tokens can be counted.
    pub stream_usage: Option<bool>,
    /// Accept any model name as `provider/model` (and bare names if this is the only such provider).
    #[serde(default)]
    pub passthrough: bool,
    /// `anthropic`: `max_tokens` sent when the client sets none (Anthropic requires it).
    pub default_max_tokens: Option<u64>,
    /// `anthropic`: mark system prompts of at least this many bytes for prompt caching.
    pub cache_system_min_bytes: Option<usize>,
    /// `ollama`: `keep_alive` sent when a request has none (`"5m"`, `"1h"`, `"-1"`, `"0"`).
    pub keep_alive: Option<String>,
    /// `openai`: the operations the upstream serves (`chat`, `embeddings`, `speech`,
    /// `transcription`, `translation`, `image_generation`, `image_edit`,
    /// `image_variation`, `rerank`, `moderation`); default: the preset's, else all.
    pub endpoints: Option<Vec<String>>,
    /// `openai`: how `/v1/responses` requests are sent (`native` or `chat`); default
    /// `native` for OpenAI's own API (the `openai` preset, or no `base_url`), else `chat`.
    pub responses: Option<ResponsesMode>,
    /// `openai`: who runs batches of this provider's models (`native` or `sluice`);
    /// default `native` for OpenAI's own API (the `openai` preset, or no `base_url`), else
    /// `sluice`.
    pub batch: Option<BatchMode>,
    /// An active check of the upstream at an interval, feeding the breakers (default: none).
    pub health_check: Option<UninitializedHealthCheck>,
}

/// Validated `[[providers]]`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Name.
    pub name: String,
    /// Wire format.
    pub kind: ProviderType,
    /// API root without a trailing slash.
    pub base_url: String,
    /// Resolved key.
    pub api_key: Option<Secret>,
    /// Extra headers, values resolved.
    pub headers: Vec<(String, Secret)>,
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// Default 600 s.
    pub timeout: Duration,
    /// Default 120 s.
    pub chunk_timeout: Duration,
    /// Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Default 256.
    pub pool_max_idle_per_host: usize,
    /// Requests in flight at once, shared out among the worker threads; more wait for one to
    /// end. `0`: no bound.
    pub max_connections: usize,
    /// h2c.
    pub http2_prior_knowledge: bool,
    /// Ask for usage on streams.
    pub stream_usage: bool,
    /// Accept unconfigured model names.
    pub passthrough: bool,
    /// `anthropic`: default `max_tokens` (4096).
    pub default_max_tokens: u64,
    /// `anthropic`: prompt-caching threshold for system prompts.
    pub cache_system_min_bytes: Option<usize>,
    /// `ollama`: default `keep_alive`.
    pub keep_alive: Option<String>,
    /// `openai`: the operations the upstream serves (`None`: all of them).
    pub operations: Option<Vec<Operation>>,
    /// How `/v1/responses` requests are sent (always `Chat` for other types than `openai`).
    pub responses: ResponsesMode,
    /// Who runs batches of its models (always `Sluice` for other types than `openai`).
    pub batch: BatchMode,
    /// The active health check, when configured.
    pub health_check: Option<HealthCheckConfig>,
}

/// Validates `[[providers]]`: unique names, each provider's own keys.
pub(super) fn load_providers(
    providers: Vec<UninitializedProviderConfig>,
    env: &dyn Env,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    let mut out = Vec::with_capacity(providers.len());
    let mut names = HashSet::new();
    for (i, p) in providers.into_iter().enumerate() {
        let at = |key: &str| format!("providers[{i}].{key}");
        if p.name.is_empty() {
            return Err(ConfigError::new(at("name"), "must not be empty"));
        }
        if !names.insert(p.name.clone()) {
            return Err(ConfigError::new(
                at("name"),
                format!("a provider named `{}` is already defined", p.name),
            ));
        }
        out.push(load_provider(p, env, &at)?);
    }
    Ok(out)
}

/// One provider; `at` gives the key path of a key of it.
fn load_provider(
    p: UninitializedProviderConfig,
    env: &dyn Env,
    at: &dyn Fn(&str) -> String,
) -> Result<ProviderConfig, ConfigError> {
    let preset = find_preset(p.preset.as_deref(), at)?;
    refuse_keys_of_other_types(&p, at)?;
    let base_url = base_url(&p, preset, at)?;
    let api_key = p
        .api_key
        .as_deref()
        .map(|k| resolve_secret(k, env, &at("api_key")))
        .transpose()?;
    let headers = headers(&p.headers, env, at)?;
    let timeout = |v: Option<u64>, key: &str, default: u64| positive(v, &at(key), default).map(MS);
    let operations = operations(&p, preset, at)?;
    let responses = responses_mode(&p, preset, at)?;
    let batch = batch_mode(&p, preset, at)?;
    let health_check = p
        .health_check
        .map(|h| load_health_check(h, p.kind == ProviderType::Local, at))
        .transpose()?;
    Ok(ProviderConfig {
        health_check,
        operations,
        responses,
        batch,
        connect_timeout: timeout(p.connect_timeout_ms, "connect_timeout_ms", 5_000)?,
        timeout: timeout(p.timeout_ms, "timeout_ms", 600_000)?,
        chunk_timeout: timeout(p.chunk_timeout_ms, "chunk_timeout_ms", 120_000)?,
        pool_idle_timeout: timeout(p.pool_idle_timeout_ms, "pool_idle_timeout_ms", 90_000)?,
        pool_max_idle_per_host: p.pool_max_idle_per_host.unwrap_or(256),
        max_connections: p.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        http2_prior_knowledge: p.http2_prior_knowledge,
        stream_usage: p
            .stream_usage
            .unwrap_or_else(|| preset.is_none_or(|pr| pr.stream_usage)),
        passthrough: p.passthrough,
        default_max_tokens: positive(p.default_max_tokens, &at("default_max_tokens"), 4096)?,
        cache_system_min_bytes: p.cache_system_min_bytes,
        keep_alive: p.keep_alive,
        name: p.name,
        kind: p.kind,
        base_url,
        api_key,
        headers,
    })
}

/// How an `openai` provider is sent Responses API requests: as written, else natively to
/// OpenAI's own API (its preset, or the default `base_url`), else translated to chat.
fn responses_mode(
    p: &UninitializedProviderConfig,
    preset: Option<&Preset>,
    at: &dyn Fn(&str) -> String,
) -> Result<ResponsesMode, ConfigError> {
    if p.kind != ProviderType::OpenAi {
        return match p.responses {
            Some(_) => Err(ConfigError::new(
                at("responses"),
                "only applies to `type = \"openai\"` providers (the others are always translated)",
            )),
            None => Ok(ResponsesMode::Chat),
        };
    }
    Ok(p.responses.unwrap_or(if openai_itself(p, preset) {
        ResponsesMode::Native
    } else {
        ResponsesMode::Chat
    }))
}

/// Who runs an `openai` provider's batches: as written, else OpenAI's own API (its preset,
/// or the default `base_url`) natively, else sluice.
fn batch_mode(
    p: &UninitializedProviderConfig,
    preset: Option<&Preset>,
    at: &dyn Fn(&str) -> String,
) -> Result<BatchMode, ConfigError> {
    if p.kind != ProviderType::OpenAi {
        return match p.batch {
            Some(_) => Err(ConfigError::new(
                at("batch"),
                "only applies to `type = \"openai\"` providers (sluice runs the others' batches)",
            )),
            None => Ok(BatchMode::Sluice),
        };
    }
    Ok(p.batch.unwrap_or(if openai_itself(p, preset) {
        BatchMode::Native
    } else {
        BatchMode::Sluice
    }))
}

/// Whether the provider is OpenAI's own API: its preset without another `base_url`, or
/// no `base_url` at all.
fn openai_itself(p: &UninitializedProviderConfig, preset: Option<&Preset>) -> bool {
    match preset {
        Some(pr) => pr.name == "openai" && p.base_url.is_none(),
        None => p.base_url.is_none(),
    }
}

/// The operations an `openai` provider serves: `endpoints` as written, else its preset's.
fn operations(
    p: &UninitializedProviderConfig,
    preset: Option<&Preset>,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<Vec<Operation>>, ConfigError> {
    let Some(names) = &p.endpoints else {
        return Ok(preset
            .and_then(|pr| presets::serves(pr.name))
            .map(<[_]>::to_vec));
    };
    if p.kind != ProviderType::OpenAi {
        return Err(ConfigError::new(
            at("endpoints"),
            "only applies to `type = \"openai\"` providers",
        ));
    }
    names
        .iter()
        .map(|n| {
            Operation::ALL
                .into_iter()
                .find(|op| op.as_str() == n)
                .ok_or_else(|| {
                    let all: Vec<_> = Operation::ALL.iter().map(|o| o.as_str()).collect();
                    ConfigError::new(
                        at("endpoints"),
                        format!(
                            "unknown endpoint `{n}`; expected some of {}",
                            all.join(", ")
                        ),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The preset named `name`, if any.
fn find_preset(
    name: Option<&str>,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<&'static Preset>, ConfigError> {
    let Some(name) = name else {
        return Ok(None);
    };
    let preset = presets::find(name).ok_or_else(|| {
        ConfigError::new(
            at("preset"),
            format!(
                "unknown preset `{name}`; expected one of {}",
                presets::names()
            ),
        )
    })?;
    Ok(Some(preset))
}

/// Refuses the keys that only apply to another provider type than `p`'s.
fn refuse_keys_of_other_types(
    p: &UninitializedProviderConfig,
    at: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if p.kind != ProviderType::OpenAi && p.preset.is_some() {
        return Err(ConfigError::new(
            at("preset"),
            "presets are for `type = \"openai\"` providers",
        ));
    }
    if p.kind != ProviderType::Anthropic
        && (p.default_max_tokens.is_some() || p.cache_system_min_bytes.is_some())
    {
        return Err(ConfigError::new(
            at(if p.default_max_tokens.is_some() {
                "default_max_tokens"
            } else {
                "cache_system_min_bytes"
            }),
            "only applies to `type = \"anthropic\"` providers",
        ));
    }
    if p.kind != ProviderType::Ollama && p.keep_alive.is_some() {
        return Err(ConfigError::new(
            at("keep_alive"),
            "only applies to `type = \"ollama\"` providers",
        ));
    }
    if p.kind == ProviderType::Local
        && (p.base_url.is_some() || p.api_key.is_some() || p.passthrough)
    {
        return Err(ConfigError::new(
            at(if p.base_url.is_some() {
                "base_url"
            } else if p.api_key.is_some() {
                "api_key"
            } else {
                "passthrough"
            }),
            "does not apply to `type = \"local\"` providers: sluice runs their models itself",
        ));
    }
    Ok(())
}

/// The API root: as written without a trailing slash, else the preset's, else the type's
/// default; it must be an http(s) URL with a host and no query or fragment.
fn base_url(
    p: &UninitializedProviderConfig,
    preset: Option<&Preset>,
    at: &dyn Fn(&str) -> String,
) -> Result<String, ConfigError> {
    let base_url = match (&p.base_url, preset, p.kind) {
        (None, None, ProviderType::Local) => "http://local.invalid".to_string(),
        (Some(u), _, _) => u.trim_end_matches('/').to_string(),
        (None, Some(pr), _) => pr.base_url.to_string(),
        (None, None, ProviderType::Anthropic) => "https://api.anthropic.com".to_string(),
        (None, None, ProviderType::Ollama) => "http://127.0.0.1:11434".to_string(),
        (None, None, ProviderType::Gemini) => {
            "https://generativelanguage.googleapis.com".to_string()
        }
        (None, None, ProviderType::OpenAi) => presets::PRESETS[0].base_url.to_string(),
    };
    let rest = base_url
        .strip_prefix("http://")
        .or_else(|| base_url.strip_prefix("https://"))
        .ok_or_else(|| {
            ConfigError::new(
                at("base_url"),
                format!("`{base_url}` must start with http:// or https://"),
            )
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.contains(char::is_whitespace) || rest.contains(['?', '#']) {
        return Err(ConfigError::new(
            at("base_url"),
            format!("`{base_url}` is not a valid API root URL"),
        ));
    }
    Ok(base_url)
}

/// The extra headers, names lowercased and values resolved.
fn headers(
    written: &BTreeMap<String, String>,
    env: &dyn Env,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut headers = Vec::with_capacity(written.len());
    for (name, value) in written {
        let path = at(&format!("headers.{name}"));
        if !is_token(name) {
            return Err(ConfigError::new(path, "is not a valid HTTP header name"));
        }
        let value = resolve_secret(value, env, &path)?;
        if value
            .expose()
            .bytes()
            .any(|b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(ConfigError::new(
                path,
                "header values must not contain line breaks",
            ));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// An HTTP token (RFC 9110): what a header name may be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
