//! What the gateway's output must look like, whatever it was given.

use serde::de::IgnoredAny;

/// `bytes` is one JSON value by JSON's grammar: numbers past f64's range and unpaired
/// surrogate escapes are JSON too (serde_json's `Value` refuses them; a relayed upstream
/// value may hold them, and clients' parsers take them).
pub fn json(bytes: &[u8], what: &str) {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(bytes) {
        panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    }
}

/// `bytes` is whole SSE events whose `data` is JSON (or OpenAI's `[DONE]`).
pub fn sse(bytes: &[u8], what: &str) {
    let text = std::str::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{what} is not UTF-8 ({e}): {bytes:?}"));
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "{what} ends mid-event: {text}"
    );
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        for line in event.lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                if data != "[DONE]" {
                    json(data.as_bytes(), what);
                }
            } else {
                assert!(
                    line.starts_with("event: ") || line.starts_with(':'),
                    "{what}: a line that is neither data nor event: {line:?} in {text}"
                );
            }
        }
    }
}
