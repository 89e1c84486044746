//! `[observability]`: OpenTelemetry traces sent over OTLP/HTTP (protobuf) to a collector.

use super::error::ConfigError;
use super::values::{positive, MS};
use serde::Deserialize;
use std::time::Duration;

/// `[observability]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UninitializedObservabilityConfig {
    /// `http://HOST:PORT` of an OTLP/HTTP receiver; traces go to `<endpoint>/v1/traces`.
    /// Unset: no traces (the default).
    pub otlp_endpoint: Option<String>,
    /// The resource's `service.name` (default `sluice`).
    pub service_name: Option<String>,
    /// Finished requests waiting for the exporter, at most (default 4096); past it a
    /// request's spans are dropped and counted.
    pub otlp_queue: Option<usize>,
    /// Requests whose spans go in one export, at most (default 512).
    pub otlp_max_batch: Option<usize>,
    /// Longest wait before a batch that is not full is sent (default 1000 ms).
    pub otlp_flush_interval_ms: Option<u64>,
    /// Longest wait for the receiver's answer to one export (default 10000 ms).
    pub otlp_timeout_ms: Option<u64>,
    /// Share of requests whose bodies and answers are kept (0 to 1, default 0).
    pub sample_rate: Option<f64>,
    /// Days a sample is kept (default 7).
    pub sample_retention_days: Option<u64>,
    /// Largest body or answer kept whole, in bytes (default 65536); a larger one is kept as
    /// a note of its size.
    pub sample_max_bytes: Option<usize>,
}

/// Where traces go: an OTLP/HTTP receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// `HOST:PORT`, as the `Host` header and the address to connect to.
    pub authority: String,
    /// The request path (`/v1/traces` after the endpoint's own path).
    pub path: String,
}

/// Validated `[observability]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservabilityConfig {
    /// The OTLP receiver, when traces are on.
    pub otlp: Option<OtlpEndpoint>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Capacity of the exporter's queue, in requests.
    pub otlp_queue: usize,
    /// Requests per export, at most.
    pub otlp_max_batch: usize,
    /// Longest wait before a partial batch is sent.
    pub otlp_flush_interval: Duration,
    /// Longest wait for one export.
    pub otlp_timeout: Duration,
    /// Share of requests sampled (0: none, the default).
    pub sample_rate: f64,
    /// How long samples are kept.
    pub sample_retention: Duration,
    /// Largest body kept whole.
    pub sample_max_bytes: usize,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            otlp: None,
            service_name: "sluice".into(),
            otlp_queue: 4096,
            otlp_max_batch: 512,
            otlp_flush_interval: Duration::from_millis(1000),
            otlp_timeout: Duration::from_millis(10_000),
            sample_rate: 0.0,
            sample_retention: Duration::from_secs(7 * 86_400),
            sample_max_bytes: 65_536,
        }
    }
}

impl UninitializedObservabilityConfig {
    pub(crate) fn load(self) -> Result<ObservabilityConfig, ConfigError> {
        let d = ObservabilityConfig::default();
        let otlp = match self.otlp_endpoint.as_deref() {
            None | Some("") => None,
            Some(url) => Some(
                endpoint(url).map_err(|m| ConfigError::new("observability.otlp_endpoint", m))?,
            ),
        };
        let service_name = match self.service_name {
            Some(s) if s.trim().is_empty() => {
                return Err(ConfigError::new(
                    "observability.service_name",
                    "must not be empty",
                ))
            }
            Some(s) => s,
            None => d.service_name,
        };
        let sample_rate = match self.sample_rate {
            Some(r) if !(0.0..=1.0).contains(&r) => {
                return Err(ConfigError::new(
                    "observability.sample_rate",
                    "must be between 0 and 1 (the share of requests sampled)",
                ))
            }
            Some(r) => r,
            None => d.sample_rate,
        };
        let days = positive(
            self.sample_retention_days,
            "observability.sample_retention_days",
            7,
        )?;
        Ok(ObservabilityConfig {
            sample_rate,
            sample_retention: Duration::from_secs(days.saturating_mul(86_400)),
            sample_max_bytes: positive(
                self.sample_max_bytes,
                "observability.sample_max_bytes",
                d.sample_max_bytes,
            )?,
            otlp,
            service_name,
            otlp_queue: positive(self.otlp_queue, "observability.otlp_queue", d.otlp_queue)?,
            otlp_max_batch: positive(
                self.otlp_max_batch,
                "observability.otlp_max_batch",
                d.otlp_max_batch,
            )?,
            otlp_flush_interval: MS(positive(
                self.otlp_flush_interval_ms,
                "observability.otlp_flush_interval_ms",
                1000,
            )?),
            otlp_timeout: MS(positive(
                self.otlp_timeout_ms,
                "observability.otlp_timeout_ms",
                10_000,
            )?),
        })
    }
}

/// `http://HOST:PORT[/path]` read into where to connect and what to ask for.
fn endpoint(url: &str) -> Result<OtlpEndpoint, String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "scheme `{scheme}` is not supported: OTLP is sent over plain `http://` (put a collector on this host or network for TLS)"
            ))
        }
        None => return Err(format!("`{url}` is not a URL: expected `http://HOST:PORT`")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
        _ => {
            return Err(format!(
                "`{url}` must name a host and a port: `http://HOST:PORT` (4318 is OTLP/HTTP's usual one)"
            ))
        }
    }
    if path.contains(['?', '#']) {
        return Err(format!("`{url}`: no query or fragment, please"));
    }
    Ok(OtlpEndpoint {
        authority: authority.to_string(),
        path: format!("{}/v1/traces", path.trim_end_matches('/')),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = endpoint("http://127.0.0.1:4318").unwrap();
        assert_eq!(e.authority, "127.0.0.1:4318");
        assert_eq!(e.path, "/v1/traces");
        assert_eq!(endpoint("http://c:1/").unwrap().path, "/v1/traces");
        assert_eq!(
            endpoint("http://c:1/otel/").unwrap().path,
            "/otel/v1/traces"
        );
        assert_eq!(
            endpoint("http://[::1]:4318").unwrap().authority,
            "[::1]:4318"
        );
        for bad in [
            "https://c:4318",
            "c:4318",
            "http://c",
            "http://:4318",
            "http://c:0",
            "http://c:1/?a",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_zeroes() {
        let c = UninitializedObservabilityConfig::default().load().unwrap();
        assert_eq!(c, ObservabilityConfig::default());
        let zero = UninitializedObservabilityConfig {
            otlp_max_batch: Some(0),
            ..Default::default()
        };
        assert_eq!(
            zero.load().unwrap_err().path,
            "observability.otlp_max_batch"
        );
    }

    #[test]
    fn sampling() {
        let c = UninitializedObservabilityConfig {
            sample_rate: Some(0.25),
            sample_retention_days: Some(2),
            ..Default::default()
        };
        let c = c.load().unwrap();
        assert_eq!(c.sample_rate, 0.25);
        assert_eq!(c.sample_retention, Duration::from_secs(2 * 86_400));
        assert_eq!(c.sample_max_bytes, 65_536);
        for (rate, days, max) in [
            (Some(1.5), None, None),
            (Some(-0.1), None, None),
            (Some(f64::NAN), None, None),
            (None, Some(0), None),
            (None, None, Some(0)),
        ] {
            let c = UninitializedObservabilityConfig {
                sample_rate: rate,
                sample_retention_days: days,
                sample_max_bytes: max,
                ..Default::default()
            };
            assert!(c
                .load()
                .unwrap_err()
                .path
                .starts_with("observability.sample_"));
        }
    }
}
