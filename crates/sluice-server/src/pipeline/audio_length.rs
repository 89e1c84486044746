//! How long a transcription's (or translation's) audio is, when the upstream's whole answer
//! does not say (`text`, `srt` and `vtt` answers carry no `usage` or `duration`), so that an
//! `audio_minute` price still applies: read from the uploaded file itself
//! ([`sluice_providers::audio_duration`]: WAV, FLAC, MP3, Ogg Vorbis/Opus, MP4/M4A, WebM),
//! else, for an `srt` or `vtt` answer, the end of its last cue. The spend record says the
//! usage was estimated.

use super::answer::Answer;
use super::finish::Finish;
use sluice_core::Error;
use sluice_providers::audio_duration::{audio_ms, last_cue_end_ms};
use sluice_providers::Upload;
use sluice_types::Usage;

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

/// The audio's length: from its file (read on a blocking thread), else from the cues of an
/// `srt` or `vtt` answer.
async fn length_ms(upload: &Upload, body: &[u8]) -> Option<u64> {
    let from_file = match upload.first_file() {
        Some(path) => tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(path).ok()?;
            audio_ms(&mut file)
        })
        .await
        .ok()
        .flatten(),
        None => None,
    };
    let cued = matches!(upload.field("response_format"), Some("srt" | "vtt"));
    match from_file {
        Some(ms) => Some(ms),
        None if cued => last_cue_end_ms(body),
        None => None,
    }
}
