//! `[server]`: where sluice listens, how much it reads and waits for, and the admin API's key.

use super::error::ConfigError;
use super::values::{positive, resolve_secret, MS};
use crate::env::Env;
use crate::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedServerConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Largest request body accepted.
    pub max_body_bytes: Option<u64>,
    /// Largest non-streamed upstream response accepted.
    pub max_response_bytes: Option<u64>,
    /// Largest single SSE event accepted from an upstream.
    pub max_event_bytes: Option<u64>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_ms: Option<u64>,
    /// How long a client may take to send its request head and body.
    pub request_read_timeout_ms: Option<u64>,
    /// Most connections served at once; more wait in the kernel's accept queue.
    pub max_connections: Option<usize>,
    /// Most requests to the proxied endpoints running at once; more wait, holding only
    /// their bytes read (0: no bound).
    pub max_requests_in_flight: Option<usize>,
    /// How long a request waits for one of `max_requests_in_flight` before a 503.
    pub queue_timeout_ms: Option<u64>,
    /// Key of the admin API (`/admin/*`): literal or `env::VAR`.
    pub master_key: Option<String>,
    /// Largest multipart upload accepted (audio, images, files).
    pub max_upload_bytes: Option<u64>,
    /// How long a client may take to send an upload.
    pub upload_read_timeout_ms: Option<u64>,
    /// Where uploads are spooled while they are relayed.
    pub upload_dir: Option<std::path::PathBuf>,
    /// How log lines are written: `text` (default) or `json`.
    pub log_format: Option<LogFormat>,
    /// Whether `/metrics` and `/health/detailed` answer without the master key.
    pub public_status: Option<bool>,
    /// How often `sluice serve` reads its config file for a change (0: never).
    pub watch_config_ms: Option<u64>,
}

/// How `sluice serve` writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// tracing's human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, with every field of the event and of its spans (a request's
    /// `request_id`) as keys.
    Json,
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Default 10 MiB.
    pub max_body_bytes: u64,
    /// Default 64 MiB.
    pub max_response_bytes: u64,
    /// Default 4 MiB.
    pub max_event_bytes: u64,
    /// Default 30 s.
    pub shutdown_grace: Duration,
    /// Default 60 s.
    pub request_read_timeout: Duration,
    /// Default 10,000.
    pub max_connections: usize,
    /// Requests to the proxied endpoints running at once: `None` (default) for the sum of
    /// the providers' `max_connections` (see [`InFlight`]).
    pub max_requests_in_flight: InFlight,
    /// Default 60 s.
    pub queue_timeout: Duration,
    /// Admin API key; the admin API is off without it.
    pub master_key: Option<Secret>,
    /// Default 100 MiB.
    pub max_upload_bytes: u64,
    /// Default 600 s.
    pub upload_read_timeout: Duration,
    /// Default: the system's temporary directory.
    pub upload_dir: std::path::PathBuf,
    /// Default `text`.
    pub log_format: LogFormat,
    /// `/metrics` and `/health/detailed` answer without the master key (default `true`:
    /// Prometheus and load balancers read them); `false`: only with it, like `/admin/*`.
    pub public_status: bool,
    /// How often `sluice serve` reads its config file and reloads it when its content
    /// changed (a Kubernetes ConfigMap's update); `None` (default): only on SIGHUP or
    /// `POST /admin/config/reload`.
    pub watch_config: Option<Duration>,
}

/// `server.max_requests_in_flight`: the bound on requests to the proxied endpoints (the
/// pipeline's) running at once. A request past it waits, in arrival order, holding only its
/// head and the bytes read with it, rather than a running request's state, so that a burst
/// of connections many times the upstream slots costs little more than its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    /// Not written: the sum of the providers' `max_connections` (their upstream slots), no
    /// bound when one of them has none.
    ProvidersSum,
    /// `0`: no bound.
    Unbounded,
    /// A bound as written.
    At(usize),
}

/// Shortest `watch_config_ms` accepted: reading the file more often buys nothing.
const MIN_WATCH_MS: u64 = 100;

impl UninitializedServerConfig {
    /// Validates `[server]`, reading the master key from `env` when it is `env::VAR`.
    pub(crate) fn load(self, env: &dyn Env) -> Result<ServerConfig, ConfigError> {
        let public_status = self.public_status.unwrap_or(true);
        if !public_status && self.master_key.is_none() {
            return Err(ConfigError::new(
                "server.public_status",
                "`false` needs `server.master_key`: without it nobody could read /metrics",
            ));
        }
        Ok(ServerConfig {
            public_status,
            watch_config: watch_interval(self.watch_config_ms)?,
            listen: listen_address(self.listen)?,
            max_body_bytes: positive(self.max_body_bytes, "server.max_body_bytes", 10 << 20)?,
            max_response_bytes: positive(
                self.max_response_bytes,
                "server.max_response_bytes",
                64 << 20,
            )?,
            max_event_bytes: positive(self.max_event_bytes, "server.max_event_bytes", 4 << 20)?,
            shutdown_grace: MS(self.shutdown_grace_ms.unwrap_or(30_000)),
            request_read_timeout: MS(positive(
                self.request_read_timeout_ms,
                "server.request_read_timeout_ms",
                60_000,
            )?),
            max_connections: positive(self.max_connections, "server.max_connections", 10_000)?,
            max_requests_in_flight: match self.max_requests_in_flight {
                None => InFlight::ProvidersSum,
                Some(0) => InFlight::Unbounded,
                Some(n) => InFlight::At(n),
            },
            queue_timeout: MS(positive(
                self.queue_timeout_ms,
                "server.queue_timeout_ms",
                60_000,
            )?),
            max_upload_bytes: positive(
                self.max_upload_bytes,
                "server.max_upload_bytes",
                100 << 20,
            )?,
            upload_read_timeout: MS(positive(
                self.upload_read_timeout_ms,
                "server.upload_read_timeout_ms",
                600_000,
            )?),
            upload_dir: self.upload_dir.unwrap_or_else(std::env::temp_dir),
            log_format: self.log_format.unwrap_or_default(),
            master_key: self
                .master_key
                .as_deref()
                .map(|k| resolve_secret(k, env, "server.master_key"))
                .transpose()?,
        })
    }
}

/// `watch_config_ms` as written: off when absent or 0, at least [`MIN_WATCH_MS`].
fn watch_interval(ms: Option<u64>) -> Result<Option<Duration>, ConfigError> {
    match ms.unwrap_or(0) {
        0 => Ok(None),
        ms if ms < MIN_WATCH_MS => Err(ConfigError::new(
            "server.watch_config_ms",
            format!("must be 0 (off) or at least {MIN_WATCH_MS}"),
        )),
        ms => Ok(Some(MS(ms))),
    }
}

/// `listen` as written, `127.0.0.1:8080` when absent.
fn listen_address(listen: Option<String>) -> Result<SocketAddr, ConfigError> {
    match listen {
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 8080))),
        Some(l) => l.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("`{l}` is not an address such as `127.0.0.1:8080` or `[::1]:8080`"),
            )
        }),
    }
}
