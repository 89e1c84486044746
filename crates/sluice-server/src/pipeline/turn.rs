//! A Responses API request on its way through the pipeline ([`Turn`]): read into chat
//! (continuing the stored response its `previous_response_id` names), and stored when it
//! ends: a whole answer before it is sent, a stream before its last event
//! (`response.completed` or `response.incomplete`) is, so a client that has the answer
//! finds it stored, on any replica. A stream that fails is not stored.

use crate::conversations::{self, Keeping};
use crate::response::Aborted;
use crate::response::ResponseBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sluice_core::{Error, ErrorKind};
use sluice_providers::responses::items::{self, Earlier};
use sluice_providers::responses::object::Echo;
use sluice_providers::responses::{answer, inbound, native, stream};
use sluice_store::responses::{Pending, ResponseStore};
use sluice_store::Owner;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use super::reframe::{Reframed, Watched};

/// A Responses API request: what its answer echoes and what is stored of it.
pub(super) struct Turn {
    /// The request as the client sent it.
    raw: Bytes,
    /// What its `previous_response_id` named: the stored input items and response object
    /// a native upstream's request is expanded with.
    earlier: Option<(Bytes, Bytes)>,
    /// What only a native upstream can honour: the 400 of a translated try.
    native_only: Option<inbound::BadRequest>,
    echo: Echo,
    owner: Owner,
    store: ResponseStore,
    /// What is kept with the answer; `None` with `store: false`.
    keeping: Option<Keeping>,
}

fn invalid(message: String, param: Option<&'static str>) -> Error {
    ErrorKind::InvalidRequest { message, param }.into()
}

impl Turn {
    /// Reads `raw`, sent by `key_id`, into an OpenAI chat body.
    pub(super) async fn read(
        store: &ResponseStore,
        raw: &Bytes,
        key_id: Option<&str>,
    ) -> Result<(Bytes, Self), Error> {
        let owner = conversations::owner(key_id);
        let read = inbound::read(raw).map_err(|e| invalid(e.message, e.param))?;
        let previous = match read.previous_response_id() {
            Some(id) => Some(conversations::previous(store, &id, &owner).await?),
            None => None,
        };
        let history = previous.as_ref().map(|p| &p.conversation[..]);
        let t = read
            .to_chat(history)
            .map_err(|e| invalid(e.message, e.param))?;
        let keeping = match t.input {
            Some(messages) => {
                let earlier = previous.as_ref().map(|p| Earlier {
                    input_items: &p.input_items,
                    response: &p.response,
                });
                let input_items = items::input_items(raw, &t.echo.id, earlier)
                    .map_err(|e| invalid(format!("input: {e}"), Some("input")))?;
                Some(Keeping {
                    messages,
                    input_items,
                })
            }
            None => None,
        };
        let turn = Self {
            raw: raw.clone(),
            earlier: previous.map(|p| (p.input_items, p.response)),
            native_only: t.native_only,
            echo: t.echo,
            owner,
            store: store.clone(),
            keeping,
        };
        Ok((Bytes::from(t.body), turn))
    }

    /// A whole chat answer as a `response` object, and its storing, under way.
    pub(super) fn whole(&mut self, body: &[u8]) -> Result<(Vec<u8>, Option<Pending>), String> {
        let whole = answer::from_chat(body, &self.echo)?;
        let pending = conversations::keep(
            &self.store,
            self.echo.id.clone(),
            self.owner.clone(),
            self.keeping.take(),
            whole.body.clone(),
            &whole.assistant,
        );
        Ok((whole.body, pending))
    }

    /// The request as native upstreams are sent it: as sent, or with its
    /// `previous_response_id` expanded (done only for a request a native upstream may
    /// answer).
    pub(super) fn native_body(&self) -> Result<Bytes, Error> {
        let Some((input_items, response)) = &self.earlier else {
            return Ok(self.raw.clone());
        };
        let earlier = Earlier {
            input_items,
            response,
        };
        native::expand(&self.raw, earlier)
            .map(Bytes::from)
            .map_err(|e| invalid(e, Some("previous_response_id")))
    }

