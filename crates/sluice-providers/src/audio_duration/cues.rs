//! The end of the last cue of an `srt` or `vtt` transcript: the latest time after a
//! `-->` (`00:01:02,345` in SRT, `00:01:02.345` or `01:02.345` in WebVTT).

/// The latest cue end in `text`, in milliseconds; `None` when it has no cue.
pub fn last_cue_end_ms(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    text.lines()
        .filter_map(|line| line.split_once("-->"))
        .filter_map(|(_, end)| timestamp_ms(end.split_whitespace().next()?))
        .max()
}

/// `[hh:]mm:ss[,.]mmm` in milliseconds.
fn timestamp_ms(t: &str) -> Option<u64> {
    let (clock, millis) = t.split_once([',', '.'])?;
    if millis.len() != 3 {
        return None;
    }
    let millis: u64 = millis.parse().ok()?;
    let mut parts = clock.rsplit(':');
    let seconds: u64 = parts.next()?.parse().ok()?;
    let minutes: u64 = parts.next()?.parse().ok()?;
    let hours: u64 = parts.next().map_or(Some(0), |h| h.parse().ok())?;
    if parts.next().is_some() || seconds >= 60 || minutes >= 60 {
        return None;
    }
    // An hour past any real transcript's (a forged or corrupt cue) must not overflow.
    hours
        .checked_mul(3_600_000)?
        .checked_add((minutes * 60 + seconds) * 1000 + millis)
}
