//! A response body's framing (RFC 9112 section 6): `Content-Length`, chunked (trailers read
//! and dropped), or until the connection closes. The decoder takes data off the front of
//! the bytes read so far without a copy, and after each piece of data goes through as much
//! of the framing that follows as those bytes hold, so that a body whose end has arrived
//! is seen ended at once (no further read just to learn it).

use super::error::Cause;
use bytes::{Buf, Bytes, BytesMut};
use sluice_types::chunked;

/// Longest chunk-size line (with its extensions), and most trailer bytes, taken.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoder {
    /// This many bytes left.
    Length(u64),
    /// Chunked, in this part of a chunk.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    UntilClose,
    /// The body has ended.
    Done,
    /// Broken: malformed, or the upstream closed it midway.
    Failed,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines (dropped), this many bytes read so far.
    Trailers(usize),
}

impl Decoder {
    /// Whether the body has been read to its end.
    pub(super) fn is_done(self) -> bool {
        self == Self::Done
    }

    /// The next piece of data off the front of `buf` (no copy), then the framing after it
    /// as far as `buf` holds it; `Ok(None)` when `buf` holds no data (more bytes are
    /// needed, or the body ended: [`Decoder::is_done`]).
    pub(super) fn next(&mut self, buf: &mut Bytes) -> Result<Option<Bytes>, Cause> {
        self.settle(buf)?;
        let data = match *self {
            Self::Length(left) => take(buf, left).inspect(|d| {
                *self = match left - d.len() as u64 {
                    0 => Self::Done,
                    left => Self::Length(left),
                };
            }),
            Self::Chunked(Chunk::Data(left)) => take(buf, left).inspect(|d| {
                *self = Self::Chunked(match left - d.len() as u64 {
                    0 => Chunk::DataEnd,
                    left => Chunk::Data(left),
                });
            }),
            Self::UntilClose => take(buf, u64::MAX),
            _ => None,
        };
        self.settle(buf)?;
        Ok(data)
    }

    /// The upstream closed the connection: the end of a body read until then, else a body
    /// cut short.
    pub(super) fn at_end_of_stream(&mut self) -> Result<(), Cause> {
        match *self {
            Self::UntilClose | Self::Done => {
                *self = Self::Done;
                Ok(())
            }
            _ => {
                *self = Self::Failed;
                Err(Cause::Closed)
            }
        }
    }

    /// Goes through the framing (no data) at the front of `buf`.
    fn settle(&mut self, buf: &mut Bytes) -> Result<(), Cause> {
        let settled = self.settle_inner(buf);
        if settled.is_err() {
            *self = Self::Failed;
        }
        settled
    }

