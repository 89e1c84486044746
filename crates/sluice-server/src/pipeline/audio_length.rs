//! How long a transcription's (or translation's) audio is, when the upstream's whole answer
//! does not say (`text`, `srt` and `vtt` answers carry no `usage` or `duration`), so that an
//! `audio_minute` price still applies: read from the uploaded file itself
//! ([`sluice_providers::audio_duration`]: WAV, FLAC, MP3, Ogg Vorbis/Opus, MP4/M4A, WebM),
//! and, for an `srt` or `vtt` answer, the end of its last cue (the longer of the two: the
//! file's header is the client's to write, the cues the upstream's). A length past
//! [`MAX_MS`], or past what the file's size holds at [`MIN_BYTES_A_SECOND`], is a forged or
//! broken header and is not used. The spend record says the usage was estimated.

use super::answer::Answer;
use super::finish::Finish;
use sluice_core::Error;
use sluice_providers::audio_duration::{audio_ms, last_cue_end_ms};
use sluice_providers::Upload;
use sluice_types::Usage;

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
    let Ok(Answer::Whole {
        status,
        content_type,
        body,
        usage: None,
    }) = answer
    else {
        return answer;
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
    let (from_file, size) = match upload.first_file() {
        Some(path) => tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(path).ok()?;
            let size = file.metadata().ok()?.len();
            Some((audio_ms(&mut file), size))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or((None, 0)),
        None => (None, 0),
    };
    let cap = MAX_MS.min(size.saturating_mul(1000) / MIN_BYTES_A_SECOND);
    let cued = match upload.field("response_format") {
        Some("srt" | "vtt") => last_cue_end_ms(body),
        _ => None,
    };
    let from_file = from_file.filter(|&ms| ms <= cap);
    let cued = cued.filter(|&ms| ms <= MAX_MS);
    from_file.max(cued)
}
