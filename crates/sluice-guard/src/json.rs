//! The string values of a JSON body, found in one pass without parsing it into a tree:
//! each value's raw span (between its quotes) and its text (decoded when it has escapes).
//! Keys are skipped, and so are `data:` URLs (inline images and files: base64, never text
//! to check). Edits replace a value's raw span with a new, escaped string.

use std::borrow::Cow;

/// One string value of a body.
pub struct StringValue<'a> {
    /// The raw bytes between its quotes.
    pub span: std::ops::Range<usize>,
    /// Its text.
    pub text: Cow<'a, str>,
}

/// Calls `f` on each string value of the JSON text `body` (a valid JSON document).
pub fn for_each_value<'a>(body: &'a str, mut f: impl FnMut(StringValue<'a>)) {
    let b = body.as_bytes();
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &b[i..]) {
        let start = i + q + 1;
        let (end, escaped) = string_end(b, start);
        i = end + 1;
        let mut k = i;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        if b.get(k) == Some(&b':') {
            continue;
        }
        let raw = &body[start..end.min(body.len())];
        if raw.starts_with("data:") {
            continue;
        }
        let text = if escaped {
            match serde_json::from_str::<String>(&body[start - 1..=end.min(body.len() - 1)]) {
                Ok(s) => Cow::Owned(s),
                Err(_) => continue,
            }
        } else {
            Cow::Borrowed(raw)
        };
        f(StringValue {
            span: start..end,
            text,
        });
    }
}

/// Where the string starting at `start` (after its quote) ends (its closing quote), and
/// whether it has escapes.
fn string_end(b: &[u8], start: usize) -> (usize, bool) {
    let mut j = start;
    let mut escaped = false;
    while let Some(p) = memchr::memchr2(b'"', b'\\', &b[j..]) {
        let at = j + p;
        if b[at] == b'"' {
            return (at, escaped);
        }
        escaped = true;
        j = at + 2;
        if j > b.len() {
            break;
        }
    }
    (b.len(), escaped)
}

/// `body` with each `(span, text)` replaced by `text` as an escaped JSON string's content.
pub fn apply_edits(body: &str, mut edits: Vec<(std::ops::Range<usize>, String)>) -> String {
    edits.sort_by_key(|(span, _)| span.start);
    let mut out = String::with_capacity(body.len() + 64);
    let mut at = 0;
    for (span, text) in edits {
        out.push_str(&body[at..span.start]);
        let quoted = serde_json::to_string(&text).unwrap_or_default();
        out.push_str(&quoted[1..quoted.len() - 1]);
        at = span.end;
    }
    out.push_str(&body[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_not_keys_and_escapes_decoded() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"mail a\"b@x.io \u0041"}],"img":"data:image/png;base64,AAAA","n":1}"#;
        let mut seen = Vec::new();
        for_each_value(body, |v| seen.push(v.text.to_string()));
        assert_eq!(seen, ["m", "user", "mail a\"b@x.io A"]);
        let mut spans = Vec::new();
        for_each_value(body, |v| spans.push(v.span));
        let edited = apply_edits(body, vec![(spans[2].clone(), "said \"hi\"".into())]);
        let v: serde_json::Value = serde_json::from_str(&edited).unwrap();
        assert_eq!(v["messages"][0]["content"], "said \"hi\"");
        assert_eq!(v["img"], "data:image/png;base64,AAAA");
    }
}
