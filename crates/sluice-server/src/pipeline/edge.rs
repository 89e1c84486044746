//! The client's protocol at the pipeline's edges: a body in another API's format read into
//! OpenAI chat on the way in, and the answer (whole, streamed or an error) written back in
//! that format on the way out. The translations are `sluice-providers`'
//! (`anthropic::inbound`, `responses`); OpenAI's protocol passes through.

use super::reframe::Reframed;
use crate::conversations::{self, Lookup};
use crate::endpoint::Protocol;
use crate::response::ResponseBody;
use bytes::Bytes;
use http::header::HeaderValue;
use sluice_core::{Error, ErrorKind};
use sluice_providers::anthropic::inbound;
use sluice_providers::responses::object::{transcript, Echo};
use sluice_providers::responses::{answer, inbound as responses, stream};

/// What the way out needs to know of the request, per protocol.
pub(super) enum Edge {
    /// OpenAI's own: nothing to translate.
    OpenAi,
    /// Anthropic's Messages API, for the model asked for.
    Anthropic { model: String },
    /// OpenAI's Responses API: the settings its answers echo, and what is kept of them.
    Responses(Box<Turn>),
}

/// A Responses API request on its way: what its answer echoes and what is kept of it.
pub(super) struct Turn {
    echo: Echo,
    /// The virtual key that asked.
    owner: Option<String>,
    /// The conversation so far, to keep with the answer (`None` with `store: false`).
    input: Option<Vec<u8>>,
}

impl Turn {
    /// Keeps the conversation with its answer, the chat `assistant` message.
    fn keep(id: String, owner: Option<&str>, input: Option<&[u8]>, assistant: &[u8]) {
        let messages = input.map(|i| transcript(i, assistant));
        conversations::keep(id, owner, messages);
    }
}

impl Edge {
    /// The edge of `protocol` before its body is read: errors already take its shape.
    pub(super) fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Anthropic => Self::Anthropic {
                model: String::new(),
            },
            Protocol::OpenAi | Protocol::Responses => Self::OpenAi,
        }
    }

    /// Reads `raw`, a body in `protocol` sent by `owner` (a virtual key's id), into OpenAI
    /// chat.
    pub(super) fn read(
        protocol: Protocol,
        raw: Bytes,
        owner: Option<&str>,
    ) -> Result<(Bytes, Self), Error> {
        match protocol {
            Protocol::OpenAi => Ok((raw, Self::OpenAi)),
            Protocol::Anthropic => {
                let (body, model, _) = inbound::to_openai(&raw).map_err(|e| -> Error {
                    ErrorKind::InvalidRequest {
                        message: e.0,
                        param: None,
                    }
                    .into()
                })?;
                Ok((Bytes::from(body), Self::Anthropic { model }))
            }
            Protocol::Responses => {
                let history = match responses::previous_response_id(&raw) {
                    Some(id) => Some(previous(&id, owner)?),
                    None => None,
                };
                let t = responses::to_chat(&raw, history.as_deref()).map_err(|e| -> Error {
                    ErrorKind::InvalidRequest {
                        message: e.message,
                        param: e.param,
                    }
                    .into()
                })?;
                let turn = Turn {
                    echo: t.echo,
                    owner: owner.map(str::to_owned),
                    input: t.input,
                };
                Ok((Bytes::from(t.body), Self::Responses(Box::new(turn))))
            }
        }
    }

    /// A whole answer's body and content type in the client's protocol; `Err` says why the
    /// upstream's answer could not be read.
    pub(super) fn whole(
        &self,
        body: Bytes,
        content_type: HeaderValue,
    ) -> Result<(Bytes, HeaderValue), String> {
        let json = || HeaderValue::from_static("application/json");
        match self {
            Self::OpenAi => Ok((body, content_type)),
            Self::Anthropic { model } => Ok((inbound::from_openai(&body, model)?.into(), json())),
            Self::Responses(turn) => {
                let whole = answer::from_chat(&body, &turn.echo)?;
                let id = turn.echo.id.clone();
                Turn::keep(
                    id,
                    turn.owner.as_deref(),
                    turn.input.as_deref(),
                    &whole.assistant,
                );
                Ok((whole.body.into(), json()))
            }
        }
    }

    /// An error's body in the client's protocol, where it differs from OpenAI's.
    pub(super) fn error_body(&self, kind: &str, message: &str) -> Option<Bytes> {
        match self {
            Self::Anthropic { .. } => Some(inbound::error_body(kind, message).into()),
            Self::OpenAi | Self::Responses(_) => None,
        }
    }

    /// An event stream of OpenAI chunks, re-framed in the client's protocol.
    pub(super) fn stream(self, body: ResponseBody) -> ResponseBody {
        match self {
            Self::OpenAi => body,
            Self::Anthropic { model } => {
                ResponseBody::stream(Reframed::new(body, inbound::StreamConverter::new(&model)))
            }
            Self::Responses(turn) => {
                let Turn { echo, owner, input } = *turn;
                let id = echo.id.clone();
                let converter = stream::StreamConverter::new(echo).on_done(Box::new(move |m| {
                    Turn::keep(id, owner.as_deref(), input.as_deref(), &m);
                }));
                ResponseBody::stream(Reframed::new(body, converter))
            }
        }
    }
}

/// The stored conversation `previous_response_id` names: 404 in OpenAI's shape when there is
/// none for `owner`, 400 when that response was not stored.
fn previous(id: &str, owner: Option<&str>) -> Result<Bytes, Error> {
    match conversations::find(id, owner) {
        Lookup::Found(messages) => Ok(messages),
        Lookup::NotStored => Err(ErrorKind::InvalidRequest {
            message: format!(
                "previous_response_id: response '{id}' was created with store: false, so it \
                 cannot be continued; send its conversation in `input` instead"
            ),
            param: Some("previous_response_id"),
        }
        .into()),
        Lookup::Missing => Err(ErrorKind::UpstreamStatus {
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
