//! Sans-IO HTTP/1.1 client codec for the upstream side.
//!
//! Owns the bytes exchanged with an upstream MCP server: encoding requests
//! (Content-Length framing and header sanitising) and decoding responses
//! into [`ResponseEvent`]s: status line and header fields (via `httparse`),
//! skipping interim 1xx responses, body framing (none, Content-Length,
//! chunked or close-delimited) and the keep-alive decision the connection
//! pool acts on. It performs no I/O: the reactor passes what it reads to
//! [`ResponseDecoder::decode`] and reports end of stream through
//! [`ResponseDecoder::eof`].

use std::fmt;

use super::cursor::{take_line, Cursor};
use super::{is_forbidden_value_byte, is_token, list_values};

/// Largest response head accepted from an upstream.
///
/// Counts every byte from the status line through the blank line, plus any
/// empty lines skipped before the status line. It applies to each head on
/// its own (interim 1xx heads included, since a slow stream of them is a
/// timeout matter, not a memory one) and also bounds the trailer section of
/// a chunked body.
pub const DEFAULT_MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields accepted in one response head; more is
/// [`ResponseError::HeadTooLarge`].
///
/// `httparse` parses into a fixed array kept on the stack, and a head with
/// more fields than this is far outside what an MCP server sends.
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// Longest chunk-size line (size, extensions and CRLF) accepted; longer is
/// [`ResponseError::Malformed`].
///
/// Chunk extensions are discarded, so without this cap an upstream could
/// stream an endless extension that counts against no other limit.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// Appends a complete HTTP/1.1 request with a Content-Length body (omit Content-Length
/// only when method is GET/DELETE/HEAD and body is empty). Writes `Host: {host}` first,
/// then the caller's headers (strip CR/LF/NUL defensively; drop caller Host/Content-Length/
/// Transfer-Encoding/Connection headers since the encoder owns framing), no `Connection: close`
/// (keep-alive is the HTTP/1.1 default).
///
/// Nothing here panics: a caller field whose name is not a valid token is
/// dropped rather than written, because the name cannot be repaired without
/// changing what it means. Bytes that would break the request line (CR, LF,
/// NUL, space, tab) are removed from `method` and `target`, and an empty
/// target becomes `/`, so the line always parses.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let method_start = out.len();
    out.extend(method.bytes().filter(|&b| !breaks_request_line(b)));
    // Decided on the method as written, so a stray CRLF in the caller's
    // string cannot change the framing.
    let bodiless_method = matches!(out.get(method_start..), Some(b"GET" | b"DELETE" | b"HEAD"));
    out.push(b' ');
    let target_start = out.len();
    out.extend(target.bytes().filter(|&b| !breaks_request_line(b)));
    if out.len() == target_start {
        out.push(b'/');
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend(host.bytes().filter(|&b| !is_forbidden_value_byte(b)));
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if is_owned_header(name) || !is_token(name) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend(value.bytes().filter(|&b| !is_forbidden_value_byte(b)));
        out.extend_from_slice(b"\r\n");
    }
    // Some servers answer 411 Length Required to a POST without a length,
    // even an empty one, so it is left out only where no body is usual.
    if !(bodiless_method && body.is_empty()) {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Fields the encoder writes itself (or deliberately leaves out); a caller
/// copy would contradict the framing or the connection's reuse.
fn is_owned_header(name: &str) -> bool {
    ["host", "content-length", "transfer-encoding", "connection"]
        .iter()
        .any(|owned| name.eq_ignore_ascii_case(owned))
}

fn breaks_request_line(b: u8) -> bool {
    is_forbidden_value_byte(b) || b == b' ' || b == b'\t'
}

/// Status line and header fields of a final (non-1xx) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Header fields in arrival order; names lowercased ASCII, values trimmed
    /// of surrounding whitespace, non-UTF-8 values decoded lossily.
    pub headers: Vec<(String, String)>,
    /// False if `Connection: close`, HTTP/1.0 without keep-alive, or the body is close-delimited.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What decoding a response produced, in order: one `Head`, any number of
/// `Body`, then `End`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseEvent {
    /// Once per response; interim 1xx responses are skipped silently, except
    /// 101, which is [`ResponseError::Malformed`] because the proxy never
    /// asks to switch protocols.
    Head(ResponseHead),
    /// De-chunked body bytes, as they arrive (never empty).
    Body(Vec<u8>),
    /// The body is complete; the connection can be reused iff `head.keep_alive`.
    End,
}

/// Why a response could not be decoded; the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// Head (or chunked trailer section, or header count) over the limit.
    HeadTooLarge,
    /// Bad status line or headers, bad chunk, bad Content-Length, both
    /// Content-Length and Transfer-Encoding, unsupported Transfer-Encoding,
    /// or a 101; the text says which rule was broken.
    Malformed(&'static str),
    /// EOF before the body (or head) was complete.
    Truncated,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::HeadTooLarge => f.write_str("upstream response head too large"),
            ResponseError::Malformed(detail) => {
                write!(f, "malformed upstream response: {detail}")
            }
            ResponseError::Truncated => f.write_str("upstream response truncated"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Where the decoder is inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line into the line buffer.
    Size,
    /// Copying chunk data; this many bytes are still due.
    Data(u64),
    /// Expecting the CR that closes chunk data.
    DataCr,
    /// Expecting the LF that closes chunk data.
    DataLf,
    /// After the last chunk: discarding trailer lines until an empty one;
    /// counts trailer bytes so far.
    Trailers(usize),
}

/// How the body of the current response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Content-Length; bytes still due.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for or reading a head (interim or final).
    Head,
    /// Final head delivered; reading its body.
    Body(Framing),
    /// `End` delivered.
    Done,
}