    /// What only a native upstream can honour, if the request asks for any of it.
    pub(super) fn native_only(&self) -> Option<&inbound::BadRequest> {
        self.native_only.as_ref()
    }

    /// A native upstream's whole `response` object, passed on as it came, and its storing
    /// (under the upstream's id), under way.
    pub(super) fn native_whole(&mut self, body: Bytes) -> Result<(Bytes, Option<Pending>), String> {
        // The upstream never saw the `previous_response_id` sluice expanded: it goes back.
        let body = match &self.echo.previous_response_id {
            Some(id) => native::restore_previous(&body, id).map_or(body, Bytes::from),
            None => body,
        };
        // Without `store`, only the id is kept: the answer is not read for its message.
        let (id, assistant, response) = match self.keeping {
            Some(_) => {
                let kept = native::kept(&body)?;
                (kept.id, kept.assistant, body.to_vec())
            }
            None => (native::response_id(&body)?, Vec::new(), Vec::new()),
        };
        let pending = conversations::keep(
            &self.store,
            id,
            self.owner.clone(),
            self.keeping.take(),
            response,
            &assistant,
        );
        Ok((body, pending))
    }

    /// A native upstream's event stream, passed on as it came, stored when it completes.
    pub(super) fn native_stream(self, body: ResponseBody) -> ResponseBody {
        let Self {
            echo,
            owner,
            store,
            keeping,
            ..
        } = self;
        let slot: Slot = Arc::default();
        let filled = Arc::clone(&slot);
        let previous = echo.previous_response_id;
        let watcher = native::NativeWatcher::new(
            previous,
            Box::new(move |kept, response| {
                let pending =
                    conversations::keep(&store, kept.id, owner, keeping, response, &kept.assistant);
                *filled.lock().unwrap_or_else(PoisonError::into_inner) = pending;
            }),
        );
        ResponseBody::stream(Held {
            inner: ResponseBody::stream(Watched::new(body, watcher)),
            slot,
            pending: None,
            held: None,
        })
    }

    /// A stream of chat chunks as the Responses event sequence, stored when it completes.
    pub(super) fn stream(self, body: ResponseBody) -> ResponseBody {
        let Self {
            echo,
            owner,
            store,
            keeping,
            ..
        } = self;
        let id = echo.id.clone();
        let slot: Slot = Arc::default();
        let filled = Arc::clone(&slot);
        let converter = stream::StreamConverter::new(echo).on_done(Box::new(move |done| {
            let pending =
                conversations::keep(&store, id, owner, keeping, done.response, &done.assistant);
            *filled.lock().unwrap_or_else(PoisonError::into_inner) = pending;
        }));
        let reframed = ResponseBody::stream(Reframed::new(body, converter));
        ResponseBody::stream(Held {
            inner: reframed,
            slot,
            pending: None,
            held: None,
        })
    }
}

/// Where a stream's storing, once started, waits to be awaited.
type Slot = Arc<Mutex<Option<Pending>>>;

/// A stream whose frame that started a write ([`Slot`]) is held until the write is done.
struct Held {
    inner: ResponseBody,
    slot: Slot,
    pending: Option<Pending>,
    held: Option<Frame<Bytes>>,
}

impl Body for Held {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        loop {
            if let Some(p) = this.pending.as_mut() {
                let Poll::Ready(stored) = p.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                if let Err(e) = stored {
                    tracing::warn!(error = %e, "a streamed response was not stored");
                }
                this.pending = None;
            }
            if let Some(frame) = this.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                other => return other,
            };
            let started = this
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match started {
                Some(p) => {
                    this.pending = Some(p);
                    this.held = Some(frame);
                }
                None => return Poll::Ready(Some(Ok(frame))),
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
