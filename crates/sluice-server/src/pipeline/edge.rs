//! The client's protocol at the pipeline's edges: a body in another API's format read into
//! OpenAI chat on the way in, and the answer (whole, streamed or an error) written back in
//! that format on the way out. The translations are `sluice-providers`'
//! (`anthropic::inbound`, `responses`); OpenAI's protocol passes through.

use super::reframe::{Reframed, Unannotated};
use super::turn::Turn;
use crate::endpoint::Protocol;
use crate::response::ResponseBody;
use bytes::Bytes;
use http::header::HeaderValue;
use sluice_core::{Error, ErrorKind};
use sluice_providers::anthropic::inbound;
use sluice_store::responses::{Pending, ResponseStore};

/// What the way out needs to know of the request, per protocol.
pub(super) enum Edge {
    /// OpenAI's own: nothing to translate.
    OpenAi,
    /// Anthropic's Messages API, for the model asked for; `input_estimate`: the prompt's
    /// tokens as sluice estimates them, for a stream's `message_start` when the upstream
    /// has not counted them yet (see [`Edge::estimate_input`]).
    Anthropic { model: String, input_estimate: u64 },
    /// OpenAI's Responses API: the settings its answers echo, and what is stored of them.
    Responses(Box<Turn>),
}

/// A whole answer in the client's protocol: its body, content type, and the storing of
/// it (Responses API) under way.
pub(super) type Whole = (Bytes, HeaderValue, Option<Pending>);

impl Edge {
    /// The edge of `protocol` before its body is read: errors already take its shape.
    pub(super) fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Anthropic => Self::Anthropic {
                model: String::new(),
                input_estimate: 0,
            },
            Protocol::OpenAi | Protocol::Responses => Self::OpenAi,
        }
    }

    /// Reads `raw`, a body in `protocol` sent by `owner` (a virtual key's id), into OpenAI
    /// chat; `responses` is where Responses API answers are stored.
    pub(super) async fn read(
        protocol: Protocol,
        raw: Bytes,
        owner: Option<&str>,
        responses: &ResponseStore,
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
                let input_estimate = 0;
                Ok((
                    Bytes::from(body),
                    Self::Anthropic {
                        model,
                        input_estimate,
                    },
                ))
            }
            Protocol::Responses => {
                let (body, turn) = Turn::read(responses, &raw, owner).await?;
                Ok((body, Self::Responses(Box::new(turn))))
            }
        }
    }

    /// Notes the prompt's estimated tokens (the figure limits and routing use), which an
    /// Anthropic stream's `message_start` reports unless the upstream's first chunk counts
    /// them: OpenAI-format upstreams count them only in their last chunk.
    pub(super) fn estimate_input(&mut self, tokens: u64) {
        if let Self::Anthropic { input_estimate, .. } = self {
            *input_estimate = tokens;
        }
    }

    /// A Responses API request as native upstreams are sent it (`None` for other
    /// protocols).
    pub(super) fn native_body(&self) -> Option<Result<Bytes, Error>> {
        match self {
            Self::Responses(turn) => Some(turn.native_body()),
            Self::OpenAi | Self::Anthropic { .. } => None,
        }
    }

    /// What only a native Responses upstream can honour, if the request asks for any.
    pub(super) fn native_only(&self) -> Option<&sluice_providers::responses::inbound::BadRequest> {
        match self {
            Self::Responses(turn) => turn.native_only(),
            Self::OpenAi | Self::Anthropic { .. } => None,
        }
    }

    /// A whole answer's body and content type in the client's protocol (`native`: it
    /// already is, from a native Responses upstream), and its storing; `Err` says why the
    /// upstream's answer could not be read.
    pub(super) fn whole(
        &mut self,
        body: Bytes,
        content_type: HeaderValue,
        native: bool,
    ) -> Result<Whole, String> {
        let json = || HeaderValue::from_static("application/json");
        match self {
            Self::OpenAi => Ok((body, content_type, None)),
            Self::Responses(turn) if native => {
                let (body, pending) = turn.native_whole(body)?;
                Ok((body, content_type, pending))
            }
            Self::Anthropic { model, .. } => {
                Ok((inbound::from_openai(&body, model)?.into(), json(), None))
            }
            Self::Responses(turn) => {
                let (body, pending) = turn.whole(&body)?;
                Ok((body.into(), json(), pending))
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

    /// An event stream of OpenAI chunks, re-framed in the client's protocol (`native`: a
    /// native Responses upstream's events, passed on).
    pub(super) fn stream(self, body: ResponseBody, native: bool) -> ResponseBody {
        match self {
            // A stream made by a translation may begin with the comment meant for re-framing;
            // whole events (cached, degraded) never do.
            Self::OpenAi => match body {
                ResponseBody::Stream(_) => ResponseBody::stream(Unannotated::new(body)),
                whole => whole,
            },
            Self::Responses(turn) if native => turn.native_stream(body),
            Self::Anthropic {
                model,
                input_estimate,
            } => {
                let converter =
                    inbound::StreamConverter::new(&model).input_estimate(input_estimate);
                ResponseBody::stream(Reframed::new(body, converter))
            }
            Self::Responses(turn) => turn.stream(body),
        }
    }
}