/// Incremental decoder for one response on an upstream connection.
///
/// Until `End`, every byte passed to [`ResponseDecoder::decode`] is consumed
/// (partial lines are copied inside), so the caller need not keep leftovers
/// while a response is in progress. After an error the decoder is poisoned:
/// every later call returns the same error.
#[derive(Debug)]
pub struct ResponseDecoder {
    max_head_bytes: usize,
    head_request: bool,
    state: State,
    /// Head bytes from the status line on; kept whole so `httparse` can
    /// parse it in one pass once the blank line arrives.
    head: Vec<u8>,
    /// Offset in `head` where the line being read starts.
    line_start: usize,
    /// Bytes counted against the head limit, including skipped empty lines.
    head_bytes: usize,
    /// Partial chunk-size or trailer line.
    line: Vec<u8>,
    started: bool,
    error: Option<ResponseError>,
}

impl ResponseDecoder {
    /// `head_request`: the request was HEAD (no body whatever the headers say).
    pub fn new(max_head_bytes: usize, head_request: bool) -> Self {
        ResponseDecoder {
            max_head_bytes,
            head_request,
            state: State::Head,
            head: Vec::new(),
            line_start: 0,
            head_bytes: 0,
            line: Vec::new(),
            started: false,
            error: None,
        }
    }

