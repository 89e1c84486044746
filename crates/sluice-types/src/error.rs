//! The OpenAI error shape: `{"error":{"message","type","param","code"}}`.

use serde::Serialize;

/// The `error.type` values sluice answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// 400: the request is malformed or names a field wrongly.
    InvalidRequest,
    /// 401: missing or wrong credentials.
    Authentication,
    /// 403: the credentials may not do this.
    Permission,
    /// 404: unknown model or path.
    NotFound,
    /// 413: body over the configured limit.
    RequestTooLarge,
    /// 429: a limit was hit.
    RateLimit,
    /// 502: the upstream failed or could not be reached.
    Upstream,
    /// 503: nothing can serve the request right now.
    Unavailable,
    /// 504: the upstream did not answer in time.
    Timeout,
    /// 500: a fault inside sluice.
    Server,
}

impl ErrorType {
    /// The string sent in `error.type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimit => "rate_limit_error",
            Self::Upstream => "upstream_error",
            Self::Unavailable => "service_unavailable",
            Self::Timeout => "timeout_error",
            Self::Server => "server_error",
        }
    }
}

/// An error body ready to serialise.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody<'a> {
    /// Human-readable message.
    pub message: &'a str,
    /// One of [`ErrorType::as_str`], or an upstream's own type when passed through.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The request field at fault.
    pub param: Option<&'a str>,
    /// A machine-readable code.
    pub code: Option<&'a str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorBody<'a>,
}

impl ErrorBody<'_> {
    /// `{"error":{...}}` as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and options into a Vec cannot fail.
        serde_json::to_vec(&Envelope { error: self }).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_openai_shape() {
        let body = ErrorBody {
            message: "bad \"thing\"",
            kind: ErrorType::InvalidRequest.as_str(),
            param: Some("model"),
            code: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&body.to_json()).unwrap();
        assert_eq!(v["error"]["message"], "bad \"thing\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["code"].is_null());
    }
}
