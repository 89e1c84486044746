//! Server-sent events, incrementally: splits an upstream byte stream into whole events as
//! bytes arrive, so that sluice can forward each event the moment it is complete, look at
//! the few events it cares about (usage, `[DONE]`, errors) and drop the ones it added.
//!
//! Events are forwarded as slices of the upstream's own buffers; bytes are copied only when
//! an event spans two reads or an event is dropped from the middle of a read.

use bytes::{Bytes, BytesMut};

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Forward it.
    Yes,
    /// Leave it out of what goes to the client.
    Drop,
}

/// An event grew past the configured bound without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge(pub usize);

/// Splits a byte stream into SSE events (each ends with a blank line, `\n\n` or `\r\n\r\n`),
/// or, for newline-delimited JSON streams, into lines.
#[derive(Debug)]
pub struct SseScanner {
    partial: BytesMut,
    max_event_bytes: usize,
    lines: bool,
}

/// The end of the line that starts at or after `from`: the index just past its `\n`.
fn next_line(data: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(b'\n', &data[from..]).map(|i| from + i + 1)
}

/// The end of the event that starts at or after `from`: the index just past its blank line.
fn next_boundary(data: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr::memchr(b'\n', &data[at..]) {
        let nl = at + i;
        match data.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if data.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => at = nl + 1,
        }
    }
    None
}

impl SseScanner {
    /// A scanner that refuses events longer than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            partial: BytesMut::new(),
            max_event_bytes,
            lines: false,
        }
    }

    /// A scanner of newline-delimited records (NDJSON) instead of SSE events.
    pub fn lines(max_line_bytes: usize) -> Self {
        Self {
            lines: true,
            ..Self::new(max_line_bytes)
        }
    }

    /// Feeds one read. `on_event` sees each complete event (with its blank line); returns the
    /// bytes to forward now: the complete events it kept, in order.
    pub fn push(
        &mut self,
        chunk: Bytes,
        mut on_event: impl FnMut(&[u8]) -> Keep,
    ) -> Result<Bytes, EventTooLarge> {
        // Resume the boundary search a few bytes before the old end: a blank line may straddle reads.
        let resume = self.partial.len().saturating_sub(2);
        let data = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(&chunk);
            self.partial.split().freeze()
        };
        let mut pos = 0;
        let mut search = resume;
        let mut rebuilt: Option<BytesMut> = None;
        let boundary = if self.lines { next_line } else { next_boundary };
        while let Some(end) = boundary(&data, search) {
            let event = &data[pos..end];
            match (on_event(event), rebuilt.as_mut()) {
                (Keep::Yes, Some(out)) => out.extend_from_slice(event),
                (Keep::Yes, None) => {}
                (Keep::Drop, Some(_)) => {}
                (Keep::Drop, None) => rebuilt = Some(BytesMut::from(&data[..pos])),
            }
            pos = end;
            search = end;
        }
        if data.len() - pos > self.max_event_bytes {
            return Err(EventTooLarge(self.max_event_bytes));
        }
        self.partial.extend_from_slice(&data[pos..]);
        Ok(match rebuilt {
            Some(out) => out.freeze(),
            None => data.slice(..pos),
        })
    }

    /// What is left when the stream ends: an unterminated last event, if any.
    pub fn finish(&mut self) -> Bytes {
        let rest = self.partial.split().freeze();
        if rest.iter().all(u8::is_ascii_whitespace) {
            Bytes::new()
        } else {
            rest
        }
    }
}

