//! The web console at `/ui`: a few static files (HTML, JavaScript modules, CSS and the
//! vendored uPlot bundle, under `crates/sluice-server/ui/`) built into the binary, so there
//! is nothing else to run or deploy.
//!
//! Invariants: the files hold no data (every number the console shows comes from an admin
//! JSON call that carries the master key, which the page keeps in `sessionStorage`; the
//! server sets no cookie); every answer under `/ui` carries a Content-Security-Policy that
//! allows scripts, styles and calls from this origin only (so no inline script runs),
//! `X-Content-Type-Options: nosniff`, the file's exact content type and cache headers: the
//! console's own files are revalidated each time (`no-cache` and an `ETag` of their
//! content, answered `304` when unchanged), the vendored bundle, whose path carries its
//! version, is cached for a year.

use crate::response::ResponseBody;
use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Method, Response, StatusCode};

/// The policy of every answer under `/ui`: this origin's scripts, styles, images and calls
/// only; no inline script, no plugin, no framing, no form sent elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its path under `/ui/` (`""` is the page itself).
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    /// FNV-1a of the body, computed at compile time.
    hash: u64,
    /// The path names a version: cache it for good.
    immutable: bool,
}

/// FNV-1a, 64 bits: an `ETag` that changes when the file does.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($path:literal => $file:literal, $content_type:literal, $immutable:literal) => {
        Asset {
            path: $path,
            body: include_bytes!(concat!("../ui/", $file)),
            content_type: $content_type,
            hash: fnv1a(include_bytes!(concat!("../ui/", $file))),
            immutable: $immutable,
        }
    };
    ($path:literal, $content_type:literal) => {
        asset!($path => $path, $content_type, false)
    };
}

/// The console's files.
static ASSETS: &[Asset] = &[
    asset!("" => "index.html", "text/html; charset=utf-8", false),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("chart.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("format.js", "text/javascript; charset=utf-8"),
    asset!("prometheus.js", "text/javascript; charset=utf-8"),
    asset!("overview.js", "text/javascript; charset=utf-8"),
    asset!("spend.js", "text/javascript; charset=utf-8"),
    asset!("requests.js", "text/javascript; charset=utf-8"),
    asset!("keys.js", "text/javascript; charset=utf-8"),
    asset!("routes.js", "text/javascript; charset=utf-8"),
    asset!("cache.js", "text/javascript; charset=utf-8"),
    asset!("models.js", "text/javascript; charset=utf-8"),
    asset!(
        "vendor/uplot-1.6.32/uPlot.iife.min.js" => "vendor/uplot-1.6.32/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        true
    ),
    asset!(
        "vendor/uplot-1.6.32/uPlot.min.css" => "vendor/uplot-1.6.32/uPlot.min.css",
        "text/css; charset=utf-8",
        true
    ),
    asset!(
        "vendor/uplot-1.6.32/LICENSE" => "vendor/uplot-1.6.32/LICENSE",
        "text/plain; charset=utf-8",
        true
    ),
];

/// Whether `path` is the console's: `/ui` or under `/ui/`.
pub fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Serves `path` (see [`is_console_path`]) to a `GET` or `HEAD`.
pub fn serve(method: &Method, path: &str, headers: &http::HeaderMap) -> Response<ResponseBody> {
    let name = path
        .strip_prefix("/ui")
        .unwrap_or_default()
        .trim_start_matches('/');
    let mut response = match ASSETS.iter().find(|a| a.path == name) {
        _ if method != Method::GET && method != Method::HEAD => {
            crate::handlers::method_not_allowed(method, path, "GET, HEAD")
        }
        None => crate::handlers::not_found(path),
        Some(asset) => file(asset, headers),
    };
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// One file's answer: the file, or `304` when the client's copy is this one.
fn file(asset: &Asset, headers: &http::HeaderMap) -> Response<ResponseBody> {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, ResponseBody::full(&b""[..]))
    } else {
        // hyper sends no body to a `HEAD`, with this one's length.
        (StatusCode::OK, ResponseBody::full(asset.body))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const JS: &str = "text/javascript; charset=utf-8";

    #[test]
    fn every_path_is_unique_and_typed() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(
                ASSETS[i + 1..].iter().all(|b| b.path != a.path),
                "{}",
                a.path
            );
            assert!(!a.body.is_empty(), "{}", a.path);
            let ext = a.path.rsplit('.').next().unwrap_or_default();
            let want = match ext {
                "js" => JS,
                "css" => "text/css; charset=utf-8",
                "" => "text/html; charset=utf-8",
                _ => "text/plain; charset=utf-8",
            };
            assert_eq!(a.content_type, want, "{}", a.path);
        }
    }
}