    /// Consumes bytes from `input`; returns how many bytes it used and pushes the events they
    /// complete onto `events`. Bytes after `End` are NOT consumed (they belong to a next
    /// response, or are unexpected data the pool must treat as an error).
    /// State persists across calls, so any split of the input at any offset gives the same events
    /// (Body events may be split differently — tests must compare concatenated body bytes).
    ///
    /// On error, events for the bytes before the offending one may already
    /// have been pushed; the connection is unusable either way.
    pub fn decode(
        &mut self,
        input: &[u8],
        events: &mut Vec<ResponseEvent>,
    ) -> Result<usize, ResponseError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let mut cursor = Cursor {
            rest: input,
            used: 0,
        };
        let first = events.len();
        let mut sink = Sink { events, first };
        let result = self.step(&mut cursor, &mut sink);
        self.started |= cursor.used > 0;
        match result {
            Ok(()) => Ok(cursor.used),
            Err(err) => Err(self.fail(err)),
        }
    }

    /// The peer closed the connection: ends a close-delimited body (pushes End), or errors Truncated.
    ///
    /// Does nothing after `End`, so calling it for a connection closed
    /// between responses is harmless.
    pub fn eof(&mut self, events: &mut Vec<ResponseEvent>) -> Result<(), ResponseError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        match self.state {
            State::Done => Ok(()),
            State::Body(Framing::UntilClose) => {
                self.state = State::Done;
                events.push(ResponseEvent::End);
                Ok(())
            }
            State::Head | State::Body(_) => Err(self.fail(ResponseError::Truncated)),
        }
    }

    /// True once any byte of the response arrived (the retry rules need this).
    ///
    /// Counts bytes of skipped interim responses and leading empty lines,
    /// since once the upstream has sent anything the request may have been
    /// acted on.
    pub fn started(&self) -> bool {
        self.started
    }

    /// True after End.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    fn fail(&mut self, err: ResponseError) -> ResponseError {
        self.error = Some(err);
        // The buffers are never read again; free them now rather than when
        // the connection is finally dropped.
        self.head = Vec::new();
        self.line = Vec::new();
        err
    }

    fn step(&mut self, input: &mut Cursor<'_>, sink: &mut Sink<'_>) -> Result<(), ResponseError> {
        loop {
            match self.state {
                State::Head => {
                    let Some(parsed) = self.read_head(input)? else {
                        return Ok(());
                    };
                    self.head.clear();
                    self.line_start = 0;
                    self.head_bytes = 0;
                    if let Some(framing) = self.start_response(parsed, sink)? {
                        self.state = State::Body(framing);
                    }
                }
                State::Body(mut framing) => {
                    let done = self.read_body(input, &mut framing, sink)?;
                    self.state = State::Body(framing);
                    if !done {
                        return Ok(());
                    }
                    self.state = State::Done;
                    sink.events.push(ResponseEvent::End);
                }
                State::Done => return Ok(()),
            }
        }
    }

    /// Acts on a parsed head: skips interim responses (returning `None` with
    /// the state left at `Head`), otherwise emits `Head` and returns the
    /// body framing.
    fn start_response(
        &self,
        parsed: ParsedHead,
        sink: &mut Sink<'_>,
    ) -> Result<Option<Framing>, ResponseError> {
        let ParsedHead {
            status,
            minor_version,
            headers,
        } = parsed;
        if status == 101 {
            return Err(ResponseError::Malformed(
                "unexpected 101 Switching Protocols",
            ));
        }
        if (100..200).contains(&status) {
            return Ok(None);
        }
        let framing = if self.head_request || status == 204 || status == 304 {
            // RFC 9112 section 6.3: these never have a body, and any
            // framing fields describe the representation, not this message.
            Framing::Length(0)
        } else {
            body_framing(&headers, minor_version)?
        };
        let keep_alive = framing != Framing::UntilClose && keep_alive(&headers, minor_version);
        sink.events.push(ResponseEvent::Head(ResponseHead {
            status,
            headers,
            keep_alive,
        }));
        Ok(Some(framing))
    }

    /// Copies head bytes from `input` line by line, so each byte is scanned
    /// once however the head is split; parses once the blank line arrives.
    fn read_head(&mut self, input: &mut Cursor<'_>) -> Result<Option<ParsedHead>, ResponseError> {
        let max = self.max_head_bytes;
        loop {
            // Only reached with the head incomplete: it needs at least one
            // more byte, which would exceed the limit, so fail without
            // waiting (and at the same offset however the input is split).
            if self.head_bytes >= max {
                return Err(ResponseError::HeadTooLarge);
            }
            if input.is_empty() {
                return Ok(None);
            }
            let before = self.head.len();
            let complete = take_line(input, &mut self.head, max - self.head_bytes);
            self.head_bytes += self.head.len() - before;
            if !complete {
                continue;
            }
            let is_empty = matches!(self.head.get(self.line_start..), Some(b"\r\n" | b"\n"));
            if is_empty && self.line_start == 0 {
                // Some servers send a stray CRLF after a body; RFC 9112
                // section 2.2 allows ignoring empty lines before a start line.
                self.head.clear();
                continue;
            }
            if is_empty {
                return parse_head(&self.head).map(Some);
            }
            self.line_start = self.head.len();
        }
    }

    /// Advances body decoding; returns whether the body is complete.
    fn read_body(
        &mut self,
        input: &mut Cursor<'_>,
        framing: &mut Framing,
        sink: &mut Sink<'_>,
    ) -> Result<bool, ResponseError> {
        match framing {
            Framing::Length(remaining) => {
                let taken = input.take_u64(*remaining);
                sink.body(taken);
                *remaining -= taken.len() as u64;
                Ok(*remaining == 0)
            }
            Framing::UntilClose => {
                sink.body(input.take(usize::MAX));
                Ok(false)
            }
            Framing::Chunked(chunk) => self.read_chunked(input, chunk, sink),
        }
    }

    fn read_chunked(
        &mut self,
        input: &mut Cursor<'_>,
        chunk: &mut Chunk,
        sink: &mut Sink<'_>,
    ) -> Result<bool, ResponseError> {
        loop {
            match *chunk {
                Chunk::Size => {
                    let budget = MAX_CHUNK_LINE_BYTES.saturating_sub(self.line.len());
                    if !take_line(input, &mut self.line, budget) {
                        if self.line.len() >= MAX_CHUNK_LINE_BYTES {
                            return Err(ResponseError::Malformed("chunk size line too long"));
                        }
                        return Ok(false);
                    }
                    let size = parse_chunk_line(&self.line)?;
                    self.line.clear();
                    *chunk = if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(remaining) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let taken = input.take_u64(remaining);
                    sink.body(taken);
                    let left = remaining - taken.len() as u64;
                    *chunk = if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::DataCr | Chunk::DataLf => {
                    let expected = if *chunk == Chunk::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    match input.take(1).first() {
                        None => return Ok(false),
                        Some(&b) if b == expected => {
                            *chunk = if expected == b'\r' {
                                Chunk::DataLf
                            } else {
                                Chunk::Size
                            };
                        }
                        Some(_) => {
                            return Err(ResponseError::Malformed("missing CRLF after chunk data"))
                        }
                    }
                }
                Chunk::Trailers(seen) => {
                    let budget = self.max_head_bytes.saturating_sub(seen);
                    let before = self.line.len();
                    let complete = take_line(input, &mut self.line, budget);
                    let seen = seen + (self.line.len() - before);
                    *chunk = Chunk::Trailers(seen);
                    if !complete {
                        if seen >= self.max_head_bytes {
                            return Err(ResponseError::HeadTooLarge);
                        }
                        return Ok(false);
                    }
                    // Trailer fields are discarded, but line endings are
                    // still checked so framing is never guessed at.
                    if !self.line.ends_with(b"\r\n") {
                        return Err(ResponseError::Malformed("invalid line ending in trailer"));
                    }
                    let was_empty = self.line.len() == 2;
                    self.line.clear();
                    if was_empty {
                        return Ok(true);
                    }
                }
            }
        }
    }
}

/// The caller's event list, remembering where this call's events start so
/// body bytes are merged only into a `Body` pushed by this same call.
struct Sink<'a> {
    events: &'a mut Vec<ResponseEvent>,
    first: usize,
}

impl Sink<'_> {
    /// Pushes body bytes, extending this call's last event if it is a
    /// `Body`, so many small chunks do not become many events.
    fn body(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.events.len() > self.first {
            if let Some(ResponseEvent::Body(last)) = self.events.last_mut() {
                last.extend_from_slice(bytes);
                return;
            }
        }
        self.events.push(ResponseEvent::Body(bytes.to_vec()));
    }
}

struct ParsedHead {
    status: u16,
    minor_version: u8,
    headers: Vec<(String, String)>,
}

fn map_parse_error(err: httparse::Error) -> ResponseError {
    match err {
        httparse::Error::TooManyHeaders => ResponseError::HeadTooLarge,
        httparse::Error::HeaderName => ResponseError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => ResponseError::Malformed("invalid header value"),
        httparse::Error::NewLine => ResponseError::Malformed("invalid line ending"),
        httparse::Error::Status => ResponseError::Malformed("invalid status line"),
        httparse::Error::Token => ResponseError::Malformed("invalid token"),
        httparse::Error::Version => ResponseError::Malformed("invalid HTTP version"),
    }
}

