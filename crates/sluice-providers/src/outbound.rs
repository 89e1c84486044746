//! The upstream HTTP request every adapter sends: a URI from `base_url`, the provider's
//! fixed headers (built once, secrets marked sensitive) and a `POST` of the body.

use crate::client::UpstreamBody;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Uri};
use sluice_core::config::ProviderConfig;
use sluice_core::{Error, ErrorKind};

pub(crate) fn invalid(config: &ProviderConfig, what: &str) -> Error {
    ErrorKind::Internal {
        message: format!("provider `{}`: {what}", config.name),
    }
    .into()
}

/// `base_url` + `path` as a URI.
pub(crate) fn uri(config: &ProviderConfig, path: &str) -> Result<Uri, Error> {
    format!("{}{path}", config.base_url)
        .parse()
        .map_err(|_| invalid(config, "`base_url` does not form a valid URI"))
}

/// The headers every request of a provider carries: JSON content type, the key under
/// `auth` (`(name, value)`), and the configured extra headers. Secrets are marked sensitive.
pub(crate) fn static_headers(
    config: &ProviderConfig,
    auth: Option<(HeaderName, String)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    if let Some((name, value)) = auth {
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| invalid(config, "`api_key` is not a valid header value"))?;
        v.set_sensitive(true);
        headers.push((name, v));
    }
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(config, "header name is invalid"))?;
        let mut value = HeaderValue::from_str(value.expose())
            .map_err(|_| invalid(config, "header value is invalid"))?;
        value.set_sensitive(true);
        headers.push((name, value));
    }
    Ok(headers)
}

/// A `GET` of `uri` with `headers` and the request id (a health check's model list).
pub(crate) fn get(
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    request_id: &HeaderValue,
) -> Request<UpstreamBody> {
    let mut req = post(uri, headers, Bytes::new(), request_id);
    *req.method_mut() = Method::GET;
    req.headers_mut().remove(CONTENT_TYPE);
    req
}

/// A `POST` of `body` to `uri` with `headers` and the request id.
pub(crate) fn post(
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    request_id: &HeaderValue,
) -> Request<UpstreamBody> {
    let mut req = Request::new(UpstreamBody::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.clone();
    let h = req.headers_mut();
    h.reserve(headers.len() + 1);
    for (name, value) in headers {
        h.insert(name.clone(), value.clone());
    }
    h.insert(HeaderName::from_static("x-request-id"), request_id.clone());
    req
}