/// The `data` of an event: its `data:` lines joined by `\n`, as OpenAI-style streams send
/// it (one `data:` line per event is the norm and costs no copy).
pub fn event_data(event: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut lines = event
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(|l| l.strip_prefix(b"data:"))
        .map(|l| l.strip_prefix(b" ").unwrap_or(l));
    let first = lines.next()?;
    match lines.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = first.to_vec();
            for l in std::iter::once(second).chain(lines) {
                joined.push(b'\n');
                joined.extend_from_slice(l);
            }
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

/// Finds `"key"` followed by `:` in JSON text and returns what follows the colon
/// (leading whitespace skipped). A cheap probe, not a parser: callers confirm with serde.
pub fn after_key<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let finder = memchr::memmem::Finder::new(key);
    let mut from = 0;
    while let Some(i) = finder.find(&json[from..]) {
        let mut j = from + i + key.len();
        while json.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        if json.get(j) == Some(&b':') {
            j += 1;
            while json.get(j).is_some_and(u8::is_ascii_whitespace) {
                j += 1;
            }
            return Some(&json[j..]);
        }
        from = from + i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str], drop_if: &str) -> (Vec<String>, String) {
        let mut s = SseScanner::new(1 << 20);
        let mut seen = Vec::new();
        let mut out = String::new();
        for c in chunks {
            let fwd = s
                .push(Bytes::copy_from_slice(c.as_bytes()), |e| {
                    seen.push(String::from_utf8(e.to_vec()).unwrap());
                    if !drop_if.is_empty()
                        && e.windows(drop_if.len()).any(|w| w == drop_if.as_bytes())
                    {
                        Keep::Drop
                    } else {
                        Keep::Yes
                    }
                })
                .unwrap();
            out.push_str(std::str::from_utf8(&fwd).unwrap());
        }
        out.push_str(std::str::from_utf8(&s.finish()).unwrap());
        (seen, out)
    }

    #[test]
    fn splits_across_reads() {
        let (seen, out) = run(
            &[
                "data: a\n",
                "\ndata: b\n\nda",
                "ta: c\r\n\r\n",
                "data: [DONE]\n\n",
            ],
            "",
        );
        assert_eq!(
            seen,
            [
                "data: a\n\n",
                "data: b\n\n",
                "data: c\r\n\r\n",
                "data: [DONE]\n\n"
            ]
        );
        assert_eq!(out, "data: a\n\ndata: b\n\ndata: c\r\n\r\ndata: [DONE]\n\n");
    }

    #[test]
    fn drops_events() {
        let (_, out) = run(&["data: 1\n\ndata: usage\n\ndata: 2\n\n"], "usage");
        assert_eq!(out, "data: 1\n\ndata: 2\n\n");
        let (_, out) = run(&["data: usage\n\n", "data: 2\n\n"], "usage");
        assert_eq!(out, "data: 2\n\n");
    }

    #[test]
    fn keeps_unterminated_tail() {
        let (seen, out) = run(&["data: 1\n\ndata: tail"], "");
        assert_eq!(seen.len(), 1);
        assert_eq!(out, "data: 1\n\ndata: tail");
    }

    #[test]
    fn splits_lines() {
        let mut s = SseScanner::lines(1 << 20);
        let mut seen = Vec::new();
        let _ = s.push(Bytes::from_static(b"{\"a\":1}\n{\"b\""), |l| {
            seen.push(l.to_vec());
            Keep::Yes
        });
        let _ = s.push(Bytes::from_static(b":2}\n"), |l| {
            seen.push(l.to_vec());
            Keep::Yes
        });
        assert_eq!(seen, [b"{\"a\":1}\n".to_vec(), b"{\"b\":2}\n".to_vec()]);
    }

    #[test]
    fn bounds_partial_events() {
        let mut s = SseScanner::new(8);
        assert!(s
            .push(Bytes::from_static(b"data: 0123456789"), |_| Keep::Yes)
            .is_err());
    }

    #[test]
    fn data_lines() {
        assert_eq!(
            event_data(b"data: {\"a\":1}\n\n").unwrap().as_ref(),
            b"{\"a\":1}"
        );
        assert_eq!(
            event_data(b"event: x\ndata:a\ndata: b\n\n")
                .unwrap()
                .as_ref(),
            b"a\nb"
        );
        assert!(event_data(b": comment\n\n").is_none());
    }

    #[test]
    fn finds_keys() {
        assert_eq!(
            after_key(br#"{"finish_reason" : "stop"}"#, b"\"finish_reason\""),
            Some(&br#""stop"}"#[..])
        );
        assert_eq!(
            after_key(br#"{"x":"finish_reason"}"#, b"\"finish_reason\""),
            None
        );
    }
}
