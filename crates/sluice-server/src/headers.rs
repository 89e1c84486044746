//! The `x-sluice-*` headers sluice sends with every proxied answer.

use http::header::HeaderName;

/// `x-sluice-model`: the deployment that answered.
pub const X_SLUICE_MODEL: HeaderName = HeaderName::from_static("x-sluice-model");
/// `x-sluice-provider`.
pub const X_SLUICE_PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
/// `x-sluice-attempts`.
pub const X_SLUICE_ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
/// `x-sluice-route`.
pub const X_SLUICE_ROUTE: HeaderName = HeaderName::from_static("x-sluice-route");
/// `x-sluice-output-valid`: `false` on an answer that failed its JSON schema and was
/// passed (`validate_json = { on_failure = "pass" }`).
pub const X_SLUICE_OUTPUT_VALID: HeaderName = HeaderName::from_static("x-sluice-output-valid");
/// `x-sluice-output-invalid`: why that answer failed.
pub const X_SLUICE_OUTPUT_INVALID: HeaderName = HeaderName::from_static("x-sluice-output-invalid");
/// `x-sluice-degraded`.
pub const X_SLUICE_DEGRADED: HeaderName = HeaderName::from_static("x-sluice-degraded");
/// `x-sluice-cache`: `hit`, `miss` or `bypass` on responses; directives on requests.
pub const X_SLUICE_CACHE: HeaderName = HeaderName::from_static("x-sluice-cache");
/// `x-sluice-coalesced`: `true` when the answer came from an identical request in flight.
pub const X_SLUICE_COALESCED: HeaderName = HeaderName::from_static("x-sluice-coalesced");
/// `x-sluice-cache-age`: seconds since a cached answer was stored.
pub const X_SLUICE_CACHE_AGE: HeaderName = HeaderName::from_static("x-sluice-cache-age");
/// A semantic hit's cosine similarity to the cached question (4 decimals).
pub const X_SLUICE_CACHE_SIMILARITY: HeaderName =
    HeaderName::from_static("x-sluice-cache-similarity");
/// `x-sluice-cost-usd`: what the request cost (absent on streams, whose cost is known only
/// at their end: it follows `[DONE]` as an SSE comment).
pub const X_SLUICE_COST_USD: HeaderName = HeaderName::from_static("x-sluice-cost-usd");
