//! How long a transcription's (or translation's) audio is, when the upstream's answer does
//! not say (`text`, `srt` and `vtt` answers carry no `usage` or `duration`, and a stream
//! may end without a usage event), so that an `audio_minute` price still applies: read from
//! the uploaded file itself ([`sluice_providers::audio_duration`]: WAV, FLAC, MP3, Ogg
//! Vorbis/Opus, MP4/M4A, WebM), and, for an `srt` or `vtt` answer, the end of its last cue
//! (the longer of the two: the file's header is the client's to write, the cues the
//! upstream's). A length past [`MAX_MS`], or past what the file's size holds at
//! [`MIN_BYTES_A_SECOND`], is a forged or broken header and is not used. The spend record
//! says the usage was estimated.
//!
//! A stream's file is read on a blocking thread from the moment its first event arrives
//! (the upstream has the whole upload by then), and the stream's end waits for that read,
//! so that its length is known when the stream says how it ended ([`Measured`]).

use super::answer::Answer;
use super::ending::{Ending, Tracked};
use super::finish::Finish;
use crate::response::Aborted;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sluice_core::Error;
use sluice_providers::audio_duration::{audio_ms, last_cue_end_ms};
use sluice_providers::Upload;
use sluice_types::Usage;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::task::JoinHandle;

/// The longest audio priced by its length: 48 hours.
pub const MAX_MS: u64 = 48 * 3_600_000;

/// The fewest bytes a second of audio takes (1 kbit/s): no codec stores sound in less, so a
/// file cannot play longer than its size at this rate.
pub const MIN_BYTES_A_SECOND: u64 = 125;

/// `answer` with the audio's length as its usage, when it is a success without usage and
/// the length can be read.
pub async fn fill(
    upload: &Upload,
    answer: Result<Answer, Error>,
    finish: &mut Finish,
) -> Result<Answer, Error> {
    let (status, content_type, body) = match answer {
        Ok(Answer::Whole {
            status,
            content_type,
            body,
            usage: None,
        }) => (status, content_type, body),
        Ok(Answer::Stream(inner)) => {
            return Ok(Answer::Stream(Box::new(Measured::new(inner, upload))))
        }
        other => return other,
    };
    let ms = match status.is_success() {
        true => length_ms(upload, &body).await,
        false => None,
    };
    let usage = ms.map(|audio_ms| {
        finish.outcome.usage_estimated = true;
        Usage {
            prompt_tokens: finish.outcome.estimated_prompt_tokens,
            audio_ms,
            ..Usage::default()
        }
    });
    Ok(Answer::Whole {
        status,
        content_type,
        body,
        usage,
    })
}

/// The audio's length: the longer of its file's (read on a blocking thread) and, for an
/// `srt` or `vtt` answer, its last cue's end; lengths past what the file can hold dropped.
async fn length_ms(upload: &Upload, body: &[u8]) -> Option<u64> {
    let from_file = match file_ms(upload) {
        Some(reading) => reading.await.ok().flatten(),
        None => None,
    };
    let cued = match upload.field("response_format") {
        Some("srt" | "vtt") => last_cue_end_ms(body),
        _ => None,
    };
    let cued = cued.filter(|&ms| ms <= MAX_MS);
    from_file.max(cued)
}

/// The uploaded file's length, read on a blocking thread (a length past what the file can
/// hold dropped); `None` when the upload has no file. The file is opened here, while the
/// upload holds it: a stream outlives the upload, whose spooled file is removed with it.
fn file_ms(upload: &Upload) -> Option<JoinHandle<Option<u64>>> {
    let mut file = std::fs::File::open(upload.first_file()?).ok()?;
    Some(tokio::task::spawn_blocking(move || {
        let size = file.metadata().ok()?.len();
        let cap = MAX_MS.min(size.saturating_mul(1000) / MIN_BYTES_A_SECOND);
        audio_ms(&mut file).filter(|&ms| ms <= cap)
    }))
}

/// A streamed transcription whose end, when the upstream sent no usage, is priced by its
/// file's length.
struct Measured {
    inner: Box<dyn Tracked>,
    /// The file's length being read; `None` once read (or when there is no file).
    reading: Option<JoinHandle<Option<u64>>>,
    /// The file's length, once read.
    ms: Option<u64>,
    /// The inner stream has ended (it is not polled again).
    ended: bool,
}

impl Measured {
    fn new(inner: Box<dyn Tracked>, upload: &Upload) -> Self {
        Self {
            inner,
            reading: file_ms(upload),
            ms: None,
            ended: false,
        }
    }
}

impl Body for Measured {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        if !this.ended {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => this.ended = true,
                other => return other,
            }
        }
        // The end waits for the file's length, so that `ending` has it.
        if let Some(reading) = &mut this.reading {
            let read = std::task::ready!(Pin::new(reading).poll(cx));
            this.ms = read.ok().flatten();
            this.reading = None;
        }
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Tracked for Measured {
    fn ending(&mut self, completed: bool) -> Ending {
        let mut end = self.inner.ending(completed);
        if end.status == 200 && end.estimated && end.usage.audio_ms == 0 {
            if let Some(ms) = self.ms {
                end.usage.audio_ms = ms;
            }
        }
        end
    }

    fn guardrails(&self) -> Option<String> {
        self.inner.guardrails()
    }
}
