//! A response head off the wire (parsed with `httparse`), and what it says of the body's
//! framing and of the connection's reuse (RFC 9112 sections 6.3 and 9.3).

use super::error::Cause;
use super::framing::{Chunk, Decoder};
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{response, HeaderMap, Response, StatusCode, Version};

/// Largest response head (status line and header fields) taken.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields taken in a response head (as hyper's client).
const MAX_HEADERS: usize = 100;

/// A response head and what it says of what follows.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) parts: response::Parts,
    /// How the body is delimited.
    pub(super) framing: Decoder,
    /// Whether the connection can take another request once the body ended.
    pub(super) keep_alive: bool,
}

impl Head {
    /// An interim response (`1xx`, not `101`): skipped, the real one follows.
    pub(super) fn is_interim(&self) -> bool {
        self.parts.status.is_informational()
    }
}

/// The response head at the start of `buf` and its length, `Ok(None)` while it has not all
/// arrived; `to_head` says the request was a `HEAD` (no body follows whatever the head says).
pub(super) fn parse(buf: &[u8], to_head: bool) -> Result<Option<(Head, usize)>, Cause> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let taken = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD_BYTES {
                Err(Cause::HeadTooLarge(MAX_HEAD_BYTES))
            } else {
                Ok(None)
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Cause::MalformedHead("more than 100 header fields"))
        }
        Err(_) => return Err(Cause::MalformedHead("not an HTTP/1.x response head")),
    };
    if taken > MAX_HEAD_BYTES {
        return Err(Cause::HeadTooLarge(MAX_HEAD_BYTES));
    }
    let code = parsed.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| Cause::MalformedHead("an invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Cause::MalformedHead("an unasked protocol switch"));
    }
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Cause::MalformedHead("an invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| Cause::MalformedHead("an invalid header value"))?;
        headers.append(name, value);
    }
    if version == Version::HTTP_10 && headers.contains_key(TRANSFER_ENCODING) {
        // Faulty framing (RFC 9112 section 6.1): refused, as hyper did.
        return Err(Cause::MalformedHead(
            "transfer-encoding in an HTTP/1.0 answer",
        ));
    }
    let (framing, reusable) = framing(status, &headers, to_head)?;
    let keep_alive =
        reusable && version == Version::HTTP_11 && !has_token(&headers, &CONNECTION, "close");
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    let (parts, ()) = response.into_parts();
    Ok(Some((
        Head {
            parts,
            framing,
            keep_alive,
        },
        taken,
    )))
}

/// How the body is delimited, and whether that leaves the connection reusable.
fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    to_head: bool,
) -> Result<(Decoder, bool), Cause> {
    if to_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Decoder::Done, true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Chunked when it is the last coding; else the body runs until the close. A length
        // beside it is ignored, and the connection not reused (RFC 9112 section 6.3).
        let chunked = last_token(headers, &TRANSFER_ENCODING)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        let lone = !headers.contains_key(CONTENT_LENGTH);
        return Ok(if chunked {
            (Decoder::Chunked(Chunk::Size), lone)
        } else {
            (Decoder::UntilClose, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_length(item.trim_ascii())
                .ok_or(Cause::MalformedHead("an invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Cause::MalformedHead("conflicting content-lengths"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Decoder::Done, true),
        Some(n) => (Decoder::Length(n), true),
        None => (Decoder::UntilClose, false),
    })
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// The comma-separated items of `name`'s fields, trimmed, empty ones left out.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

fn last_token<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    tokens(headers, name).last()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(wire: &str) -> Head {
        let (head, taken) = parse(wire.as_bytes(), false).unwrap().unwrap();
        assert_eq!(taken, wire.find("\r\n\r\n").unwrap() + 4);
        head
    }

    #[test]
    fn framing_and_reuse_follow_the_head() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n");
        assert_eq!(h.framing, Decoder::Length(12));
        assert!(h.keep_alive);
        assert_eq!(h.parts.headers["content-length"], "12");
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Decoder::Chunked(Chunk::Size));
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(h.framing, Decoder::Done);
        // Until the close: never reused.
        let h = head("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n");
        assert_eq!(h.framing, Decoder::UntilClose);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Decoder::UntilClose);
        assert!(!h.keep_alive);
        // A length beside chunked is ignored, and the connection not reused.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Decoder::Chunked(Chunk::Size));
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\n\r\n");
        assert_eq!(h.framing, Decoder::Length(4));
    }

    #[test]
    fn connection_close_and_http_1_0_are_not_kept() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: Close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: upgrade, close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(!h.keep_alive);
        assert_eq!(h.parts.version, Version::HTTP_10);
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
    }

    #[test]
    fn no_body_follows_204_304_or_an_answer_to_head() {
        let h = head("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(h.framing, Decoder::Done);
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Decoder::Done);
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
        let (h, _) = parse(wire, true).unwrap().unwrap();
        assert_eq!(h.framing, Decoder::Done);
        assert!(h.keep_alive);
    }

    #[test]
    fn interim_answers_are_told_apart() {
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(head("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n").is_interim());
        assert!(!head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_interim());
        assert!(matches!(
            parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Err(Cause::MalformedHead(_))
        ));
    }

    #[test]
    fn a_head_not_all_arrived_waits_and_one_too_large_is_refused() {
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le", false)
            .unwrap()
            .is_none());
        let mut partial = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        partial.resize(MAX_HEAD_BYTES + 1, b'a');
        assert!(matches!(
            parse(&partial, false),
            Err(Cause::HeadTooLarge(_))
        ));
        let mut whole = partial.clone();
        whole.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse(&whole, false), Err(Cause::HeadTooLarge(_))));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for n in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{n}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many, false), Err(Cause::MalformedHead(_))));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for wire in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(wire, false), Err(Cause::MalformedHead(_))),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