/// Parses a complete head (status line through blank line).
fn parse_head(head: &[u8]) -> Result<ParsedHead, ResponseError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    match parsed.parse(head).map_err(map_parse_error)? {
        httparse::Status::Complete(len) if len == head.len() => {}
        _ => return Err(ResponseError::Malformed("invalid status line")),
    }
    let (Some(status), Some(minor_version)) = (parsed.code, parsed.version) else {
        return Err(ResponseError::Malformed("invalid status line"));
    };
    let headers = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(trim_ows(h.value)).into_owned(),
            )
        })
        .collect();
    Ok(ParsedHead {
        status,
        minor_version,
        headers,
    })
}

/// Trims optional whitespace (SP / HTAB) from both ends of a field value.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |last| last + 1);
    value.get(start..end).unwrap_or_default()
}

fn keep_alive(headers: &[(String, String)], minor_version: u8) -> bool {
    let mut close = false;
    let mut keep = false;
    for option in list_values(headers, "connection") {
        close |= option.eq_ignore_ascii_case("close");
        keep |= option.eq_ignore_ascii_case("keep-alive");
    }
    if close {
        false
    } else if minor_version == 0 {
        keep
    } else {
        true
    }
}

/// Applies RFC 9112 section 6.3 to a response that may carry a body.
fn body_framing(headers: &[(String, String)], minor_version: u8) -> Result<Framing, ResponseError> {
    let has_te = headers.iter().any(|(n, _)| n == "transfer-encoding");
    let has_cl = headers.iter().any(|(n, _)| n == "content-length");

    if has_te {
        // Both framings at once is the classic smuggling shape; a proxy
        // that guessed could splice one response into the next.
        if has_cl {
            return Err(ResponseError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        // RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding
        // must be treated as having faulty framing.
        if minor_version == 0 {
            return Err(ResponseError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        let mut codings = list_values(headers, "transfer-encoding");
        // Only chunked alone can be decoded; a compression coding would be
        // passed on as if it were the JSON or SSE payload.
        return match (codings.next(), codings.next()) {
            (Some(only), None) if only.eq_ignore_ascii_case("chunked") => {
                Ok(Framing::Chunked(Chunk::Size))
            }
            (None, _) => Err(ResponseError::Malformed("empty Transfer-Encoding")),
            _ => Err(ResponseError::Malformed("unsupported Transfer-Encoding")),
        };
    }

    if has_cl {
        return content_length(headers).map(Framing::Length);
    }

    Ok(Framing::UntilClose)
}

/// The single Content-Length value; repeated identical values (as separate
/// fields or a list) are accepted, as RFC 9110 section 8.6 allows.
fn content_length(headers: &[(String, String)]) -> Result<u64, ResponseError> {
    let mut found: Option<u64> = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        for item in value.split(',') {
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ResponseError::Malformed("invalid Content-Length"));
            }
            let parsed = item
                .bytes()
                .try_fold(0u64, |acc, digit| {
                    acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
                })
                .ok_or(ResponseError::Malformed("Content-Length out of range"))?;
            match found {
                Some(previous) if previous != parsed => {
                    return Err(ResponseError::Malformed(
                        "conflicting Content-Length values",
                    ));
                }
                _ => found = Some(parsed),
            }
        }
    }
    found.ok_or(ResponseError::Malformed("invalid Content-Length"))
}

/// Parses a complete chunk-size line (through its LF) into the chunk size.
fn parse_chunk_line(line: &[u8]) -> Result<u64, ResponseError> {
    // httparse reads an empty size as 0, which would end the body early.
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return Err(ResponseError::Malformed("invalid chunk size"));
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => Ok(size),
        // Partial here means the LF sat inside an extension without its CR.
        _ => Err(ResponseError::Malformed("invalid chunk size line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = DEFAULT_MAX_RESPONSE_HEAD_BYTES;

    /// Everything observable after feeding a byte stream.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        /// Events with adjacent `Body` events merged, since how body bytes
        /// are split into events depends on how the input was split.
        events: Vec<ResponseEvent>,
        /// Sum of the counts `decode` returned; 0 after an error.
        consumed: usize,
        result: Result<(), ResponseError>,
        started: bool,
        complete: bool,
    }

    impl Outcome {
        fn head(&self) -> &ResponseHead {
            match self.events.first() {
                Some(ResponseEvent::Head(head)) => head,
                other => panic!("expected a head first, got {other:?}"),
            }
        }

        fn body(&self) -> Vec<u8> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    ResponseEvent::Body(b) => Some(b.clone()),
                    _ => None,
                })
                .flatten()
                .collect()
        }

        fn ended(&self) -> bool {
            self.events.last() == Some(&ResponseEvent::End)
        }
    }

    /// Feeds `pieces` as a reactor would: appending to a buffer, decoding,
    /// and dropping what was consumed. Calls `eof()` at the end if asked.
    fn run(pieces: &[&[u8]], max: usize, head_request: bool, at_eof: bool) -> Outcome {
        let mut decoder = ResponseDecoder::new(max, head_request);
        let mut events = Vec::new();
        let mut pending = Vec::new();
        let mut consumed = 0;
        let mut result = Ok(());
        for piece in pieces {
            pending.extend_from_slice(piece);
            match decoder.decode(&pending, &mut events) {
                Ok(n) => {
                    assert!(n <= pending.len());
                    if !decoder.is_complete() {
                        assert_eq!(n, pending.len(), "bytes left before End");
                    }
                    consumed += n;
                    pending.drain(..n);
                }
                Err(e) => {
                    // Poisoned: the same error again, no events.
                    let mut more = Vec::new();
                    assert_eq!(decoder.decode(b"HTTP/1.1 200 OK\r\n", &mut more), Err(e));
                    assert_eq!(decoder.eof(&mut more), Err(e));
                    assert!(more.is_empty());
                    result = Err(e);
                    break;
                }
            }
        }
        if at_eof && result.is_ok() {
            result = decoder.eof(&mut events);
        }
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ResponseEvent::Body(b) if b.is_empty())),
            "empty Body event"
        );
        let mut merged: Vec<ResponseEvent> = Vec::new();
        for event in events {
            match (merged.last_mut(), event) {
                (Some(ResponseEvent::Body(last)), ResponseEvent::Body(more)) => {
                    last.extend_from_slice(&more)
                }
                (_, event) => merged.push(event),
            }
        }
        Outcome {
            events: merged,
            // After an error the connection is closed, and how much of the
            // offending call was used depends on the split.
            consumed: if result.is_ok() { consumed } else { 0 },
            result,
            started: decoder.started(),
            complete: decoder.is_complete(),
        }
    }

    /// Decodes `bytes` whole, split in two at every offset, and one byte at
    /// a time, asserting all agree; returns the whole-input outcome.
    fn every_way(bytes: &[u8], max: usize, head_request: bool, at_eof: bool) -> Outcome {
        let whole = run(&[bytes], max, head_request, at_eof);
        for i in 0..=bytes.len() {
            let split = run(&[&bytes[..i], &bytes[i..]], max, head_request, at_eof);
            assert_eq!(split, whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            run(&singles, max, head_request, at_eof),
            whole,
            "one byte at a time"
        );
        whole
    }

    /// A complete response that must end without needing EOF.
    fn complete(bytes: &[u8]) -> Outcome {
        let outcome = every_way(bytes, MAX, false, false);
        assert_eq!(outcome.result, Ok(()));
        assert!(outcome.ended() && outcome.complete);
        // EOF after End changes nothing.
        assert_eq!(every_way(bytes, MAX, false, true), outcome);
        outcome
    }

    fn error(bytes: &[u8]) -> ResponseError {
        match every_way(bytes, MAX, false, true).result {
            Err(e) => e,
            Ok(()) => panic!("expected an error for {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn content_length() {
        let bytes =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello";
        let outcome = complete(bytes);
        assert_eq!(
            outcome.events,
            vec![
                ResponseEvent::Head(ResponseHead {
                    status: 200,
                    headers: headers(&[
                        ("content-type", "application/json"),
                        ("content-length", "5")
                    ]),
                    keep_alive: true,
                }),
                ResponseEvent::Body(b"hello".to_vec()),
                ResponseEvent::End,
            ]
        );
        assert_eq!(outcome.consumed, bytes.len());
        assert!(outcome.started);
    }

    #[test]
    fn zero_content_length_ends_with_head() {
        let outcome = complete(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(outcome.events.len(), 2);
        assert_eq!(outcome.head().status, 202);
    }

    #[test]
    fn repeated_identical_content_length_is_accepted() {
        let outcome =
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok");
        assert_eq!(outcome.body(), b"ok");
    }

    #[test]
    fn header_values_are_trimmed_lowercased_and_lossy() {
        let outcome = complete(
            b"HTTP/1.1 200 OK\r\nX-Thing:  \t spaced \t\r\nX-Bin: a\xffb\r\nx-thing: second\r\nContent-Length: 0\r\n\r\n",
        );
        let head = outcome.head();
        assert_eq!(head.header("X-THING"), Some("spaced"));
        assert_eq!(head.header("x-bin"), Some("a\u{fffd}b"));
        assert_eq!(head.header("missing"), None);
        assert_eq!(
            head.headers.first().map(|(n, _)| n.as_str()),
            Some("x-thing")
        );
    }

    #[test]
    fn status_line_without_reason_and_bare_lf() {
        let outcome = complete(b"HTTP/1.1 200\nContent-Length: 2\n\nok");
        assert_eq!(outcome.head().status, 200);
        assert_eq!(outcome.body(), b"ok");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n\
            5;name=value\r\nhello\r\n\
            6 ; a=\"b;c\" ; d\r\n world\r\n\
            A\r\n0123456789\r\n\
            0;last\r\nX-Trailer: 1\r\nOther: two\r\n\r\n";
        let outcome = complete(bytes);
        assert_eq!(outcome.body(), b"hello world0123456789");
        assert_eq!(outcome.consumed, bytes.len());
        assert!(outcome.head().keep_alive);
        assert_eq!(outcome.events.len(), 3);
    }

    #[test]
    fn chunked_without_trailers() {
        let outcome =
            complete(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(outcome.body(), b"abc");
    }

    #[test]
    fn chunked_empty_body_has_no_body_event() {
        let outcome = complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(outcome.events.len(), 2);
    }

    #[test]
    fn close_delimited_ends_at_eof() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\n";
        let outcome = every_way(bytes, MAX, false, true);
        assert_eq!(outcome.result, Ok(()));
        assert!(outcome.ended() && outcome.complete);
        assert!(!outcome.head().keep_alive);
        assert_eq!(outcome.body(), b"data: x\n\n");
        assert_eq!(outcome.consumed, bytes.len());

        let open = every_way(bytes, MAX, false, false);
        assert_eq!(open.result, Ok(()));
        assert!(!open.ended() && !open.complete);
        assert_eq!(open.body(), b"data: x\n\n");
    }

    #[test]
    fn close_delimited_empty_body() {
        let outcome = every_way(b"HTTP/1.1 200 OK\r\n\r\n", MAX, false, true);
        assert_eq!(outcome.result, Ok(()));
        assert_eq!(outcome.events.len(), 2);
        assert!(!outcome.head().keep_alive);
    }

    #[test]
    fn no_content_has_no_body() {
        let bytes = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n";
        let outcome = complete(bytes);
        assert_eq!(outcome.events.len(), 2);
        assert_eq!(outcome.consumed, bytes.len());
        assert!(outcome.head().keep_alive);
    }

    #[test]
    fn not_modified_has_no_body() {
        let outcome = complete(b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(outcome.head().status, 304);
        assert_eq!(outcome.events.len(), 2);
    }

    #[test]
    fn head_request_has_no_body() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        let outcome = every_way(bytes, MAX, true, false);
        assert_eq!(outcome.result, Ok(()));
        assert!(outcome.ended());
        assert_eq!(outcome.events.len(), 2);
        assert!(outcome.head().keep_alive);
        assert_eq!(outcome.consumed, bytes.len());

        // Without Content-Length it would be close-delimited for any other method.
        let outcome = every_way(b"HTTP/1.1 200 OK\r\n\r\n", MAX, true, false);
        assert!(outcome.ended());
        assert!(outcome.head().keep_alive);
    }

    #[test]
    fn interim_responses_are_skipped() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let outcome = complete(bytes);
        assert_eq!(outcome.head().status, 200);
        assert_eq!(outcome.head().header("link"), None);
        assert_eq!(outcome.body(), b"ok");
        assert_eq!(outcome.events.len(), 3);
        assert_eq!(outcome.consumed, bytes.len());
    }

    #[test]
    fn interim_response_alone_is_started_but_incomplete() {
        let outcome = every_way(b"HTTP/1.1 100 Continue\r\n\r\n", MAX, false, false);
        assert_eq!(outcome.result, Ok(()));
        assert!(outcome.events.is_empty());
        assert!(outcome.started && !outcome.complete);
        assert_eq!(
            every_way(b"HTTP/1.1 100 Continue\r\n\r\n", MAX, false, true).result,
            Err(ResponseError::Truncated)
        );
    }

    #[test]
    fn switching_protocols_is_an_error() {
        assert!(matches!(
            error(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
            ResponseError::Malformed(_)
        ));
    }

    #[test]
    fn pipelined_responses_stop_after_first_end() {
        let first: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none";
        let second: &[u8] =
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n";
        let both = [first, second].concat();

        let outcome = complete(&both);
        assert_eq!(outcome.consumed, first.len());
        assert_eq!(outcome.body(), b"one");
        assert_eq!(outcome.events.len(), 3);

        let next = complete(&both[outcome.consumed..]);
        assert_eq!(next.head().status, 201);
        assert_eq!(next.body(), b"two");
        assert_eq!(next.consumed, second.len());
    }

    #[test]
    fn nothing_is_consumed_after_end() {
        let mut decoder = ResponseDecoder::new(MAX, false);
        let mut events = Vec::new();
        let bytes = b"HTTP/1.1 204 No Content\r\n\r\nextra";
        assert_eq!(decoder.decode(bytes, &mut events), Ok(bytes.len() - 5));
        assert!(decoder.is_complete());
        assert_eq!(decoder.decode(b"extra", &mut events), Ok(0));
        assert_eq!(decoder.eof(&mut events), Ok(()));
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn body_events_merge_only_within_one_call() {
        let mut decoder = ResponseDecoder::new(MAX, false);
        let mut events = vec![ResponseEvent::Body(b"stale".to_vec())];
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(decoder.decode(head, &mut events), Ok(head.len()));
        let body = b"1\r\na\r\n1\r\nb\r\n";
        assert_eq!(decoder.decode(body, &mut events), Ok(body.len()));
        let more = b"1\r\nc\r\n0\r\n\r\n";
        assert_eq!(decoder.decode(more, &mut events), Ok(more.len()));
        assert_eq!(events.len(), 5);
        assert_eq!(events.get(2), Some(&ResponseEvent::Body(b"ab".to_vec())));
        assert_eq!(events.get(3), Some(&ResponseEvent::Body(b"c".to_vec())));
        assert_eq!(events.get(4), Some(&ResponseEvent::End));
    }

    #[test]
    fn connection_close() {
        let outcome =
            complete(b"HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\nContent-Length: 0\r\n\r\n");
        assert!(!outcome.head().keep_alive);
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let outcome = complete(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert!(!outcome.head().keep_alive);
        let outcome =
            complete(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok");
        assert!(outcome.head().keep_alive);

        // Close-delimited never allows reuse, whatever Connection says.
        let outcome = every_way(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nbody",
            MAX,
            false,
            true,
        );
        assert_eq!(outcome.result, Ok(()));
        assert!(!outcome.head().keep_alive);
        assert_eq!(outcome.body(), b"body");
    }

    #[test]
    fn truncated_content_length() {
        let outcome = every_way(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            MAX,
            false,
            true,
        );
        assert_eq!(outcome.result, Err(ResponseError::Truncated));
        assert_eq!(outcome.body(), b"hello");
        assert!(!outcome.ended() && !outcome.complete);
    }

    #[test]
    fn truncated_chunked() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "",
            "5",
            "5\r\nhel",
            "5\r\nhello",
            "5\r\nhello\r",
            "5\r\nhello\r\n",
            "5\r\nhello\r\n0\r\n",
            "5\r\nhello\r\n0\r\nX-Trailer: 1\r\n",
        ] {
            let bytes = format!("{head}{body}");
            let outcome = every_way(bytes.as_bytes(), MAX, false, true);
            assert_eq!(outcome.result, Err(ResponseError::Truncated), "{body:?}");
            assert!(!outcome.ended());
        }
    }

    #[test]
    fn truncated_head() {
        let outcome = every_way(b"HTTP/1.1 200 OK\r\nContent-", MAX, false, true);
        assert_eq!(outcome.result, Err(ResponseError::Truncated));
        assert!(outcome.events.is_empty());
        assert!(outcome.started);
    }

    #[test]
    fn eof_before_any_byte_is_truncated_and_not_started() {
        let mut decoder = ResponseDecoder::new(MAX, false);
        let mut events = Vec::new();
        assert_eq!(decoder.decode(b"", &mut events), Ok(0));
        assert!(!decoder.started());
        assert_eq!(decoder.eof(&mut events), Err(ResponseError::Truncated));
        assert!(!decoder.started());
        assert!(events.is_empty());
    }

    #[test]
    fn started_after_first_byte() {
        let mut decoder = ResponseDecoder::new(MAX, false);
        let mut events = Vec::new();
        assert!(!decoder.started() && !decoder.is_complete());
        assert_eq!(decoder.decode(b"H", &mut events), Ok(1));
        assert!(decoder.started());
        assert!(events.is_empty());
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let outcome = complete(b"\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(outcome.head().status, 200);
    }

    #[test]
    fn head_limit() {
        let bytes = b"HTTP/1.1 200 OK\r\nX-Padding: 0123456789\r\n\r\n";
        let exact = every_way(bytes, bytes.len(), false, false);
        assert_eq!(exact.result, Ok(()));
        assert!(matches!(exact.events.first(), Some(ResponseEvent::Head(_))));

        let over = every_way(bytes, bytes.len() - 1, false, false);
        assert_eq!(over.result, Err(ResponseError::HeadTooLarge));
        assert!(over.events.is_empty());

        // Leading empty lines count too.
        let padded = [b"\r\n".as_slice(), bytes].concat();
        let over = every_way(&padded, bytes.len(), false, false);
        assert_eq!(over.result, Err(ResponseError::HeadTooLarge));

        // An endless head fails as soon as the limit is reached.
        let endless = vec![b'a'; 100];
        let over = every_way(&endless, 50, false, false);
        assert_eq!(over.result, Err(ResponseError::HeadTooLarge));
    }

    #[test]
    fn too_many_headers() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_RESPONSE_HEADERS {
            bytes.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let outcome = run(&[&bytes], MAX, false, false);
        assert_eq!(outcome.result, Err(ResponseError::HeadTooLarge));
    }

    #[test]
    fn trailer_limit() {
        let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        bytes.extend_from_slice(&[b'x'; 200]);
        let outcome = every_way(&bytes, 100, false, false);
        assert_eq!(outcome.result, Err(ResponseError::HeadTooLarge));
    }

    #[test]
    fn malformed_status_lines() {
        for bytes in [
            &b"HTTP/1.1 2x0 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            b"{\"jsonrpc\":\"2.0\"}\n\n",
            b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: no name\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nFolded: a\r\n  b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        ] {
            assert!(
                matches!(error(bytes), ResponseError::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn content_length_with_transfer_encoding() {
        assert_eq!(
            error(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ResponseError::Malformed("both Content-Length and Transfer-Encoding")
        );
    }

    #[test]
    fn unsupported_transfer_encodings() {
        for te in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "chunked, gzip",
            ",",
        ] {
            let bytes = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(error(bytes.as_bytes()), ResponseError::Malformed(_)),
                "{te}"
            );
        }
        // Split across two fields is still two codings.
        assert!(matches!(
            error(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            ResponseError::Malformed(_)
        ));
        assert!(matches!(
            error(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ResponseError::Malformed(_)
        ));
    }

    #[test]
    fn bad_content_lengths() {
        for cl in [
            "abc",
            "-1",
            "+5",
            "",
            "5 5",
            "0x10",
            "5, 6",
            "99999999999999999999999",
        ] {
            let bytes = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert!(
                matches!(error(bytes.as_bytes()), ResponseError::Malformed(_)),
                "{cl:?}"
            );
        }
        assert_eq!(
            error(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            ResponseError::Malformed("conflicting Content-Length values")
        );
    }

    #[test]
    fn bad_chunks() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "zz\r\n",
            "\r\n",
            ";ext\r\n",
            "5\n",
            "5;ext\n",
            "5 5\r\n",
            "-5\r\n",
            "5\r\nhelloX",
            "5\r\nhello\rX",
            "5\r\nhello\n",
            "11111111111111111\r\n",
            "0\r\nX-Trailer: 1\n",
        ] {
            let bytes = format!("{head}{body}");
            assert!(
                matches!(error(bytes.as_bytes()), ResponseError::Malformed(_)),
                "{body:?}"
            );
        }
        let mut long = head.as_bytes().to_vec();
        long.extend_from_slice(b"5;");
        long.extend_from_slice(&vec![b'x'; MAX_CHUNK_LINE_BYTES]);
        assert_eq!(
            error(&long),
            ResponseError::Malformed("chunk size line too long")
        );
    }

    #[test]
    fn huge_chunk_size_is_streamed_not_allocated() {
        let outcome = every_way(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
            MAX,
            false,
            false,
        );
        assert_eq!(outcome.result, Ok(()));
        assert_eq!(outcome.body(), b"abc");
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            ResponseError::Malformed("x").to_string(),
            "malformed upstream response: x"
        );
        assert_eq!(
            ResponseError::Truncated.to_string(),
            "upstream response truncated"
        );
        assert_eq!(
            ResponseError::HeadTooLarge.to_string(),
            "upstream response head too large"
        );
    }

    /// Deterministic pseudo-random bytes, so the no-panic sweep is reproducible.
    fn lcg(seed: &mut u64) -> u8 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u8
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let samples: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
        ];
        let alphabet = b"\r\n :;0123456789abcdefHTTP/1.";
        let mut seed = 7;
        for round in 0..3000 {
            let mut bytes = samples.get(round % samples.len()).unwrap().to_vec();
            for _ in 0..(round % 5 + 1) {
                let at = usize::from(lcg(&mut seed)) % bytes.len();
                let pick = usize::from(lcg(&mut seed)) % alphabet.len();
                *bytes.get_mut(at).unwrap() = alphabet[pick];
            }
            let pieces: Vec<&[u8]> = bytes.chunks(usize::from(lcg(&mut seed)) % 7 + 1).collect();
            for head_request in [false, true] {
                run(&pieces, 40 + round % 60, head_request, true);
            }
        }
    }

    fn request(
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> String {
        let mut out = Vec::new();
        write_request(&mut out, method, target, host, headers, body);
        String::from_utf8(out).unwrap()
    }

    /// Parses an encoded request with httparse, so tests check it is
    /// well-formed, not just equal to an expected string.
    fn parse_request(bytes: &[u8]) -> (String, String, Vec<(String, String)>, usize) {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut slots);
        let len = match parsed.parse(bytes).unwrap() {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => panic!("partial request"),
        };
        let fields = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        (
            parsed.method.unwrap().to_string(),
            parsed.path.unwrap().to_string(),
            fields,
            len,
        )
    }

    #[test]
    fn post_with_body() {
        let text = request(
            "POST",
            "/mcp",
            "127.0.0.1:8080",
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
            ],
            b"{}",
        );
        assert_eq!(
            text,
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             Content-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\n\
             Content-Length: 2\r\n\r\n{}"
        );
        let (method, target, fields, len) = parse_request(text.as_bytes());
        assert_eq!((method.as_str(), target.as_str()), ("POST", "/mcp"));
        assert_eq!(fields.len(), 4);
        assert_eq!(text.len() - len, 2);
    }

    #[test]
    fn bodiless_methods_omit_content_length_only_when_empty() {
        for method in ["GET", "DELETE", "HEAD"] {
            assert_eq!(
                request(method, "/mcp", "h", &[], b""),
                format!("{method} /mcp HTTP/1.1\r\nHost: h\r\n\r\n")
            );
        }
        assert_eq!(
            request("DELETE", "/mcp", "h", &[], b"x"),
            "DELETE /mcp HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"
        );
        assert_eq!(
            request("POST", "/mcp", "h", &[], b""),
            "POST /mcp HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn caller_framing_headers_are_dropped() {
        let text = request(
            "POST",
            "/",
            "up:1",
            &[
                ("host", "evil"),
                ("Content-Length", "99"),
                ("Transfer-Encoding", "chunked"),
                ("CONNECTION", "close"),
                ("Mcp-Session-Id", "abc"),
            ],
            b"hi",
        );
        assert_eq!(
            text,
            "POST / HTTP/1.1\r\nHost: up:1\r\nMcp-Session-Id: abc\r\nContent-Length: 2\r\n\r\nhi"
        );
    }

    #[test]
    fn injection_is_stripped() {
        let text = request(
            "GET\r\n",
            "/a b\r\nX: y",
            "h\r\nEvil: 1",
            &[
                ("X-Ok", "a\r\nEvil: 1\0"),
                ("Bad\r\nName", "v"),
                ("", "v"),
                ("Bad Name", "v"),
            ],
            b"",
        );
        assert_eq!(
            text,
            "GET /abX:y HTTP/1.1\r\nHost: hEvil: 1\r\nX-Ok: aEvil: 1\r\n\r\n"
        );
        let (_, _, fields, len) = parse_request(text.as_bytes());
        assert_eq!(fields.len(), 2);
        assert_eq!(len, text.len());
    }

    #[test]
    fn empty_target_becomes_root() {
        assert_eq!(
            request("GET", "", "h", &[], b""),
            "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
        );
    }

    #[test]
    fn request_appends_after_existing_bytes() {
        let mut out = b"previous".to_vec();
        write_request(&mut out, "GET", "/", "h", &[], b"");
        assert_eq!(out, b"previousGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn encoded_request_round_trips_through_a_decoder_shape() {
        // The response decoder's framing rules applied to the request bytes:
        // the body length written is exactly the body that follows the head.
        let body = vec![b'z'; 1000];
        let mut out = Vec::new();
        write_request(&mut out, "POST", "/mcp", "h", &[("X-A", "1")], &body);
        let (_, _, fields, len) = parse_request(&out);
        let cl = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.clone());
        assert_eq!(cl.as_deref(), Some("1000"));
        assert_eq!(&out[len..], body.as_slice());
    }
}
