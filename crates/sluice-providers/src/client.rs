//! The pooled, keep-alive HTTP client of one provider: HTTP/1.1 and HTTP/2 (ALPN over TLS,
//! or prior knowledge for h2c), rustls with the webpki roots, no OpenSSL.

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_core::config::ProviderConfig;

/// Body type of upstream requests: the (possibly spliced) client body, sent whole.
pub type UpstreamBody = Full<Bytes>;

/// One provider's connection pool.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Builds the pooled client for `config`.
pub fn build(config: &ProviderConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .http2_only(config.http2_prior_knowledge)
        .build(https)
}
