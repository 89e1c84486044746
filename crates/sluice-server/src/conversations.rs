//! Stored Responses API responses as the gateway uses them (the store is
//! `sluice_store::responses`): who owns one, what continuing one with
//! `previous_response_id` finds (404 in OpenAI's shape when there is none for the owner,
//! 400 saying why when it was not stored), what a new response keeps, and a store's
//! failure as the client sees it.

use bytes::Bytes;
use sluice_core::{Error, ErrorKind};
use sluice_store::files::unix_now_s;
use sluice_store::responses::{Content, Kept, NewResponse, Pending, ResponseStore, Withheld};
use sluice_store::{Owner, StoreError};

/// The owner of what `key_id` (a virtual key's id, or none: the master key, or anyone on a
/// gateway without keys) makes.
pub fn owner(key_id: Option<&str>) -> Owner {
    match key_id {
        Some(id) => Owner::Key(id.to_owned()),
        None => Owner::Master,
    }
}

/// What `previous_response_id` names: the response's stored content.
#[derive(Debug)]
pub struct Previous {
    /// The chat messages that continue it.
    pub conversation: Bytes,
    /// Its input items.
    pub input_items: Bytes,
    /// Its `response` object.
    pub response: Bytes,
}

/// The stored response `id` of `owner`, to continue.
pub async fn previous(store: &ResponseStore, id: &str, owner: &Owner) -> Result<Previous, Error> {
    let found = store.get(id, owner).await.map_err(|e| store_error(&e))?;
    match found.map(|r| r.kept) {
        Some(Kept::Content(c)) => Ok(Previous {
            conversation: c.conversation,
            input_items: c.input_items,
            response: c.response,
        }),
        Some(Kept::Withheld(why)) => Err(ErrorKind::InvalidRequest {
            message: withheld_message(id, why),
            param: Some("previous_response_id"),
        }
        .into()),
        None => Err(ErrorKind::UpstreamStatus {
            provider: "sluice".into(),
            status: 404,
            message: format!("Previous response with id '{id}' not found."),
            kind: Some("invalid_request_error".into()),
            code: Some("previous_response_not_found".into()),
            param: Some("previous_response_id".into()),
            retry_after: None,
        }
        .into()),
    }
}

fn withheld_message(id: &str, why: Withheld) -> String {
    match why {
        Withheld::NotStored => format!(
            "previous_response_id: response '{id}' was created with store: false, so it \
             cannot be continued; send its conversation in `input` instead"
        ),
        Withheld::TooLarge => format!(
            "previous_response_id: response '{id}' was larger than the gateway's \
             responses.max_bytes and was not stored; send its conversation in `input` instead"
        ),
    }
}

/// What a new response keeps, when it was made with `store: true`.
#[derive(Debug)]
pub struct Keeping {
    /// The conversation's chat messages so far, without the answer (a JSON array).
    pub messages: Vec<u8>,
    /// Its input items (a JSON array).
    pub input_items: Vec<u8>,
}

/// Starts storing response `id` of `owner`: its `response` object and, with `kept`, its
/// input items and conversation (closed by the answer's chat `assistant` message), and
/// answers the write to wait for before the answer goes out; without `kept`, only that it
/// was made with `store: false`, a marker nobody waits for (the write goes on unawaited:
/// continuing the response in the instant before it lands is a 404 rather than a 400).
pub fn keep(
    store: &ResponseStore,
    id: String,
    owner: Owner,
    kept: Option<Keeping>,
    response: Vec<u8>,
    assistant: &[u8],
) -> Option<Pending> {
    let awaited = kept.is_some();
    let content = kept.map(|k| Content {
        response: Bytes::from(response),
        input_items: Bytes::from(k.input_items),
        conversation: Bytes::from(sluice_providers::responses::object::transcript(
            &k.messages,
            assistant,
        )),
    });
    let pending = store.put(NewResponse {
        id,
        owner,
        created_at: unix_now_s(),
        content,
    });
    awaited.then_some(pending)
}

/// A failure of the store as the client sees it: 503 while it cannot be reached, else
/// 500; the cause is logged, not sent.
pub fn store_error(e: &StoreError) -> Error {
    tracing::warn!(error = %e, "responses store");
    match e {
        StoreError::Unavailable(_) | StoreError::Timeout(_) | StoreError::Postgres(_) => {
            ErrorKind::Unavailable {
                message: "the responses store is unavailable right now".into(),
            }
            .into()
        }
        _ => ErrorKind::Internal {
            message: "the responses store failed".into(),
        }
        .into(),
    }
}
