//! Every error a request can end in, and its HTTP mapping in one place.
//!
//! `Error` boxes its kind so that `Result<T, Error>` stays one pointer wide on the hot path.
//! [`Error::status_code`] is the single table from kind to HTTP status; the body is always
//! OpenAI's `{"error":{"message","type","param","code"}}`.

use std::fmt;
use std::time::Duration;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    // --- invalid request (4xx caused by the client) ---
    /// Malformed JSON, a missing or mistyped field.
    InvalidRequest {
        /// What is wrong.
        message: String,
        /// The field at fault.
        param: Option<&'static str>,
    },
    /// Missing or wrong credentials.
    Authentication {
        /// What is wrong.
        message: String,
    },
    /// The credentials may not do this.
    Permission {
        /// What is refused.
        message: String,
    },
    /// Body larger than `server.max_body_bytes` (or, for uploads, `server.max_upload_bytes`).
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
        /// The setting that holds it.
        setting: &'static str,
    },
    /// The request names a model or route that is not configured.
    ModelNotFound {
        /// What the client sent.
        model: String,
    },
    /// No such endpoint.
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The endpoint exists but not with this method.
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// The client did not send its request body in time.
    ClientTimeout {
        /// The limit that was hit.
        limit_ms: u64,
    },
    // --- provider ---
    /// The upstream answered with an error status; 4xx are passed through, 5xx become 502.
    UpstreamStatus {
        /// Provider name.
        provider: String,
        /// The upstream's status.
        status: u16,
        /// The upstream's message.
        message: String,
        /// The upstream's `error.type`, if it sent one.
        kind: Option<String>,
        /// The upstream's `error.code`, if it sent one.
        code: Option<String>,
        /// The upstream's `error.param`, if it sent one.
        param: Option<String>,
        /// The upstream's `Retry-After` (or `retry-after-ms`), passed on with 429 and 503.
        retry_after: Option<Duration>,
    },
    /// The upstream could not be reached, or broke the connection.
    UpstreamConnect {
        /// Provider name.
        provider: String,
        /// What happened.
        message: String,
    },
    /// The upstream did not answer, or stopped sending, within its timeout.
    UpstreamTimeout {
        /// Provider name.
        provider: String,
        /// Which timeout fired.
        message: String,
    },
    /// The upstream answered with something that is not a valid response.
    UpstreamProtocol {
        /// Provider name.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
    // --- limits ---
    /// Every deployment that could answer is cooling down after a rate limit (later: a
    /// key's own limits).
    RateLimited {
        /// Why.
        message: String,
        /// How long until a retry may succeed.
        retry_after: Option<Duration>,
    },
    /// A virtual key's budget would be exceeded.
    BudgetExceeded {
        /// Why.
        message: String,
        /// How long until the budget resets (none for a total budget).
        retry_after: Option<Duration>,
    },
    // --- server ---
    /// A local model cannot take the request now: its queue is full, or loading it would
    /// exceed the memory budget while the models holding the memory are in use, or it does
    /// not fit the budget at all. Another deployment may answer.
    Overloaded {
        /// Why.
        message: String,
        /// How long until a retry may succeed.
        retry_after: Option<Duration>,
    },
    /// A guardrail refused the request (or its answer): nothing was sent upstream (or to
    /// the client). Names the guardrail and the detector, never the value.
    GuardrailBlocked {
        /// The guardrail.
        guardrail: String,
        /// The detector that found something.
        detector: String,
        /// The answer was refused, not the request.
        answer: bool,
    },
    /// The answer did not validate against the request's JSON schema (after the retries a
    /// `validate_json` guardrail allows): a 502 that says why.
    OutputInvalid {
        /// The guardrail.
        guardrail: String,
        /// Where and why it failed.
        reason: String,
    },
    /// The provider a deployment lives on has no API for the endpoint (Anthropic has no
    /// embeddings, Ollama no speech): a 404 naming the provider; a route falls back past it.
    EndpointUnsupported {
        /// Provider name.
        provider: String,
        /// Its `type`.
        kind: &'static str,
        /// The endpoint, as its path.
        endpoint: &'static str,
    },
    /// A local model whose file this gateway cannot run: an unsupported architecture or tensor
    /// type, or an engine that cannot run it. Another deployment may answer.
    ModelUnsupported {
        /// What is missing.
        message: String,
    },
    /// The gateway is shutting down or otherwise cannot take the request.
    Unavailable {
        /// Why.
        message: String,
    },
    /// A fault inside sluice.
    Internal {
        /// What failed.
        message: String,
    },
}

