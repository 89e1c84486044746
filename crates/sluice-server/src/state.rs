//! Everything a request needs, built once from the config: providers with their pools,
//! the model table, metrics, and the pre-rendered `/v1/models` body.

use crate::metrics::Metrics;
use bytes::Bytes;
use http::HeaderValue;
use sluice_core::config::{Config, ServerConfig};
use sluice_core::{Error, ErrorKind};
use sluice_providers::Provider;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A model as configured: which provider serves it and under which id.
#[derive(Debug)]
pub struct Deployment {
    /// What clients send.
    pub name: Box<str>,
    /// Index into [`AppState::providers`].
    pub provider: usize,
    /// Id sent upstream.
    pub upstream: Box<str>,
    /// `x-sluice-model` value.
    pub header_value: HeaderValue,
}

/// FNV-1a: model names are short and chosen by the operator, so a DoS-resistant hash buys
/// nothing on this lookup, which every request makes.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Where one request goes.
#[derive(Debug, Clone)]
pub struct Target<'s, 'u> {
    /// The provider.
    pub provider: &'s Provider,
    /// Model id sent upstream.
    pub upstream: &'u str,
    /// `x-sluice-model` value.
    pub model_header: HeaderValue,
    /// Index of the metrics series.
    pub series: usize,
}

/// Shared, immutable (but for atomics) state of a running gateway.
#[derive(Debug)]
pub struct AppState {
    /// `[server]`.
    pub server: ServerConfig,
    /// Providers, in config order.
    pub providers: Vec<Provider>,
    /// Configured models, in config order.
    pub deployments: Vec<Deployment>,
    index: HashMap<Box<str>, usize, BuildHasherDefault<Fnv>>,
    /// Providers that accept any model name (`provider/model`).
    passthrough: Vec<usize>,
    /// Metrics.
    pub metrics: Metrics,
    /// `GET /v1/models`, rendered once.
    pub models_json: Bytes,
    /// When the gateway started.
    pub started: Instant,
}

impl AppState {
    /// Builds providers, pools (one per worker thread) and tables from a validated config.
    pub fn new(config: Config, workers: usize) -> Result<Self, Error> {
        let providers = config
            .providers
            .into_iter()
            .map(|p| Provider::new(p, workers))
            .collect::<Result<Vec<_>, _>>()?;
        let mut deployments = Vec::with_capacity(config.models.len());
        let mut index = HashMap::with_capacity_and_hasher(config.models.len(), Default::default());
        for (i, m) in config.models.into_iter().enumerate() {
            let header_value = HeaderValue::from_str(&m.name).map_err(|_| {
                Error::from(ErrorKind::Internal {
                    message: format!("model name `{}` is not a valid header value", m.name),
                })
            })?;
            index.insert(m.name.clone().into_boxed_str(), i);
            deployments.push(Deployment {
                name: m.name.into(),
                provider: m.provider,
                upstream: m.upstream.into(),
                header_value,
            });
        }
        let passthrough: Vec<usize> = providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.config.passthrough)
            .map(|(i, _)| i)
            .collect();
        let passthrough_labels: Vec<String> = passthrough
            .iter()
            .map(|&i| format!("{}/*", providers[i].name()))
            .collect();
        let metrics = Metrics::new(
            deployments
                .iter()
                .map(|d| (&*d.name, providers[d.provider].name()))
                .chain(
                    passthrough
                        .iter()
                        .zip(&passthrough_labels)
                        .map(|(&i, label)| (label.as_str(), providers[i].name())),
                ),
        );
        let models_json = render_models(&deployments, &providers);
        Ok(Self {
            server: config.server,
            providers,
            deployments,
            index,
            passthrough,
            metrics,
            models_json,
            started: Instant::now(),
        })
    }

    /// Resolves the `model` a client sent: a configured model, else `provider/model` on a
    /// passthrough provider, else any name on the only passthrough provider.
    pub fn resolve<'s: 'u, 'u>(&'s self, model: &'u str) -> Result<Target<'s, 'u>, Error> {
        if let Some(&i) = self.index.get(model) {
            let d = &self.deployments[i];
            return Ok(Target {
                provider: &self.providers[d.provider],
                upstream: &d.upstream,
                model_header: d.header_value.clone(),
                series: i,
            });
        }
        let passthrough = |k: usize, upstream: &'u str| -> Option<Target<'s, 'u>> {
            let provider = &self.providers[self.passthrough[k]];
            Some(Target {
                provider,
                upstream,
                model_header: HeaderValue::from_str(model).ok()?,
                series: self.deployments.len() + k,
            })
        };
        if let Some((prefix, rest)) = model.split_once('/') {
            if let Some(k) = self
                .passthrough
                .iter()
                .position(|&i| self.providers[i].name() == prefix)
            {
                if let Some(t) = passthrough(k, rest) {
                    return Ok(t);
                }
            }
        }
        if self.passthrough.len() == 1 {
            if let Some(t) = passthrough(0, model) {
                return Ok(t);
            }
        }
        Err(ErrorKind::ModelNotFound {
            model: model.to_string(),
        }
        .into())
    }
}

fn render_models(deployments: &[Deployment], providers: &[Provider]) -> Bytes {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let data: Vec<serde_json::Value> = deployments
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": &*d.name,
                "object": "model",
                "created": created,
                "owned_by": providers[d.provider].name(),
            })
        })
        .collect();
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({"object": "list", "data": data}))
            .unwrap_or_default(),
    )
}