    fn settle_inner(&mut self, buf: &mut Bytes) -> Result<(), Cause> {
        loop {
            match *self {
                Self::Length(0) => *self = Self::Done,
                Self::Failed => return Err(Cause::Framing("the body broke earlier")),
                Self::Chunked(Chunk::Size) => {
                    let Some(end) = line_end(buf, MAX_CHUNK_LINE)? else {
                        return Ok(());
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    *self = Self::Chunked(match size {
                        0 => Chunk::Trailers(0),
                        n => Chunk::Data(n),
                    });
                }
                Self::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Cause::Framing("a chunk's data is not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Self::Chunked(Chunk::Size);
                }
                Self::Chunked(Chunk::Trailers(read)) => {
                    let Some(end) = line_end(buf, MAX_TRAILERS.saturating_sub(read))? else {
                        return Ok(());
                    };
                    buf.advance(end + 2);
                    *self = if end == 0 {
                        Self::Done
                    } else {
                        Self::Chunked(Chunk::Trailers(read + end + 2))
                    };
                }
                _ => return Ok(()),
            }
        }
    }
}

/// Up to `left` bytes off the front of `buf`; `None` when it is empty.
fn take(buf: &mut Bytes, left: u64) -> Option<Bytes> {
    if buf.is_empty() || left == 0 {
        return None;
    }
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    Some(buf.split_to(n))
}

/// `more` after `buf`: `more` itself when nothing was left over (the usual case), else
/// both copied into one buffer of their size (a head or a chunk line split by a read).
pub(super) fn append(buf: &mut Bytes, more: Bytes) {
    if buf.is_empty() {
        *buf = more;
    } else {
        let mut joined = BytesMut::with_capacity(buf.len() + more.len());
        joined.extend_from_slice(buf);
        joined.extend_from_slice(&more);
        *buf = joined.freeze();
    }
}

/// Where the line at the start of `buf` ends ([`chunked::line_end`]).
fn line_end(buf: &[u8], limit: usize) -> Result<Option<usize>, Cause> {
    chunked::line_end(buf, limit).map_err(Cause::Framing)
}

/// A chunk-size line's size ([`chunked::chunk_size`]).
fn chunk_size(line: &[u8]) -> Result<u64, Cause> {
    chunked::chunk_size(line).map_err(Cause::Framing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after the other (as reads would bring them) and gathers the data;
    /// the decoder's state at the end and what is left unread.
    fn decode(mut decoder: Decoder, pieces: &[&[u8]]) -> (Result<Vec<u8>, Cause>, Decoder, Bytes) {
        let mut buf = Bytes::new();
        let mut data = Vec::new();
        for piece in pieces {
            append(&mut buf, Bytes::copy_from_slice(piece));
            loop {
                match decoder.next(&mut buf) {
                    Ok(Some(d)) => {
                        assert!(!d.is_empty(), "no empty pieces");
                        data.extend_from_slice(&d);
                    }
                    Ok(None) => break,
                    Err(e) => return (Err(e), decoder, buf),
                }
            }
            if decoder.is_done() {
                break;
            }
        }
        (Ok(data), decoder, buf)
    }

    const CHUNKED: &[u8] =
        b"5\r\nhello\r\n6;name=value\r\n world\r\nA \r\n, and more\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn a_chunked_body_split_at_every_byte_boundary_decodes_the_same() {
        for at in 0..=CHUNKED.len() {
            let (data, decoder, rest) = decode(
                Decoder::Chunked(Chunk::Size),
                &[&CHUNKED[..at], &CHUNKED[at..]],
            );
            assert_eq!(data.unwrap(), b"hello world, and more", "split at {at}");
            assert!(decoder.is_done(), "split at {at}");
            assert!(rest.is_empty(), "split at {at}");
        }
        let bytes: Vec<&[u8]> = CHUNKED.chunks(1).collect();
        let (data, decoder, _) = decode(Decoder::Chunked(Chunk::Size), &bytes);
        assert_eq!(data.unwrap(), b"hello world, and more");
        assert!(decoder.is_done());
    }

    #[test]
    fn a_chunked_body_is_seen_ended_with_its_last_piece_of_data() {
        let mut decoder = Decoder::Chunked(Chunk::Size);
        let mut buf = Bytes::from_static(b"2\r\nok\r\n0\r\n\r\n");
        assert_eq!(decoder.next(&mut buf).unwrap().unwrap(), "ok");
        assert!(decoder.is_done(), "no further read needed to learn the end");
        // An empty chunked body ends with no data.
        let mut decoder = Decoder::Chunked(Chunk::Size);
        let mut buf = Bytes::from_static(b"0\r\n\r\n");
        assert!(decoder.next(&mut buf).unwrap().is_none());
        assert!(decoder.is_done());
    }

    #[test]
    fn bytes_after_the_end_are_left_unread() {
        let (data, decoder, rest) = decode(
            Decoder::Chunked(Chunk::Size),
            &[b"2\r\nok\r\n0\r\n\r\nHTTP/1.1"],
        );
        assert_eq!(data.unwrap(), b"ok");
        assert!(decoder.is_done());
        assert_eq!(rest, "HTTP/1.1");
        let (data, decoder, rest) = decode(Decoder::Length(2), &[b"okjunk"]);
        assert_eq!(data.unwrap(), b"ok");
        assert!(decoder.is_done());
        assert_eq!(rest, "junk");
    }

    #[test]
    fn a_content_length_body_ends_at_its_length() {
        let mut decoder = Decoder::Length(5);
        let mut buf = Bytes::from_static(b"hel");
        assert_eq!(decoder.next(&mut buf).unwrap().unwrap(), "hel");
        assert_eq!(decoder, Decoder::Length(2));
        assert!(decoder.next(&mut buf).unwrap().is_none());
        append(&mut buf, Bytes::from_static(b"lo"));
        assert_eq!(decoder.next(&mut buf).unwrap().unwrap(), "lo");
        assert!(decoder.is_done());
        let mut none = Decoder::Length(0);
        assert!(none.next(&mut Bytes::new()).unwrap().is_none());
        assert!(none.is_done());
    }

    #[test]
    fn a_body_delimited_by_the_close_ends_at_the_close() {
        let (data, mut decoder, _) = decode(Decoder::UntilClose, &[b"he", b"llo"]);
        assert_eq!(data.unwrap(), b"hello");
        assert!(!decoder.is_done());
        assert!(decoder.at_end_of_stream().is_ok());
        assert!(decoder.is_done());
    }

    #[test]
    fn a_close_before_the_end_is_an_error() {
        for mut decoder in [
            Decoder::Length(3),
            Decoder::Chunked(Chunk::Size),
            Decoder::Chunked(Chunk::Data(2)),
            Decoder::Chunked(Chunk::Trailers(0)),
        ] {
            assert!(matches!(decoder.at_end_of_stream(), Err(Cause::Closed)));
            assert_eq!(decoder, Decoder::Failed);
        }
        let mut done = Decoder::Done;
        assert!(done.at_end_of_stream().is_ok());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for wire in [
            &b"zz\r\nhello\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n",
            b"5 junk\r\nhello\r\n",
            b"ffffffffffffffff\r\n",
        ] {
            let (data, decoder, _) = decode(Decoder::Chunked(Chunk::Size), &[wire]);
            assert!(
                matches!(data, Err(Cause::Framing(_))),
                "{}",
                String::from_utf8_lossy(wire)
            );
            assert_eq!(decoder, Decoder::Failed);
        }
        let long = [b'1'; MAX_CHUNK_LINE + 8];
        let (data, _, _) = decode(Decoder::Chunked(Chunk::Size), &[&long]);
        assert!(matches!(data, Err(Cause::Framing(_))));
    }

    #[test]
    fn a_piece_split_from_its_rest_is_joined_at_its_size() {
        let mut buf = Bytes::from_static(b"ab");
        append(&mut buf, Bytes::from_static(b"cd"));
        assert_eq!(buf, "abcd");
        let mut empty = Bytes::new();
        let more = Bytes::from(vec![1u8, 2, 3]);
        let at = more.as_ptr();
        append(&mut empty, more);
        assert_eq!(empty.as_ptr(), at, "nothing left over: no copy");
    }
}
