//! Sans-IO decoder for `text/event-stream` bodies received from an upstream.
//!
//! Owns turning SSE body bytes (already de-chunked by the HTTP client codec)
//! into [`SseEvent`]s following the WHATWG EventSource parsing rules: line
//! splitting on CRLF, LF or CR, the leading byte order mark, comments, field
//! parsing and event dispatch, plus the size limit that keeps one upstream
//! from exhausting memory. It deliberately differs from browsers in which
//! events it dispatches and in reporting `id` per event; see
//! [`SseDecoder::feed`]. Encoding events for clients lives in `sse`.

use std::fmt;

/// Largest single event (sum of its data) accepted; a longer one is an error.
///
/// Data is measured after joining lines with `\n` and after lossy UTF-8
/// decoding. Any single line is also capped at this plus a few bytes for a
/// field name, so a comment or an unterminated line cannot grow unbounded.
#[cfg(test)]
const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Room a line may take beyond the event limit, so a `data:` line holding a
/// maximal value (or `id:`/`event:` lines of similar size) still fits.
const LINE_SLACK_BYTES: usize = 64;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field's value; `None` if absent or empty, which both mean
    /// the default type `message`.
    pub event: Option<String>,
    /// The `id` field of this event, if it had one. Unlike a browser, the
    /// last ID is not carried into later events: the caller tracks it, and
    /// `Some("")` means the upstream reset it.
    pub id: Option<String>,
    /// `data` lines joined with `\n`; empty if there were none.
    pub data: String,
    /// The reconnection time in milliseconds, if this event set one.
    pub retry: Option<u64>,
}

/// Why a stream cannot be decoded further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// An event's data, or a single line, exceeded the limit.
    EventTooLarge,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge => f.write_str("upstream SSE event too large"),
        }
    }
}

impl std::error::Error for SseError {}