/// A request's error. See [`ErrorKind`].
#[derive(Clone, PartialEq, Eq)]
pub struct Error(Box<ErrorKind>);

impl Error {
    /// A 400 `invalid_request_error` about field `param`.
    pub fn invalid_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ErrorKind::InvalidRequest {
            message: message.into(),
            param,
        }
        .into()
    }

    /// The kind.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// HTTP status for this error: the one table of the mapping.
    pub fn status_code(&self) -> u16 {
        match &*self.0 {
            ErrorKind::InvalidRequest { .. } | ErrorKind::GuardrailBlocked { .. } => 400,
            ErrorKind::Authentication { .. } => 401,
            ErrorKind::Permission { .. } => 403,
            ErrorKind::PayloadTooLarge { .. } => 413,
            ErrorKind::ModelNotFound { .. }
            | ErrorKind::NotFound { .. }
            | ErrorKind::EndpointUnsupported { .. } => 404,
            ErrorKind::MethodNotAllowed { .. } => 405,
            ErrorKind::ClientTimeout { .. } => 408,
            ErrorKind::UpstreamStatus { status, .. } if (400..500).contains(status) => *status,
            ErrorKind::UpstreamStatus { .. }
            | ErrorKind::UpstreamConnect { .. }
            | ErrorKind::UpstreamProtocol { .. }
            | ErrorKind::OutputInvalid { .. } => 502,
            ErrorKind::UpstreamTimeout { .. } => 504,
            ErrorKind::RateLimited { .. } | ErrorKind::BudgetExceeded { .. } => 429,
            ErrorKind::Unavailable { .. }
            | ErrorKind::Overloaded { .. }
            | ErrorKind::ModelUnsupported { .. } => 503,
            ErrorKind::Internal { .. } => 500,
        }
    }

    /// `error.type` in the body.
    pub fn error_type(&self) -> &str {
        match &*self.0 {
            ErrorKind::InvalidRequest { .. }
            | ErrorKind::ClientTimeout { .. }
            | ErrorKind::GuardrailBlocked { .. }
            | ErrorKind::MethodNotAllowed { .. } => "invalid_request_error",
            ErrorKind::PayloadTooLarge { .. } => "request_too_large",
            ErrorKind::Authentication { .. } => "authentication_error",
            ErrorKind::Permission { .. } => "permission_error",
            ErrorKind::ModelNotFound { .. }
            | ErrorKind::NotFound { .. }
            | ErrorKind::EndpointUnsupported { .. } => "not_found_error",
            ErrorKind::UpstreamStatus {
                status,
                kind: Some(kind),
                ..
            } if *status < 500 => kind,
            ErrorKind::UpstreamStatus { status, .. } => match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                400..=499 => "invalid_request_error",
                _ => "upstream_error",
            },
            ErrorKind::UpstreamConnect { .. }
            | ErrorKind::UpstreamProtocol { .. }
            | ErrorKind::OutputInvalid { .. } => "upstream_error",
            ErrorKind::UpstreamTimeout { .. } => "timeout_error",
            ErrorKind::RateLimited { .. } => "rate_limit_error",
            ErrorKind::BudgetExceeded { .. } => "insufficient_quota",
            ErrorKind::Unavailable { .. }
            | ErrorKind::Overloaded { .. }
            | ErrorKind::ModelUnsupported { .. } => "service_unavailable",
            ErrorKind::Internal { .. } => "server_error",
        }
    }

    /// `error.param` in the body.
    pub fn param(&self) -> Option<&str> {
        match &*self.0 {
            ErrorKind::InvalidRequest { param, .. } => *param,
            ErrorKind::ModelNotFound { .. } | ErrorKind::ModelUnsupported { .. } => Some("model"),
            ErrorKind::UpstreamStatus { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// `error.code` in the body.
    pub fn code(&self) -> Option<&str> {
        match &*self.0 {
            ErrorKind::ModelNotFound { .. } => Some("model_not_found"),
            ErrorKind::PayloadTooLarge { .. } => Some("request_too_large"),
            ErrorKind::UpstreamStatus { code, .. } => code.as_deref(),
            ErrorKind::UpstreamConnect { .. } => Some("upstream_unreachable"),
            ErrorKind::UpstreamTimeout { .. } => Some("upstream_timeout"),
            ErrorKind::UpstreamProtocol { .. } => Some("upstream_bad_response"),
            ErrorKind::RateLimited { .. } => Some("rate_limit_exceeded"),
            ErrorKind::BudgetExceeded { .. } => Some("budget_exceeded"),
            ErrorKind::Authentication { .. } => Some("invalid_api_key"),
            ErrorKind::Overloaded { .. } => Some("model_overloaded"),
            ErrorKind::ModelUnsupported { .. } => Some("model_unsupported"),
            ErrorKind::EndpointUnsupported { .. } => Some("endpoint_not_supported"),
            ErrorKind::GuardrailBlocked { .. } => Some("guardrail_blocked"),
            ErrorKind::OutputInvalid { .. } => Some("output_validation_failed"),
            _ => None,
        }
    }

    /// How long the client should wait before retrying; the HTTP layer writes it as
    /// `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match &*self.0 {
            ErrorKind::UpstreamStatus { retry_after, .. }
            | ErrorKind::RateLimited { retry_after, .. }
            | ErrorKind::BudgetExceeded { retry_after, .. }
            | ErrorKind::Overloaded { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match &*self.0 {
            ErrorKind::InvalidRequest { .. } => "invalid_request",
            ErrorKind::Authentication { .. } => "authentication",
            ErrorKind::Permission { .. } => "permission",
            ErrorKind::PayloadTooLarge { .. } => "payload_too_large",
            ErrorKind::ModelNotFound { .. } => "model_not_found",
            ErrorKind::NotFound { .. } => "not_found",
            ErrorKind::MethodNotAllowed { .. } => "method_not_allowed",
            ErrorKind::ClientTimeout { .. } => "client_timeout",
            ErrorKind::UpstreamStatus { status, .. } if *status == 429 => "upstream_rate_limited",
            ErrorKind::UpstreamStatus { status, .. } if *status < 500 => "upstream_4xx",
            ErrorKind::UpstreamStatus { .. } => "upstream_5xx",
            ErrorKind::UpstreamConnect { .. } => "upstream_connect",
            ErrorKind::UpstreamTimeout { .. } => "upstream_timeout",
            ErrorKind::UpstreamProtocol { .. } => "upstream_protocol",
            ErrorKind::Unavailable { .. } => "unavailable",
            ErrorKind::Overloaded { .. } => "overloaded",
            ErrorKind::ModelUnsupported { .. } => "model_unsupported",
            ErrorKind::EndpointUnsupported { .. } => "endpoint_unsupported",
            ErrorKind::GuardrailBlocked { .. } => "guardrail_blocked",
            ErrorKind::OutputInvalid { .. } => "output_invalid",
            ErrorKind::RateLimited { .. } => "rate_limited",
            ErrorKind::BudgetExceeded { .. } => "budget_exceeded",
            ErrorKind::Internal { .. } => "internal",
        }
    }

    /// Whether a later attempt (another try, another deployment) may succeed where this
    /// one failed: connection failures, timeouts, 429, 408, 409 and 5xx. Never the
    /// client's own mistakes.
    pub fn is_retryable(&self) -> bool {
        match &*self.0 {
            ErrorKind::UpstreamStatus { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            ErrorKind::UpstreamConnect { .. }
            | ErrorKind::UpstreamTimeout { .. }
            | ErrorKind::UpstreamProtocol { .. }
            | ErrorKind::Overloaded { .. } => true,
            _ => false,
        }
    }

    /// Whether another deployment may succeed where this one failed: every retryable
    /// failure, and the failures that belong to one deployment rather than to the request
    /// (its key is refused, it does not know the model, the prompt exceeds its context, it
    /// cannot run the local model's file).
    pub fn allows_fallback(&self) -> bool {
        if self.is_retryable() {
            return true;
        }
        match &*self.0 {
            ErrorKind::UpstreamStatus { status, code, .. } => {
                matches!(status, 401 | 403 | 404 | 413)
                    || code.as_deref() == Some("context_length_exceeded")
            }
            ErrorKind::ModelUnsupported { .. } | ErrorKind::EndpointUnsupported { .. } => true,
            _ => false,
        }
    }

    /// The upstream answered 429.
    pub fn is_rate_limited(&self) -> bool {
        matches!(&*self.0, ErrorKind::UpstreamStatus { status: 429, .. })
    }

    /// Whether the failure counts against the deployment's circuit breaker: connection
    /// failures, timeouts, bad responses and 5xx. A 429 is a cooldown instead, and a 4xx is
    /// about the request.
    pub fn counts_against_deployment(&self) -> bool {
        match &*self.0 {
            ErrorKind::UpstreamStatus { status, .. } => *status >= 500,
            ErrorKind::UpstreamConnect { .. }
            | ErrorKind::UpstreamTimeout { .. }
            | ErrorKind::UpstreamProtocol { .. } => true,
            _ => false,
        }
    }

    /// The message shown to the client.
    pub fn message(&self) -> String {
        match &*self.0 {
            ErrorKind::InvalidRequest { message, .. } => message.clone(),
            ErrorKind::PayloadTooLarge { limit, setting } => {
                format!("request body is larger than the limit of {limit} bytes (`{setting}`)")
            }
            ErrorKind::GuardrailBlocked {
                guardrail,
                detector,
                answer,
            } => format!(
                "{} blocked by guardrail `{guardrail}`: detector `{detector}` found a value it guards",
                if *answer { "the answer was" } else { "the request was" }
            ),
            ErrorKind::OutputInvalid { guardrail, reason } => format!(
                "the answer does not match the request's JSON schema (guardrail `{guardrail}`): {reason}"
            ),
            ErrorKind::EndpointUnsupported {
                provider,
                kind,
                endpoint,
            } => format!(
                "provider `{provider}` (type `{kind}`) does not serve {endpoint}"
            ),
            ErrorKind::ModelNotFound { model } => format!(
                "the model `{model}` does not exist: it is not a configured model or route (see GET /v1/models)"
            ),
            ErrorKind::NotFound { path } => format!("no endpoint at `{path}`"),
            ErrorKind::MethodNotAllowed { method, path } => {
                format!("`{path}` does not accept {method}")
            }
            ErrorKind::ClientTimeout { limit_ms } => format!(
                "the request body was not received within {limit_ms} ms (`server.request_read_timeout_ms`)"
            ),
            ErrorKind::UpstreamStatus {
                provider,
                status,
                message,
                ..
            } => {
                if *status < 500 {
                    message.clone()
                } else {
                    format!("upstream `{provider}` failed with status {status}: {message}")
                }
            }
            ErrorKind::UpstreamConnect { provider, message } => {
                format!("upstream `{provider}` could not be reached: {message}")
            }
            ErrorKind::UpstreamTimeout { provider, message } => {
                format!("upstream `{provider}` timed out: {message}")
            }
            ErrorKind::UpstreamProtocol { provider, message } => {
                format!("upstream `{provider}` sent an invalid response: {message}")
            }
            ErrorKind::Unavailable { message }
            | ErrorKind::ModelUnsupported { message }
            | ErrorKind::RateLimited { message, .. }
            | ErrorKind::BudgetExceeded { message, .. }
            | ErrorKind::Overloaded { message, .. }
            | ErrorKind::Internal { message }
            | ErrorKind::Authentication { message }
            | ErrorKind::Permission { message } => {
                message.clone()
            }
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self(Box::new(kind))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16) -> Error {
        ErrorKind::UpstreamStatus {
            provider: "p".into(),
            status,
            message: "m".into(),
            kind: None,
            code: None,
            param: None,
            retry_after: Some(Duration::from_secs(3)),
        }
        .into()
    }

    #[test]
    fn statuses() {
        assert_eq!(upstream(429).status_code(), 429);
        assert_eq!(upstream(429).retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(upstream(401).status_code(), 401);
        assert_eq!(upstream(500).status_code(), 502);
        assert_eq!(upstream(503).status_code(), 502);
        assert!(upstream(500).is_retryable());
        assert!(upstream(429).is_retryable());
        assert!(!upstream(400).is_retryable());
        let t: Error = ErrorKind::UpstreamTimeout {
            provider: "p".into(),
            message: "x".into(),
        }
        .into();
        assert_eq!(t.status_code(), 504);
        let big: Error = ErrorKind::PayloadTooLarge {
            limit: 10,
            setting: "server.max_body_bytes",
        }
        .into();
        assert_eq!(big.status_code(), 413);
        assert!(std::mem::size_of::<Result<(), Error>>() <= 8);
    }

    #[test]
    fn an_unsupported_local_model_is_a_503_that_says_so() {
        let e: Error = ErrorKind::ModelUnsupported {
            message: "unsupported model architecture `gemma3`".into(),
        }
        .into();
        assert_eq!(e.status_code(), 503);
        assert_eq!(e.code(), Some("model_unsupported"));
        assert_eq!(e.param(), Some("model"));
        assert_eq!(e.error_type(), "service_unavailable");
        assert!(!e.is_retryable() && e.allows_fallback() && !e.counts_against_deployment());
        assert!(e.message().contains("gemma3"));
    }
}
