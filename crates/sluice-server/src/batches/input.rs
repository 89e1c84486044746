//! A batch's input file: its lines read one at a time ([`Lines`]) and each checked
//! ([`parse`]): `{"custom_id", "method": "POST", "url", "body"}` with `url` the batch's
//! endpoint and `body` an object that does not ask for a stream. A line that is not is a
//! [`Malformed`] line, reported in the error file; the batch goes on.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Why a line cannot run, as its error file line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The line's `custom_id`, when it has one.
    pub custom_id: Option<String>,
    /// A fixed code.
    pub code: &'static str,
    /// What is wrong, with the line's number.
    pub message: String,
}

/// A line ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's id of the line.
    pub custom_id: String,
    /// The request body, as it was in the line.
    pub body: Bytes,
}

/// A line as written.
#[derive(Deserialize)]
struct Line<'a> {
    custom_id: Option<String>,
    method: Option<&'a str>,
    url: Option<&'a str>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

/// The only field of a body that is looked at.
#[derive(Deserialize)]
struct Streaming {
    #[serde(default)]
    stream: Option<bool>,
}

fn malformed(custom_id: Option<String>, code: &'static str, message: String) -> Malformed {
    Malformed {
        custom_id,
        code,
        message,
    }
}

/// Checks line `number` (from 0) of a batch whose endpoint is `endpoint`; `seen` holds the
/// `custom_id`s of the lines before it (a repeated one is malformed).
pub fn parse(
    text: &[u8],
    number: u64,
    endpoint: &str,
    seen: &mut HashSet<String>,
) -> Result<Request, Malformed> {
    let at = number + 1;
    let line: Line<'_> = serde_json::from_slice(text).map_err(|e| {
        malformed(
            None,
            "invalid_json",
            format!("line {at} is not a JSON request object: {e}"),
        )
    })?;
    let Some(custom_id) = line.custom_id.filter(|c| !c.is_empty()) else {
        return Err(malformed(
            None,
            "missing_custom_id",
            format!("line {at} has no `custom_id`"),
        ));
    };
    let id = Some(custom_id.clone());
    if line.method != Some("POST") {
        let m = format!("line {at}: `method` must be `POST`");
        return Err(malformed(id, "invalid_method", m));
    }
    if line.url != Some(endpoint) {
        let m = format!(
            "line {at}: `url` is `{}`, but this batch's endpoint is `{endpoint}`",
            line.url.unwrap_or_default()
        );
        return Err(malformed(id, "mismatched_endpoint", m));
    }
    let Some(body) = line.body.filter(|b| b.get().starts_with('{')) else {
        let m = format!("line {at}: `body` must be a JSON object");
        return Err(malformed(id, "invalid_body", m));
    };
    if serde_json::from_str::<Streaming>(body.get()).is_ok_and(|s| s.stream == Some(true)) {
        let m = format!("line {at}: a batch's requests cannot stream (`stream: true`)");
        return Err(malformed(id, "stream_not_supported", m));
    }
    if !seen.insert(custom_id.clone()) {
        let m = format!("line {at}: `custom_id` `{custom_id}` is used by an earlier line");
        return Err(malformed(id, "duplicate_custom_id", m));
    }
    Ok(Request {
        custom_id,
        body: Bytes::copy_from_slice(body.get().as_bytes()),
    })
}

/// The lines of an input file, read one at a time; blank lines are skipped (they keep
/// their number, so a line's number is its place in the file).
pub struct Lines {
    reader: BufReader<tokio::fs::File>,
    buf: Vec<u8>,
    next: u64,
}

/// One line: its number and text, or that it is longer than allowed.
pub enum Read<'a> {
    /// The line's text (without its end).
    Text(u64, &'a [u8]),
    /// The line is longer than the limit.
    TooLong(u64),
}

impl Lines {
    /// The lines of `file`.
    pub fn new(file: tokio::fs::File) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, file),
            buf: Vec::new(),
            next: 0,
        }
    }

    /// The next line that is not blank, up to `max` bytes; `None` at the end.
    pub async fn next(&mut self, max: usize) -> std::io::Result<Option<Read<'_>>> {
        loop {
            self.buf.clear();
            if self.reader.read_until(b'\n', &mut self.buf).await? == 0 {
                return Ok(None);
            }
            let number = self.next;
            self.next += 1;
            let text = |b: &u8| !b.is_ascii_whitespace();
            let Some(start) = self.buf.iter().position(text) else {
                continue;
            };
            let end = self.buf.iter().rposition(text).map_or(start, |e| e + 1);
            if end - start > max {
                return Ok(Some(Read::TooLong(number)));
            }
            return Ok(Some(Read::Text(number, &self.buf[start..end])));
        }
    }
}

/// The error of a line over `max` bytes.
pub fn too_long(number: u64, max: usize) -> Malformed {
    malformed(
        None,
        "line_too_large",
        format!(
            "line {} is over {max} bytes (`server.max_body_bytes`)",
            number + 1
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked() {
        let e = "/v1/chat/completions";
        let mut seen = HashSet::new();
        let ok = parse(br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#, 0, e, &mut seen).unwrap();
        assert_eq!(
            (ok.custom_id.as_str(), &ok.body[..]),
            ("a", &br#"{"model":"m"}"#[..])
        );
        for (line, code) in [
            ("not json", "invalid_json"),
            (
                r#"{"method":"POST","url":"/v1/chat/completions","body":{}}"#,
                "missing_custom_id",
            ),
            (
                r#"{"custom_id":"b","method":"GET","url":"/v1/chat/completions","body":{}}"#,
                "invalid_method",
            ),
            (
                r#"{"custom_id":"b","method":"POST","url":"/v1/embeddings","body":{}}"#,
                "mismatched_endpoint",
            ),
            (
                r#"{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":[1]}"#,
                "invalid_body",
            ),
            (
                r#"{"custom_id":"b","method":"POST","url":"/v1/chat/completions"}"#,
                "invalid_body",
            ),
            (
                r#"{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"stream":true}}"#,
                "stream_not_supported",
            ),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}"#,
                "duplicate_custom_id",
            ),
        ] {
            assert_eq!(
                parse(line.as_bytes(), 3, e, &mut seen).unwrap_err().code,
                code,
                "{line}"
            );
        }
    }
}
