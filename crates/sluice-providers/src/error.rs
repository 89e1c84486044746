//! Upstream failures into sluice errors: transport errors, and error responses in the
//! shapes OpenAI-compatible servers send (`{"error":{...}}`, `{"error":"..."}`,
//! `{"message":...}`, `{"detail":...}`, or plain text).

use serde_json::Value;
use sluice_core::{Error, ErrorKind};
use std::time::Duration;

/// Longest upstream error message passed on.
const MAX_MESSAGE: usize = 2048;

/// Why a request cannot be expressed in a provider's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable(pub String);

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// An upstream's error response as an error, with its message, type, code and param kept,
/// and `retry_after` read from its `Retry-After` / `retry-after-ms` headers.
pub fn from_response(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (mut message, mut kind, mut code, mut param) = (None, None, None, None);
    if let Some(v) = &parsed {
        // Some servers wrap the error in a one-element array.
        let v = v.as_array().and_then(|a| a.first()).unwrap_or(v);
        match v.get("error") {
            Some(Value::Object(e)) => {
                message = e.get("message").and_then(as_text);
                kind = e.get("type").and_then(as_text);
                // Google's shape (`{"code": 400, "status": "INVALID_ARGUMENT"}`): the
                // status names the error, the code only repeats the HTTP status.
                code = match (e.get("code"), e.get("status")) {
                    (Some(Value::Number(_)), Some(Value::String(s))) => Some(s.clone()),
                    (c, _) => c.and_then(as_text),
                };
                param = e.get("param").and_then(as_text);
            }
            Some(other) => message = as_text(other),
            None => {
                message = v
                    .get("message")
                    .or_else(|| v.get("detail"))
                    .and_then(as_text);
            }
        }
    }
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body).trim().to_string();
        if text.is_empty() {
            format!("upstream returned status {status} with an empty body")
        } else {
            text
        }
    });
    ErrorKind::UpstreamStatus {
        provider: provider.to_string(),
        status,
        message: truncate(message),
        kind,
        code,
        param,
        retry_after,
    }
    .into()
}

/// A transport failure of the pooled client.
pub fn from_transport(provider: &str, err: &hyper_util::client::legacy::Error) -> Error {
    let detail = chain(err);
    if err.is_connect() {
        ErrorKind::UpstreamConnect {
            provider: provider.to_string(),
            message: detail,
        }
    } else {
        ErrorKind::UpstreamConnect {
            provider: provider.to_string(),
            message: format!("connection failed before a response: {detail}"),
        }
    }
    .into()
}

/// A connection that could not be made (the driven HTTP/1.1 client's).
pub fn from_connect(provider: &str, err: &(dyn std::error::Error + 'static)) -> Error {
    ErrorKind::UpstreamConnect {
        provider: provider.to_string(),
        message: format!("client error (Connect): {}", chain(err)),
    }
    .into()
}

/// An exchange that failed before a response head (the driven HTTP/1.1 client's).
pub fn from_exchange(provider: &str, err: &(dyn std::error::Error + 'static)) -> Error {
    ErrorKind::UpstreamConnect {
        provider: provider.to_string(),
        message: format!("connection failed before a response: {}", chain(err)),
    }
    .into()
}

/// An error and its sources, `: `-separated.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = from_response("p", 400, None, br#"{"error":{"message":"bad","type":"invalid_request_error","code":"x","param":"model"}}"#);
        assert_eq!(e.message(), "bad");
        assert_eq!(e.error_type(), "invalid_request_error");
        assert_eq!(e.code(), Some("x"));
        assert_eq!(e.param(), Some("model"));
        assert_eq!(
            from_response("p", 404, None, br#"{"error":"nope"}"#).message(),
            "nope"
        );
        assert_eq!(
            from_response("p", 422, None, br#"{"detail":[{"msg":"x"}]}"#).message(),
            r#"[{"msg":"x"}]"#
        );
        assert_eq!(from_response("p", 400, None, b"plain").message(), "plain");
        let e = from_response("p", 500, None, b"");
        assert_eq!(e.status_code(), 502);
        assert!(e.message().contains("status 500"));
        let e = from_response(
            "p",
            429,
            Some(Duration::from_secs(7)),
            br#"[{"error":{"message":"slow down","code":429}}]"#,
        );
        assert_eq!(e.message(), "slow down");
        assert_eq!(e.code(), Some("429"));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let e = from_response(
            "p",
            400,
            None,
            br#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(e.code(), Some("INVALID_ARGUMENT"));
    }
}