/// Incremental decoder for one event stream.
///
/// After an error the decoder is poisoned (every `feed` returns the same
/// error) until [`SseDecoder::finish`] resets it.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    /// The line being read, without its terminator.
    line: Vec<u8>,
    /// The last byte fed was a CR, so an LF first in the next feed belongs
    /// to the same line ending.
    after_cr: bool,
    /// BOM bytes matched so far at the start of the stream; `None` once the
    /// start is behind us.
    bom_matched: Option<usize>,
    event: Option<String>,
    id: Option<String>,
    data: String,
    /// Whether any `data` line arrived, as an empty `data:` line still
    /// makes the event carry (empty) data.
    has_data: bool,
    retry: Option<u64>,
    error: Option<SseError>,
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            bom_matched: Some(0),
            event: None,
            id: None,
            data: String::new(),
            has_data: false,
            retry: None,
            error: None,
        }
    }

    /// Feeds body bytes; pushes each complete event. Lines end with CRLF, LF or CR (a CR at the end
    /// of one feed followed by LF at the start of the next is ONE line ending). Leading UTF-8 BOM ignored once.
    /// Comments (lines starting with ':') are ignored. Field "data" lines are joined with '\n'.
    /// A field name without colon has empty value; one leading space after the colon is removed.
    /// `id` containing NUL is ignored. `retry` only if all ASCII digits.
    /// An event is dispatched on a blank line. Unlike browsers, DO dispatch events whose data is empty
    /// if they have an id or retry (the caller needs priming events, which carry an id and empty data),
    /// and do not dispatch a blank line with no fields at all.
    ///
    /// An event with only an `event` field is dispatched too, so nothing an
    /// upstream sends is silently lost; comments and unknown fields alone
    /// dispatch nothing, so keep-alive comments produce no events. Field
    /// names are case-sensitive, and a `retry` too large for a u64 is
    /// ignored like any other invalid one.
    pub fn feed(&mut self, bytes: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let result = self.feed_lines(bytes, events);
        if let Err(err) = result {
            self.error = Some(err);
            // Never read again until finish(); free them now.
            self.line = Vec::new();
            self.data = String::new();
        }
        result
    }

    /// The stream ended: a partial event without its blank line is discarded (per spec).
    ///
    /// Returns the decoder to its initial state (BOM check and error
    /// included), so it can decode a new stream, e.g. after a reconnect.
    pub fn finish(&mut self) {
        *self = SseDecoder::new(self.max_event_bytes);
    }

    fn feed_lines(&mut self, bytes: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = self.skip_bom(bytes);
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some((b'\n', after)) = rest.split_first() {
                rest = after;
            }
        }
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                return self.append_to_line(rest);
            };
            self.append_to_line(rest.get(..end).unwrap_or_default())?;
            let terminator = rest.get(end..).unwrap_or_default();
            rest = match terminator {
                [b'\r', b'\n', after @ ..] => after,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, after @ ..] => after,
                [] => &[],
            };
            self.end_line(events)?;
        }
        Ok(())
    }

    /// Drops a BOM at the start of the stream, which may arrive split
    /// across feeds; returns the bytes after it.
    fn skip_bom<'a>(&mut self, mut bytes: &'a [u8]) -> &'a [u8] {
        while let Some(matched) = self.bom_matched {
            let Some((&b, after)) = bytes.split_first() else {
                break;
            };
            if BOM.get(matched) == Some(&b) {
                bytes = after;
                self.bom_matched = Some(matched + 1).filter(|&m| m < BOM.len());
            } else {
                // Not a BOM after all: the bytes held back are line content.
                self.line
                    .extend_from_slice(BOM.get(..matched).unwrap_or_default());
                self.bom_matched = None;
            }
        }
        bytes
    }

    fn append_to_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        let cap = self.max_event_bytes.saturating_add(LINE_SLACK_BYTES);
        if self.line.len().saturating_add(bytes.len()) > cap {
            return Err(SseError::EventTooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        // Taken out so the line can be read while fields are updated, then
        // put back to keep its capacity for the next line.
        let mut line = std::mem::take(&mut self.line);
        let result = self.process_line(&line, events);
        line.clear();
        self.line = line;
        result
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return Ok(()),
            Some(colon) => {
                let value = line.get(colon + 1..).unwrap_or_default();
                (
                    line.get(..colon).unwrap_or_default(),
                    value.strip_prefix(b" ").unwrap_or(value),
                )
            }
            None => (line, &[][..]),
        };
        match name {
            b"event" => {
                self.event = Some(String::from_utf8_lossy(value).into_owned())
                    .filter(|event| !event.is_empty());
            }
            b"data" => {
                let value = String::from_utf8_lossy(value);
                let separator = usize::from(self.has_data);
                let total = self
                    .data
                    .len()
                    .saturating_add(separator)
                    .saturating_add(value.len());
                if total > self.max_event_bytes {
                    return Err(SseError::EventTooLarge);
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" => {
                self.retry = parse_retry(value).or(self.retry);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = SseEvent {
            event: self.event.take(),
            id: self.id.take(),
            data: std::mem::take(&mut self.data),
            retry: self.retry.take(),
        };
        let has_data = std::mem::take(&mut self.has_data);
        if has_data || event.event.is_some() || event.id.is_some() || event.retry.is_some() {
            events.push(event);
        }
    }
}

/// A base-ten value of ASCII digits only, as the spec requires.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = DEFAULT_MAX_EVENT_BYTES;

    fn event(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            id: None,
            data: data.to_string(),
            retry: None,
        }
    }

    /// Feeds `pieces` in order, then `finish()`; returns the events and the
    /// first error.
    fn run(pieces: &[&[u8]], max: usize) -> (Vec<SseEvent>, Result<(), SseError>) {
        let mut decoder = SseDecoder::new(max);
        let mut events = Vec::new();
        for piece in pieces {
            if let Err(e) = decoder.feed(piece, &mut events) {
                // Poisoned: the same error again, no events.
                let mut more = Vec::new();
                assert_eq!(decoder.feed(b"data: x\n\n", &mut more), Err(e));
                assert!(more.is_empty());
                return (events, Err(e));
            }
        }
        decoder.finish();
        (events, Ok(()))
    }

    /// Decodes `bytes` whole, split in two at every offset, and one byte at
    /// a time, asserting all agree; returns the whole-input outcome.
    fn every_way(bytes: &[u8], max: usize) -> (Vec<SseEvent>, Result<(), SseError>) {
        let whole = run(&[bytes], max);
        for i in 0..=bytes.len() {
            assert_eq!(run(&[&bytes[..i], &bytes[i..]], max), whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles, max), whole, "one byte at a time");
        whole
    }

    fn events(bytes: &[u8]) -> Vec<SseEvent> {
        let (events, result) = every_way(bytes, MAX);
        assert_eq!(result, Ok(()));
        events
    }

    #[test]
    fn basic() {
        assert_eq!(
            events(b"data: hello\n\ndata: world\n\n"),
            vec![event("hello"), event("world")]
        );
    }

    #[test]
    fn multi_line_data() {
        assert_eq!(
            events(b"data: a\ndata:b\ndata\ndata:  c\ndata: \n\n"),
            vec![event("a\nb\n\n c\n")]
        );
    }

    #[test]
    fn empty_data_line_dispatches_empty_data() {
        assert_eq!(events(b"data:\n\n"), vec![event("")]);
    }

    #[test]
    fn line_endings_mix() {
        assert_eq!(
            events(b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\rdata: e\n\n"),
            vec![event("a\nb\nc"), event("d"), event("e")]
        );
    }

    #[test]
    fn cr_lf_split_across_feeds_is_one_line_ending() {
        let mut decoder = SseDecoder::new(MAX);
        let mut out = Vec::new();
        decoder.feed(b"data: a\r", &mut out).unwrap();
        decoder.feed(b"\ndata: b\r", &mut out).unwrap();
        assert_eq!(out, vec![]);
        // The CR ends the blank line; the LF after it adds no second one.
        decoder.feed(b"\n\r", &mut out).unwrap();
        assert_eq!(out, vec![event("a\nb")]);
        decoder.feed(b"\ndata: z\n", &mut out).unwrap();
        assert_eq!(out, vec![event("a\nb")]);

        // A CR then a CR is two line endings, whatever the split.
        let mut decoder = SseDecoder::new(MAX);
        let mut out = Vec::new();
        decoder.feed(b"data: c\r", &mut out).unwrap();
        decoder.feed(b"\r", &mut out).unwrap();
        assert_eq!(out, vec![event("c")]);

        // An empty feed between the CR and the LF changes nothing.
        let mut decoder = SseDecoder::new(MAX);
        let mut out = Vec::new();
        decoder.feed(b"data: d\r", &mut out).unwrap();
        decoder.feed(b"", &mut out).unwrap();
        decoder.feed(b"\n\n", &mut out).unwrap();
        assert_eq!(out, vec![event("d")]);
    }

    #[test]
    fn comments_are_ignored() {
        assert_eq!(events(b": ping\n\n:\n\n"), vec![]);
        assert_eq!(
            events(b":comment\ndata: x\n: another: one\n\n"),
            vec![event("x")]
        );
    }

    #[test]
    fn blank_lines_alone_dispatch_nothing() {
        assert_eq!(events(b"\n\n\r\n\r\r\n"), vec![]);
        assert_eq!(events(b"unknown: field\nDATA: x\n\n"), vec![]);
    }

    #[test]
    fn leading_bom_is_ignored_once() {
        assert_eq!(events(b"\xEF\xBB\xBFdata: x\n\n"), vec![event("x")]);
        // A second BOM is part of the first field name, which is then unknown.
        assert_eq!(events(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"), vec![]);
        // A BOM later in the stream is content.
        assert_eq!(events(b"data: \xEF\xBB\xBFx\n\n"), vec![event("\u{feff}x")]);
    }

    #[test]
    fn partial_bom_is_content() {
        // The held-back bytes make the field name unknown.
        assert_eq!(events(b"\xEF\xBBdata: x\n\n"), vec![]);
        assert_eq!(events(b"\xEF\xBB\ndata: y\n\n"), vec![event("y")],);
        assert_eq!(events(b"\xEFdata: x\n\n"), vec![]);
    }

    #[test]
    fn event_id_and_retry_fields() {
        assert_eq!(
            events(b"event: update\nid: 42\nretry: 3000\ndata: {}\n\n"),
            vec![SseEvent {
                event: Some("update".into()),
                id: Some("42".into()),
                data: "{}".into(),
                retry: Some(3000),
            }]
        );
    }

    #[test]
    fn later_fields_override_earlier_ones() {
        assert_eq!(
            events(b"event: a\nevent: b\nid: 1\nid: 2\nretry: 1\nretry: 2\ndata: x\n\n"),
            vec![SseEvent {
                event: Some("b".into()),
                id: Some("2".into()),
                data: "x".into(),
                retry: Some(2),
            }]
        );
        // An empty event type means the default again.
        assert_eq!(events(b"event: a\nevent:\ndata: x\n\n"), vec![event("x")]);
    }

    #[test]
    fn fields_do_not_carry_into_the_next_event() {
        assert_eq!(
            events(b"event: e\nid: 1\nretry: 5\ndata: a\n\ndata: b\n\n"),
            vec![
                SseEvent {
                    event: Some("e".into()),
                    id: Some("1".into()),
                    data: "a".into(),
                    retry: Some(5),
                },
                event("b"),
            ]
        );
    }

    #[test]
    fn invalid_id_and_retry_are_ignored() {
        assert_eq!(
            events(b"id: a\0b\nretry: 30x0\ndata: x\n\n"),
            vec![event("x")]
        );
        assert_eq!(
            events(b"retry:\nretry: -1\nretry: 1.5\nretry:  7\ndata: x\n\n"),
            vec![event("x")]
        );
        assert_eq!(
            events(b"retry: 99999999999999999999999\ndata: x\n\n"),
            vec![event("x")]
        );
        // A NUL-free id after an invalid one still counts.
        assert_eq!(
            events(b"id: \0\nid: ok\ndata: x\n\n"),
            vec![SseEvent {
                id: Some("ok".into()),
                ..event("x")
            }]
        );
    }

    #[test]
    fn field_without_colon_has_empty_value() {
        assert_eq!(
            events(b"id\n\n"),
            vec![SseEvent {
                id: Some(String::new()),
                ..event("")
            }]
        );
    }

    #[test]
    fn priming_event_is_dispatched() {
        let primed = SseEvent {
            id: Some("abc".into()),
            ..event("")
        };
        assert_eq!(events(b"id: abc\ndata:\n\n"), vec![primed.clone()]);
        assert_eq!(events(b"id: abc\n\n"), vec![primed]);
        assert_eq!(
            events(b"retry: 1000\n\n"),
            vec![SseEvent {
                retry: Some(1000),
                ..event("")
            }]
        );
        assert_eq!(
            events(b"event: ping\n\n"),
            vec![SseEvent {
                event: Some("ping".into()),
                ..event("")
            }]
        );
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        assert_eq!(
            events(b"event: \xFF\ndata: a\xC3\n\n"),
            vec![SseEvent {
                event: Some("\u{fffd}".into()),
                ..event("a\u{fffd}")
            }]
        );
        // A multi-byte character is kept whole however it is split.
        assert_eq!(events("data: é€😀\n\n".as_bytes()), vec![event("é€😀")]);
    }

    #[test]
    fn event_size_limit() {
        let max = 10;
        let (ok, result) = every_way(b"data: 0123456789\n\ndata: 01234\ndata: 678\n\n", max);
        assert_eq!(result, Ok(()));
        assert_eq!(ok, vec![event("0123456789"), event("01234\n678")]);

        let (before, result) = every_way(b"data: a\n\ndata: 01234\ndata: 56789\n\n", max);
        assert_eq!(result, Err(SseError::EventTooLarge));
        assert_eq!(before, vec![event("a")]);

        let (_, result) = every_way(b"data: 01234567890\n\n", max);
        assert_eq!(result, Err(SseError::EventTooLarge));

        // Lines that grow only by terminators still count the separators.
        let (_, result) = every_way(&b"data\n".repeat(12), max);
        assert_eq!(result, Err(SseError::EventTooLarge));
    }

    #[test]
    fn long_lines_are_capped() {
        let max = 10;
        let cap = max + LINE_SLACK_BYTES;
        let mut comment = b":".to_vec();
        comment.extend_from_slice(&vec![b'x'; cap]);
        let (_, result) = every_way(&comment, max);
        assert_eq!(result, Err(SseError::EventTooLarge));

        let mut fits = b":".to_vec();
        fits.extend_from_slice(&vec![b'x'; cap - 1]);
        fits.extend_from_slice(b"\ndata: y\n\n");
        assert_eq!(every_way(&fits, max), (vec![event("y")], Ok(())));
    }

    #[test]
    fn partial_event_is_discarded_at_finish() {
        let (out, result) = every_way(b"data: a\n\ndata: b\nid: 2\n", MAX);
        assert_eq!(result, Ok(()));
        assert_eq!(out, vec![event("a")]);

        let mut decoder = SseDecoder::new(MAX);
        let mut out = Vec::new();
        decoder
            .feed(b"data: a\n\ndata: b\ndata: c", &mut out)
            .unwrap();
        decoder.finish();
        decoder.feed(b"\n\n", &mut out).unwrap();
        assert_eq!(out, vec![event("a")]);
    }

    #[test]
    fn finish_resets_for_a_new_stream() {
        let mut decoder = SseDecoder::new(4);
        let mut out = Vec::new();
        assert_eq!(
            decoder.feed(b"data: 12345\n", &mut out),
            Err(SseError::EventTooLarge)
        );
        decoder.finish();
        // The error is cleared, a CR at the old end is forgotten, and a
        // new stream may start with a BOM again.
        decoder.feed(b"data: a\r", &mut out).unwrap();
        decoder.finish();
        decoder
            .feed(b"\n\xEF\xBB\xBFdata: b\n\n", &mut out)
            .unwrap();
        assert_eq!(out, vec![]);
        decoder.finish();
        decoder.feed(b"\xEF\xBB\xBFdata: c\n\n", &mut out).unwrap();
        assert_eq!(out, vec![event("c")]);
    }

    #[test]
    fn error_display() {
        assert_eq!(
            SseError::EventTooLarge.to_string(),
            "upstream SSE event too large"
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet = b"\r\n: dataevntirycm0123456789\xEF\xBB\xBF\xFF\0";
        let mut seed: u64 = 11;
        for round in 0..2000 {
            let len = round % 64;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            let pieces: Vec<&[u8]> = bytes.chunks(round % 5 + 1).collect();
            let _ = run(&pieces, round % 20);
        }
    }
}
