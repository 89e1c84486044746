//! An upload still arriving: its parts in order as the server's reader adds them (text
//! fields whole, files spooled to disk as their bytes come), and the upstream bodies that
//! follow it. The first try upstream starts while the client is still sending: its body
//! reads each file from the spool up to the bytes written so far and waits for more, so
//! the upload is never held in memory and a retry or a fallback started at any point reads
//! the same spool from its start.
//!
//! One writer, the [`Feed`], held by the reader of the client's body; any number of
//! [`Following`] bodies. A body made once the upload has ended is an ordinary one of known
//! length; one made before is chunked and ends with the upload: with the closing boundary
//! when the upload ended whole, with an error (so the upstream request is aborted, never
//! ended short) when it broke off, was refused or was dropped.

use super::form::{fixed_form, new_boundary, part_head, text_part, FixedBody, PartRef};
use super::form::{read_chunk, SpooledFile, READ_CHUNK};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

/// An upload still arriving, shared by its feed and the bodies that follow it. Its spooled
/// files are removed when the last holder is gone.
pub struct Growing {
    state: Mutex<State>,
}

impl std::fmt::Debug for Growing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Growing")
            .field("parts", &s.parts.len())
            .field("end", &s.end)
            .finish()
    }
}

struct State {
    /// The parts so far, `model` left out (each body names its own).
    parts: Vec<Part>,
    end: End,
    /// Bodies waiting for more.
    waiting: Vec<Waker>,
}

enum Part {
    Field(String, String),
    /// A file and whether all its bytes are in the spool (`len` counts those written).
    File(SpooledFile, bool),
}

/// How the upload stands.
#[derive(Debug, Clone)]
enum End {
    /// Still arriving.
    Open,
    /// Arrived whole and checked.
    Whole,
    /// Broke off, was refused or was dropped: why.
    Failed(String),
}

impl Growing {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the upload has ended (whole or failed).
    pub async fn arrived(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            if !matches!(state.end, End::Open) {
                return Poll::Ready(());
            }
            if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    /// Where its first file is spooled, once the upload has arrived whole.
    pub fn first_file(&self) -> Option<std::path::PathBuf> {
        let state = self.lock();
        if !matches!(state.end, End::Whole) {
            return None;
        }
        state.parts.iter().find_map(|p| match p {
            Part::File(f, _) => Some(f.path.clone()),
            Part::Field(..) => None,
        })
    }

    /// An upstream form of the upload (a `model` field first when given): of known length
    /// when the upload has arrived whole, else one that follows it.
    pub(super) fn body(self: &Arc<Self>, model: Option<&str>) -> std::io::Result<(String, Made)> {
        let state = self.lock();
        match &state.end {
            End::Whole => {
                let parts = state.parts.iter().map(|p| match p {
                    Part::Field(name, value) => PartRef::Field(name, value),
                    Part::File(f, _) => PartRef::File(f),
                });
                return fixed_form(model, parts).map(|(ct, b)| (ct, Made::Fixed(b)));
            }
            End::Failed(why) => return Err(std::io::Error::other(why.clone())),
            End::Open => {}
        }
        drop(state);
        let boundary = new_boundary();
        let mut head = Vec::new();
        if let Some(model) = model {
            text_part(&mut head, &boundary, "model", model);
        }
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let following = Following {
            growing: Arc::clone(self),
            boundary,
            pending: Bytes::from(head),
            next: 0,
            reading: None,
            ended: false,
        };
        Ok((content_type, Made::Following(following)))
    }
}

/// A body made of an upload: whole, or following it.
pub(super) enum Made {
    /// The upload had arrived whole: its length is known.
    Fixed(FixedBody),
    /// Still arriving: the body follows the spool.
    Following(Following),
}

/// The writing end of an upload still arriving. Dropped before [`Feed::whole`], the upload
/// counts as failed, so a body following it errors rather than waiting forever.
pub struct Feed {
    growing: Arc<Growing>,
}

impl Feed {
    /// A feed for an upload whose text fields so far are `fields` (in order, `model` left
    /// out) and whose first file, `file`, has begun (its spool open, `len` bytes written);
    /// and the upload it feeds.
    pub fn start(fields: Vec<(String, String)>, file: SpooledFile) -> (Self, Arc<Growing>) {
        let mut parts: Vec<Part> = fields
            .into_iter()
            .map(|(name, value)| Part::Field(name, value))
            .collect();
        parts.push(Part::File(file, false));
        let growing = Arc::new(Growing {
            state: Mutex::new(State {
                parts,
                end: End::Open,
                waiting: Vec::new(),
            }),
        });
        (
            Self {
                growing: Arc::clone(&growing),
            },
            growing,
        )
    }

