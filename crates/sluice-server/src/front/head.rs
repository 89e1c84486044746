//! A request head read off the wire: parsed with `httparse`, its framing decided as RFC 9112
//! says (section 6), and turned into an [`http::request::Parts`].

use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, Request, Uri, Version};

/// Most header fields a request may carry (hyper's default is 100).
pub const MAX_HEADERS: usize = 128;

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (`Content-Length`; 0 without a body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed head.
#[derive(Debug)]
pub struct Head {
    /// Method, URI, version and headers (no extensions).
    pub request: Request<()>,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// Whether the connection may serve another request after this one (as the client
    /// asked: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a `100 Continue` before its body.
    pub expects_continue: bool,
}

/// Why a head was refused: the status to answer with (the connection then closes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// 400, 431, 501 or 505.
    pub status: http::StatusCode,
    /// What was wrong, for the error body.
    pub message: &'static str,
}

fn refused(status: http::StatusCode, message: &'static str) -> Refused {
    Refused { status, message }
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete, else the head
/// and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, Refused> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let taken = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refused(
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ))
        }
        Err(httparse::Error::Version) if names_a_version(buf) => {
            return Err(refused(
                http::StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "only HTTP/1.0, HTTP/1.1 and HTTP/2 (prior knowledge) are served",
            ))
        }
        Err(_) => {
            return Err(refused(
                http::StatusCode::BAD_REQUEST,
                "malformed request head",
            ))
        }
    };
    let bad = |message| refused(http::StatusCode::BAD_REQUEST, message);
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("malformed method"))?;
    let uri: Uri = req
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|_| bad("malformed request target"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("malformed header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("malformed header value"))?;
        headers.append(name, value);
    }
    let framing = framing(&headers, version)?;
    let keep_alive = keep_alive(&headers, version);
    let expects_continue = version == Version::HTTP_11
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some((
        Head {
            request,
            framing,
            keep_alive,
            expects_continue,
        },
        taken,
    )))
}

/// Whether the request line ends in a well-formed `HTTP/x.y` (another version than
/// sluice speaks: 505), rather than being malformed (400).
fn names_a_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(words.as_slice(), [_, _, v] if v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit())
}

/// The body's framing (RFC 9112 section 6.3): `Transfer-Encoding` must end in `chunked`
/// (anything else a server cannot delimit), and a request with both it and
/// `Content-Length` is refused (request smuggling); several `Content-Length`s must agree.
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, Refused> {
    let bad = |message| refused(http::StatusCode::BAD_REQUEST, message);
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_some() {
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        let mut last = None;
        for v in codings {
            let v = v.to_str().map_err(|_| bad("malformed Transfer-Encoding"))?;
            for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if last.is_some_and(|l: &str| l.eq_ignore_ascii_case("chunked")) {
                    return Err(bad("chunked applied more than once or not last"));
                }
                last = Some(coding);
            }
        }
        return match last {
            Some(c) if c.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            _ => Err(refused(
                http::StatusCode::NOT_IMPLEMENTED,
                "a Transfer-Encoding other than chunked",
            )),
        };
    }
    let mut length = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        let v = v.to_str().map_err(|_| bad("malformed Content-Length"))?;
        for n in v.split(',').map(str::trim) {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("malformed Content-Length"));
            }
            let n: u64 = n.parse().map_err(|_| bad("malformed Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("Content-Length values that differ"));
            }
            length = Some(n);
        }
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// Whether the client keeps the connection open after this exchange.
fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let has = |token: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    match version {
        Version::HTTP_10 => has("keep-alive") && !has("close"),
        _ => !has("close"),
    }
}

/// The bytes of a head's header value, shared (for tests).
#[cfg(test)]
pub fn header<'h>(head: &'h Head, name: &str) -> Option<&'h [u8]> {
    head.request.headers().get(name).map(HeaderValue::as_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<Option<(Head, usize)>, Refused> {
        parse(raw.as_bytes())
    }

    fn head(raw: &str) -> Head {
        parsed(raw).expect("parses").expect("complete").0
    }

    #[test]
    fn a_partial_head_waits_and_a_whole_one_says_what_it_took() {
        assert!(parsed("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            .unwrap()
            .is_none());
        let raw =
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello";
        let (h, n) = parsed(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 5);
        assert_eq!(h.request.method(), Method::POST);
        assert_eq!(h.request.uri().path(), "/v1/chat/completions");
        assert_eq!(h.request.uri().query(), Some("x=1"));
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert!(!h.expects_continue);
        assert_eq!(header(&h, "host"), Some(&b"x"[..]));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").framing, Framing::Length(0));
        assert_eq!(
            head("POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n").framing,
            Framing::Length(3)
        );
        for (raw, status) in [
            (
                "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\ncontent-length: +3\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", 501),
            ("POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/2.0\r\n\r\n", 505),
            ("PO ST / HTTP/1.1\r\n\r\n", 400),
        ] {
            let e = parsed(raw).expect_err(raw);
            assert_eq!(e.status.as_u16(), status, "{raw}");
        }
    }

    #[test]
    fn keep_alive_and_continue_as_the_client_asks() {
        assert!(!head("GET / HTTP/1.1\r\nconnection: Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").keep_alive);
        assert!(
            head("POST / HTTP/1.1\r\nexpect: 100-Continue\r\ncontent-length: 1\r\n\r\n")
                .expects_continue
        );
        assert!(
            !head("POST / HTTP/1.0\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n")
                .expects_continue
        );
    }

    #[test]
    fn too_many_fields_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            raw.push_str(&format!("x-{i}: y\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(parsed(&raw).unwrap_err().status.as_u16(), 431);
    }
}
