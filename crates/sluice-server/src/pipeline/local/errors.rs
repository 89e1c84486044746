//! The local runtime's refusals in the gateway's error types: a model overloaded or out of
//! memory (503 `model_overloaded` with Retry-After, retryable), a model file this gateway cannot
//! run (503 `model_unsupported`, naming the architecture, tensor type or engine that is
//! missing, or what is wrong with the file), a model that failed, a request for the wrong kind
//! of model, a bad parameter.

use sluice_core::{Error, ErrorKind};
use sluice_local::pool::{ModelKind, PoolErrorKind};
use std::time::Duration;

pub(super) fn overloaded(message: String, retry_after: Option<Duration>) -> Error {
    ErrorKind::Overloaded {
        message,
        // Never "retry now": at least a second.
        retry_after: retry_after.map(|d| d.max(Duration::from_secs(1))),
    }
    .into()
}

pub(super) fn pool_error(e: &sluice_local::pool::PoolError) -> Error {
    match e.kind() {
        PoolErrorKind::TooLarge { .. } | PoolErrorKind::BudgetBusy { .. } => {
            overloaded(e.to_string(), e.retry_after())
        }
        PoolErrorKind::NotFound { .. } => ErrorKind::ModelNotFound {
            model: e.to_string(),
        }
        .into(),
        PoolErrorKind::LoadFailed { source, .. } if cannot_run(source) => {
            ErrorKind::ModelUnsupported {
                message: e.to_string(),
            }
            .into()
        }
        _ => ErrorKind::UpstreamProtocol {
            provider: "local".into(),
            message: e.to_string(),
        }
        .into(),
    }
}

/// Whether a load failed on the file itself (valid but unsupported, or not a usable GGUF file),
/// not on the machine (I/O, a backend fault).
fn cannot_run(e: &sluice_local::Error) -> bool {
    use sluice_local::ErrorKind as K;
    e.is_unsupported()
        || matches!(
            e.kind(),
            K::InvalidFile { .. }
                | K::MissingMetadata(_)
                | K::InvalidMetadata { .. }
                | K::UnsupportedTokenizer(_)
                | K::Template(_)
        )
}

pub(super) fn model_error(e: &sluice_local::Error) -> Error {
    model_error_on(e, "messages")
}

/// A model's refusal or failure; a refused request names `prompt_param`, the field that holds
/// the prompt (`messages` for chat, `prompt` for text completions).
pub(super) fn model_error_on(e: &sluice_local::Error, prompt_param: &'static str) -> Error {
    if e.is_queue_full() {
        return overloaded(e.to_string(), Some(Duration::from_secs(1)));
    }
    match e.kind() {
        sluice_local::ErrorKind::InvalidRerank(_) => ErrorKind::InvalidRequest {
            message: e.to_string(),
            param: Some("documents"),
        }
        .into(),
        _ if e.is_invalid_request() => ErrorKind::InvalidRequest {
            message: e.to_string(),
            param: Some(prompt_param),
        }
        .into(),
        _ => ErrorKind::UpstreamProtocol {
            provider: "local".into(),
            message: e.to_string(),
        }
        .into(),
    }
}

pub(super) fn wrong_kind(model: &str, kind: ModelKind) -> Error {
    let message = match kind {
        ModelKind::Embedding => {
            format!("model `{model}` is an embedding model: use /v1/embeddings")
        }
        ModelKind::Chat => format!("model `{model}` is a chat model: use /v1/chat/completions"),
        ModelKind::Rerank => format!("model `{model}` is a reranker: use /v1/rerank"),
    };
    ErrorKind::InvalidRequest {
        message,
        param: Some("model"),
    }
    .into()
}

pub(super) fn invalid(message: String, param: &'static str) -> Error {
    ErrorKind::InvalidRequest {
        message,
        param: Some(param),
    }
    .into()
}