    /// Changes the upload and wakes the bodies waiting for it.
    fn change(&self, f: impl FnOnce(&mut State)) {
        let waiting = {
            let mut state = self.growing.lock();
            f(&mut state);
            std::mem::take(&mut state.waiting)
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    /// A text field, whole.
    pub fn field(&self, name: String, value: String) {
        self.change(|s| s.parts.push(Part::Field(name, value)));
    }

    /// A file part begins (its spool created, empty).
    pub fn begin_file(&self, file: SpooledFile) {
        self.change(|s| s.parts.push(Part::File(file, false)));
    }

    /// `n` more bytes of the current file are in its spool (written and flushed).
    pub fn grew(&self, n: u64) {
        self.change(|s| {
            if let Some(Part::File(f, _)) = s.parts.last_mut() {
                f.len += n;
            }
        });
    }

    /// The current file has ended; its length.
    pub fn end_file(&self) -> u64 {
        let mut len = 0;
        self.change(|s| {
            if let Some(Part::File(f, done)) = s.parts.last_mut() {
                *done = true;
                len = f.len;
            }
        });
        len
    }

    /// The upload has arrived whole and passed its checks.
    pub fn whole(self) {
        self.change(|s| s.end = End::Whole);
    }

    /// The upload failed: broke off, too large, malformed; `why` is what a body following
    /// it reports.
    pub fn fail(self, why: String) {
        self.change(|s| s.end = End::Failed(why));
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.change(|s| {
            if matches!(s.end, End::Open) {
                s.end = End::Failed("the upload was abandoned before its end".into());
            }
        });
    }
}

/// A body that follows an upload still arriving: sent chunked, ended when the upload is.
pub(super) struct Following {
    growing: Arc<Growing>,
    boundary: String,
    /// Bytes to send before anything else (a part's head).
    pending: Bytes,
    /// The next part to begin.
    next: usize,
    /// The file part being sent: its index, open spool and bytes sent of it.
    reading: Option<(usize, tokio::fs::File, u64)>,
    ended: bool,
}

/// What a body following an upload does next.
enum Step {
    /// Send these bytes.
    Send(Bytes),
    /// Read up to this many bytes of the current file.
    Read(u64),
    /// Open this spool and read it from its start.
    Open(std::path::PathBuf),
    /// Nothing yet: wait for the feed.
    Wait,
    /// The upload ended whole: send the closing boundary.
    Close,
    /// The upload failed.
    Fail(String),
}

impl Following {
    /// The next step, looked up under the lock; registers `cx` when there is nothing yet.
    fn step(&mut self, cx: &Context<'_>) -> Step {
        let mut state = self.growing.lock();
        if let Some((index, _, sent)) = &self.reading {
            let Some(Part::File(f, done)) = state.parts.get(*index) else {
                return Step::Fail("a spooled part went missing".into());
            };
            if *sent < f.len {
                return Step::Read((f.len - sent).min(READ_CHUNK as u64));
            }
            if *done {
                self.reading = None;
                return Step::Send(Bytes::from_static(b"\r\n"));
            }
        } else if let Some(part) = state.parts.get(self.next) {
            self.next += 1;
            let mut head = Vec::new();
            return match part {
                Part::Field(name, value) => {
                    text_part(&mut head, &self.boundary, name, value);
                    Step::Send(Bytes::from(head))
                }
                Part::File(f, _) => {
                    part_head(&mut head, &self.boundary, &f.field, Some(f));
                    self.pending = Bytes::from(head);
                    Step::Open(f.path.clone())
                }
            };
        } else {
            match &state.end {
                End::Whole => return Step::Close,
                End::Failed(why) => return Step::Fail(why.clone()),
                End::Open => {}
            }
        }
        if let End::Failed(why) = &state.end {
            return Step::Fail(why.clone());
        }
        if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiting.push(cx.waker().clone());
        }
        Step::Wait
    }
}

impl Body for Following {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let data = std::mem::take(&mut this.pending);
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.step(cx) {
                Step::Send(b) => this.pending = b,
                Step::Open(path) => {
                    let file = tokio::fs::File::from_std(std::fs::File::open(path)?);
                    this.reading = Some((this.next - 1, file, 0));
                }
                Step::Read(want) => {
                    let Some((_, file, sent)) = &mut this.reading else {
                        continue;
                    };
                    let chunk = ready!(read_chunk(
                        file,
                        cx,
                        usize::try_from(want).unwrap_or(READ_CHUNK),
                        "a spooled upload is shorter than what was written to it"
                    ))?;
                    *sent += chunk.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Step::Close => {
                    this.ended = true;
                    this.pending = Bytes::from(format!("--{}--\r\n", this.boundary));
                }
                Step::Fail(why) => return Poll::Ready(Some(Err(std::io::Error::other(why)))),
                Step::Wait => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty()
    }
}
