//! Sans-IO HTTP/1.1 request decoder for the server side.
//!
//! Owns turning bytes read from a client socket into [`Request`] values:
//! request-head parsing (via `httparse`), message framing (Content-Length,
//! chunked, or no body), the size limits that protect the single-threaded
//! reactor, and the keep-alive / `Expect: 100-continue` decisions derived
//! from the head. It performs no I/O: the reactor appends what it reads to a
//! buffer and calls [`RequestDecoder::decode`], which drains what it used.

use std::fmt;

use super::cursor::{take_line, Cursor};
use super::list_values;

/// Largest request head accepted; a larger one gets 431.
///
/// Counts every byte up to and including the blank line that ends the head,
/// plus any empty lines skipped before the request line, so a client cannot
/// keep a connection busy with bytes that count against no limit.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest request body accepted; a larger one gets 413.
///
/// Counts decoded body bytes, so chunk framing does not count against it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Most header fields accepted in one request head; more gets 431.
///
/// `httparse` parses into a fixed array, and a head with more fields than
/// this is far outside what MCP clients send.
pub const MAX_HEADERS: usize = 64;

/// Longest chunk-size line (size, extensions and CRLF) accepted; longer gets 400.
///
/// Chunk extensions are discarded, so without this cap a client could stream
/// an endless extension that counts against neither the head nor body limit.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// Size limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`DEFAULT_MAX_HEAD_BYTES`]; also bounds the trailer section of a chunked body.
    pub max_head_bytes: usize,
    /// See [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// One complete request, head and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method as sent, e.g. `POST` (methods are case-sensitive).
    pub method: String,
    /// Request-target as sent, e.g. `/mcp?x=1`.
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in arrival order; names lowercased ASCII, values trimmed
    /// of surrounding whitespace, non-UTF-8 values decoded lossily.
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunk framing removed).
    pub body: Vec<u8>,
    /// Whether the client allows the connection to be reused after this request.
    pub keep_alive: bool,
}

impl Request {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Path part of target without query.
    ///
    /// An absolute-form target (`http://host/p?q`) yields its path (`/p`),
    /// because RFC 9112 requires servers to accept that form and routing
    /// should not depend on which form the client chose.
    pub fn path(&self) -> &str {
        let target = self.target.as_str();
        let target = match strip_scheme(target) {
            Some(after_scheme) => match after_scheme.find('/') {
                Some(slash) => after_scheme.get(slash..).unwrap_or("/"),
                None => "/",
            },
            None => target,
        };
        match target.find(['?', '#']) {
            Some(end) => target.get(..end).unwrap_or(target),
            None => target,
        }
    }
}

/// Returns what follows `http://` or `https://` (case-insensitive), if present.
fn strip_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        if head.eq_ignore_ascii_case(scheme) {
            target.get(scheme.len()..)
        } else {
            None
        }
    })
}

/// Why a request could not be decoded; each maps to the status to reply with
/// before closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// 431: head (or chunked trailer section, or header count) over the limit.
    HeadTooLarge,
    /// 413: declared or decoded body over the limit.
    BodyTooLarge,
    /// 400: malformed head or framing; the text says which rule was broken.
    BadRequest(&'static str),
    /// 501: a Transfer-Encoding other than `chunked`.
    NotImplemented,
}

impl DecodeError {
    /// Status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            DecodeError::HeadTooLarge => 431,
            DecodeError::BodyTooLarge => 413,
            DecodeError::BadRequest(_) => 400,
            DecodeError::NotImplemented => 501,
        }
    }

    /// Canonical reason phrase for [`DecodeError::status`], for the status line.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::HeadTooLarge => "Request Header Fields Too Large",
            DecodeError::BodyTooLarge => "Content Too Large",
            DecodeError::BadRequest(_) => "Bad Request",
            DecodeError::NotImplemented => "Not Implemented",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadRequest(detail) => write!(f, "400 Bad Request: {detail}"),
            other => write!(f, "{} {}", other.status(), other.reason()),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Outcome of one [`RequestDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed; everything usable has been consumed.
    Incomplete,
    /// A whole request; bytes after it are left in the input.
    Request(Request),
}

/// Where the decoder is inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line into the line buffer.
    Size,
    /// Copying chunk data; this many bytes are still due.
    Data(usize),
    /// Expecting the CRLF that closes chunk data.
    DataEnd,
    /// After the last chunk: discarding trailer lines until an empty one;
    /// counts trailer bytes so far.
    Trailers(usize),
}

/// How the body of the current request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Content-Length (or no body at all, as length 0); bytes still due.
    Length(usize),
    Chunked(Chunk),
}

#[derive(Debug)]
enum State {
    /// Waiting for or reading a request head.
    Head,
    /// Head parsed; reading its body.
    Body { request: Request, framing: Framing },
}

/// Incremental request decoder for one connection.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    /// Head bytes from the request line on; kept whole so `httparse` can
    /// parse it in one pass once the blank line arrives.
    head: Vec<u8>,
    /// Offset in `head` where the line being read starts.
    line_start: usize,
    /// Bytes counted against the head limit, including skipped empty lines.
    head_bytes: usize,
    /// Partial chunk-size or trailer line, so bytes can be drained from the
    /// caller's buffer as soon as they are seen.
    line: Vec<u8>,
    expect_continue: bool,
    error: Option<DecodeError>,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            state: State::Head,
            head: Vec::new(),
            line_start: 0,
            head_bytes: 0,
            line: Vec::new(),
            expect_continue: false,
            error: None,
        }
    }

    /// Decodes from the front of `input`, removing (draining) exactly the bytes it consumed,
    /// so pipelined bytes for the next request stay in `input`. Call again after a Request
    /// to decode the next one. Keeps internal state across calls so a request split
    /// across many calls at any byte boundary decodes identically. After an error the
    /// decoder is poisoned (further calls return the same error); the connection will be closed.
    ///
    /// Head bytes and partial chunk-size/trailer lines are copied into the
    /// decoder as they arrive; only an incomplete CRLF after chunk data may be
    /// left in `input` while returning `Incomplete`.
    pub fn decode(&mut self, input: &mut Vec<u8>) -> Result<Decoded, DecodeError> {
        let (decoded, used) = self.decode_slice(input)?;
        input.drain(..used.min(input.len()));
        Ok(decoded)
    }

    /// Like [`RequestDecoder::decode`] but leaves `input` alone and returns
    /// how many bytes from its front were consumed.
    ///
    /// Lets a reactor decode many pipelined requests from one read buffer
    /// and compact it once, instead of shifting the buffer per request.
    pub fn decode_slice(&mut self, input: &[u8]) -> Result<(Decoded, usize), DecodeError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let mut cursor = Cursor {
            rest: input,
            used: 0,
        };
        match self.step(&mut cursor) {
            Ok(decoded) => Ok((decoded, cursor.used)),
            Err(err) => {
                self.error = Some(err);
                self.reset();
                Err(err)
            }
        }
    }

    /// True once some bytes of a request head have arrived but the head is not complete
    /// (the reactor uses this for a 408 head timeout). False between requests.
    ///
    /// Empty lines skipped before a request line count as head bytes, so a
    /// client trickling CRLFs is still subject to the head timeout.
    pub fn head_in_progress(&self) -> bool {
        self.error.is_none() && matches!(self.state, State::Head) && self.head_bytes > 0
    }

    /// True if the head just decoded asked `Expect: 100-continue` and the body has not
    /// all arrived; returns true only once per request (take semantics), so the caller writes
    /// `HTTP/1.1 100 Continue` once.
    ///
    /// Ignored for HTTP/1.0 requests, as RFC 9110 requires, and cleared when
    /// the request completes so a late 100 is never written after the body.
    pub fn take_expect_continue(&mut self) -> bool {
        std::mem::take(&mut self.expect_continue)
    }

    fn reset(&mut self) {
        self.state = State::Head;
        self.head.clear();
        self.line_start = 0;
        self.head_bytes = 0;
        self.line.clear();
        self.expect_continue = false;
    }

    fn step(&mut self, input: &mut Cursor<'_>) -> Result<Decoded, DecodeError> {
        let mut expects = false;
        if let State::Head = self.state {
            let Some((request, framing, wants_continue)) = self.read_head(input)? else {
                return Ok(Decoded::Incomplete);
            };
            self.head.clear();
            self.line_start = 0;
            self.head_bytes = 0;
            expects = wants_continue;
            self.state = State::Body { request, framing };
        }

        let Self {
            state,
            line,
            limits,
            ..
        } = self;
        let done = match state {
            State::Body { request, framing } => {
                read_body(input, &mut request.body, framing, line, limits)?
            }
            State::Head => false,
        };

        if done {
            let finished = std::mem::replace(&mut self.state, State::Head);
            self.reset();
            if let State::Body { request, .. } = finished {
                return Ok(Decoded::Request(request));
            }
            return Ok(Decoded::Incomplete);
        }
        if expects {
            self.expect_continue = true;
        }
        Ok(Decoded::Incomplete)
    }

    /// Copies head bytes from `input` line by line, so each byte is scanned
    /// once however the head is split; parses once the blank line arrives.
    fn read_head(
        &mut self,
        input: &mut Cursor<'_>,
    ) -> Result<Option<(Request, Framing, bool)>, DecodeError> {
        let max = self.limits.max_head_bytes;
        loop {
            // Only reached with the head incomplete: it needs at least one
            // more byte, which would exceed the limit, so fail without waiting.
            if self.head_bytes >= max {
                return Err(DecodeError::HeadTooLarge);
            }
            if input.is_empty() {
                return Ok(None);
            }
            let budget = max - self.head_bytes;
            let before = self.head.len();
            let complete = take_line(input, &mut self.head, budget);
            self.head_bytes += self.head.len() - before;
            if !complete {
                continue;
            }
            let is_empty = matches!(self.head.get(self.line_start..), Some(b"\r\n" | b"\n"));
            if is_empty && self.line_start == 0 {
                // RFC 9112 section 2.2: ignore empty lines before the request line.
                self.head.clear();
                continue;
            }
            if is_empty {
                return parse_head(&self.head, &self.limits).map(Some);
            }
            self.line_start = self.head.len();
        }
    }
}

fn map_parse_error(err: httparse::Error) -> DecodeError {
    match err {
        httparse::Error::TooManyHeaders => DecodeError::HeadTooLarge,
        httparse::Error::HeaderName => DecodeError::BadRequest("invalid header name"),
        httparse::Error::HeaderValue => DecodeError::BadRequest("invalid header value"),
        httparse::Error::NewLine => DecodeError::BadRequest("invalid line ending"),
        httparse::Error::Token => DecodeError::BadRequest("invalid request line"),
        httparse::Error::Version => DecodeError::BadRequest("invalid HTTP version"),
        httparse::Error::Status => DecodeError::BadRequest("malformed request head"),
    }
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

/// Parses a complete head (request line through blank line) and decides framing.
fn parse_head(head: &[u8], limits: &Limits) -> Result<(Request, Framing, bool), DecodeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(head).map_err(map_parse_error)? {
        httparse::Status::Complete(len) if len == head.len() => {}
        _ => return Err(DecodeError::BadRequest("malformed request head")),
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(DecodeError::BadRequest("malformed request line"));
    };

    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(trim_ows(h.value)).into_owned(),
            )
        })
        .collect();

    let framing = body_framing(&headers, minor_version, limits)?;
    let keep_alive = keep_alive(&headers, minor_version);
    let body_expected = framing != Framing::Length(0);
    let expects_continue = minor_version >= 1
        && body_expected
        && headers
            .iter()
            .any(|(n, v)| n == "expect" && v.eq_ignore_ascii_case("100-continue"));

    let request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        headers,
        body: Vec::new(),
        keep_alive,
    };
    Ok((request, framing, expects_continue))
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

/// Applies RFC 9112 section 6.3 to pick how the body is delimited.
fn body_framing(
    headers: &[(String, String)],
    minor_version: u8,
    limits: &Limits,
) -> Result<Framing, DecodeError> {
    let has_te = headers.iter().any(|(n, _)| n == "transfer-encoding");
    let has_cl = headers.iter().any(|(n, _)| n == "content-length");

    if has_te {
        // Either combination is a classic request-smuggling vector, so the
        // message is refused rather than guessed at.
        if has_cl {
            return Err(DecodeError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if minor_version == 0 {
            return Err(DecodeError::BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
        let mut chunked = 0usize;
        let mut codings = 0usize;
        for coding in list_values(headers, "transfer-encoding") {
            codings += 1;
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else {
                return Err(DecodeError::NotImplemented);
            }
        }
        return match (codings, chunked) {
            (0, _) => Err(DecodeError::BadRequest("empty Transfer-Encoding")),
            (1, 1) => Ok(Framing::Chunked(Chunk::Size)),
            _ => Err(DecodeError::BadRequest("chunked applied more than once")),
        };
    }

    if has_cl {
        let length = content_length(headers)?;
        if length > limits.max_body_bytes as u64 {
            return Err(DecodeError::BodyTooLarge);
        }
        let length = usize::try_from(length).map_err(|_| DecodeError::BodyTooLarge)?;
        return Ok(Framing::Length(length));
    }

    // A request without framing headers has no body (RFC 9112 section 6.3).
    Ok(Framing::Length(0))
}

/// The single Content-Length value; repeated identical values (as separate
/// fields or a list) are accepted, as RFC 9110 section 8.6 allows.
/// Values too large for u64 saturate, which the body limit then rejects.
fn content_length(headers: &[(String, String)]) -> Result<u64, DecodeError> {
    let mut found: Option<u64> = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        for item in value.split(',') {
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecodeError::BadRequest("invalid Content-Length"));
            }
            let parsed = item.bytes().fold(0u64, |acc, digit| {
                acc.saturating_mul(10)
                    .saturating_add(u64::from(digit - b'0'))
            });
            match found {
                Some(previous) if previous != parsed => {
                    return Err(DecodeError::BadRequest("conflicting Content-Length values"));
                }
                _ => found = Some(parsed),
            }
        }
    }
    found.ok_or(DecodeError::BadRequest("invalid Content-Length"))
}

/// Advances body decoding; returns whether the body is complete.
fn read_body(
    input: &mut Cursor<'_>,
    body: &mut Vec<u8>,
    framing: &mut Framing,
    line: &mut Vec<u8>,
    limits: &Limits,
) -> Result<bool, DecodeError> {
    match framing {
        Framing::Length(remaining) => {
            let taken = input.take(*remaining);
            body.extend_from_slice(taken);
            *remaining -= taken.len();
            Ok(*remaining == 0)
        }
        Framing::Chunked(chunk) => read_chunked(input, body, chunk, line, limits),
    }
}

fn read_chunked(
    input: &mut Cursor<'_>,
    body: &mut Vec<u8>,
    chunk: &mut Chunk,
    line: &mut Vec<u8>,
    limits: &Limits,
) -> Result<bool, DecodeError> {
    loop {
        match *chunk {
            Chunk::Size => {
                let budget = MAX_CHUNK_LINE_BYTES.saturating_sub(line.len());
                if !take_line(input, line, budget) {
                    if line.len() >= MAX_CHUNK_LINE_BYTES {
                        return Err(DecodeError::BadRequest("chunk size line too long"));
                    }
                    return Ok(false);
                }
                let size = parse_chunk_line(line)?;
                line.clear();
                if size == 0 {
                    *chunk = Chunk::Trailers(0);
                    continue;
                }
                let total = (body.len() as u64).saturating_add(size);
                if total > limits.max_body_bytes as u64 {
                    return Err(DecodeError::BodyTooLarge);
                }
                let size = usize::try_from(size).map_err(|_| DecodeError::BodyTooLarge)?;
                *chunk = Chunk::Data(size);
            }
            Chunk::Data(remaining) => {
                if input.is_empty() {
                    return Ok(false);
                }
                let taken = input.take(remaining);
                body.extend_from_slice(taken);
                *chunk = if remaining == taken.len() {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(remaining - taken.len())
                };
            }
            Chunk::DataEnd => {
                if input.rest.starts_with(b"\r\n") {
                    input.take(2);
                    *chunk = Chunk::Size;
                } else if b"\r\n".starts_with(input.rest) {
                    // Empty or a lone CR: wait without consuming, so the CR
                    // need not be remembered separately.
                    return Ok(false);
                } else {
                    return Err(DecodeError::BadRequest("missing CRLF after chunk data"));
                }
            }
            Chunk::Trailers(seen) => {
                let budget = limits.max_head_bytes.saturating_sub(seen);
                let before = line.len();
                let complete = take_line(input, line, budget);
                let seen = seen + (line.len() - before);
                *chunk = Chunk::Trailers(seen);
                if !complete {
                    if seen >= limits.max_head_bytes {
                        return Err(DecodeError::HeadTooLarge);
                    }
                    return Ok(false);
                }
                // Trailer fields are discarded, but line endings are still
                // checked so framing is never guessed at.
                if !line.ends_with(b"\r\n") {
                    return Err(DecodeError::BadRequest("invalid line ending in trailer"));
                }
                let was_empty = line.len() == 2;
                line.clear();
                if was_empty {
                    return Ok(true);
                }
            }
        }
    }
}

/// Parses a complete chunk-size line (through its LF) into the chunk size.
fn parse_chunk_line(line: &[u8]) -> Result<u64, DecodeError> {
    // httparse reads an empty size as 0, which would end the body early.
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return Err(DecodeError::BadRequest("invalid chunk size"));
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => Ok(size),
        // Partial here means the LF sat inside an extension without its CR.
        _ => Err(DecodeError::BadRequest("invalid chunk size line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What feeding a byte stream produced: every request or error in order,
    /// and the bytes left unconsumed at the end (none after an error).
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        results: Vec<Result<Request, DecodeError>>,
        leftover: Vec<u8>,
    }

    /// Feeds `pieces` in order, decoding as far as possible after each.
    fn feed(pieces: &[&[u8]], limits: Limits) -> Outcome {
        let mut decoder = RequestDecoder::new(limits);
        let mut input = Vec::new();
        let mut results = Vec::new();
        for piece in pieces {
            input.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut input) {
                    Ok(Decoded::Request(r)) => results.push(Ok(r)),
                    Ok(Decoded::Incomplete) => break,
                    Err(e) => {
                        // Poisoned: the same error again, nothing consumed.
                        let len = input.len();
                        assert_eq!(decoder.decode(&mut input), Err(e));
                        assert_eq!(input.len(), len);
                        assert!(!decoder.head_in_progress());
                        // Where decoding stopped after an error depends on
                        // the split, and the connection is closed anyway, so
                        // leftover bytes are not compared.
                        results.push(Err(e));
                        return Outcome {
                            results,
                            leftover: Vec::new(),
                        };
                    }
                }
            }
        }
        Outcome {
            results,
            leftover: input,
        }
    }

    /// Decodes `bytes` whole, split in two at every offset, and one byte at a
    /// time, asserting all agree; returns the whole-buffer outcome.
    fn decode_every_way(bytes: &[u8], limits: Limits) -> Outcome {
        let whole = feed(&[bytes], limits);
        for i in 0..=bytes.len() {
            let split = feed(&[&bytes[..i], &bytes[i..]], limits);
            assert_eq!(split, whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed(&singles, limits), whole, "one byte at a time");
        whole
    }

    fn requests(bytes: &[u8]) -> Vec<Request> {
        let outcome = decode_every_way(bytes, Limits::default());
        assert!(
            outcome.leftover.is_empty(),
            "leftover {:?}",
            outcome.leftover
        );
        outcome.results.into_iter().map(|r| r.unwrap()).collect()
    }

    fn one_request(bytes: &[u8]) -> Request {
        let mut all = requests(bytes);
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn error_with(bytes: &[u8], limits: Limits) -> DecodeError {
        let outcome = decode_every_way(bytes, limits);
        match outcome.results.last() {
            Some(Err(e)) => *e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn error(bytes: &[u8]) -> DecodeError {
        error_with(bytes, Limits::default())
    }

    fn small_limits() -> Limits {
        Limits {
            max_head_bytes: 64,
            max_body_bytes: 16,
        }
    }

    #[test]
    fn simple_get() {
        let r = one_request(b"GET /mcp?session=1 HTTP/1.1\r\nHost: example\r\n\r\n");
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/mcp?session=1");
        assert_eq!(r.path(), "/mcp");
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.headers, vec![("host".into(), "example".into())]);
        assert!(r.body.is_empty());
        assert!(r.keep_alive);
    }

    #[test]
    fn post_with_content_length() {
        let r = one_request(
            b"POST /mcp HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n\
              Content-Length: 13\r\n\r\n{\"jsonrpc\":1}",
        );
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, b"{\"jsonrpc\":1}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("Content-Length"), Some("13"));
    }

    #[test]
    fn content_length_zero_and_repeated_identical_values() {
        let r = one_request(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(r.body.is_empty());
        let r =
            one_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc");
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let r = one_request(
            b"POST /mcp HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n\
              5;name=value\r\nhello\r\n\
              1A ; quoted=\"a;b\"\r\n, chunked world, 26 bytes!\r\n\
              0;last\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n",
        );
        assert_eq!(r.body, b"hello, chunked world, 26 bytes!");
        // Trailers are discarded, not merged into the head.
        assert_eq!(r.header("x-trailer"), None);
    }

    #[test]
    fn chunked_without_trailers_then_pipelined_request() {
        let all = requests(
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /b HTTP/1.1\r\n\r\n",
        );
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].body, b"abc");
        assert_eq!(all[1].target, "/b");
    }

    #[test]
    fn two_pipelined_requests() {
        let all = requests(
            b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].target.as_str(), all[0].body.as_slice()),
            ("/a", &b"hi"[..])
        );
        assert_eq!(all[1].target, "/b");
        assert!(all.iter().all(|r| r.keep_alive));
    }

    #[test]
    fn three_pipelined_requests() {
        let all = requests(
            b"GET /1 HTTP/1.1\r\n\r\n\
              POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\
              POST /3 HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nend",
        );
        let summary: Vec<(&str, &[u8], bool)> = all
            .iter()
            .map(|r| (r.target.as_str(), r.body.as_slice(), r.keep_alive))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("/1", &b""[..], true),
                ("/2", &b"ok"[..], true),
                ("/3", &b"end"[..], false),
            ]
        );
    }

    #[test]
    fn pipelined_bytes_stay_in_input() {
        let first = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx".to_vec();
        let second = b"GET /b HTTP/1.1\r\n\r\nGET /c HT".to_vec();
        let mut input = [first, second.clone()].concat();
        let mut decoder = RequestDecoder::new(Limits::default());
        match decoder.decode(&mut input).unwrap() {
            Decoded::Request(r) => assert_eq!(r.body, b"x"),
            Decoded::Incomplete => panic!("expected a request"),
        }
        assert_eq!(input, second);
        match decoder.decode(&mut input).unwrap() {
            Decoded::Request(r) => assert_eq!(r.target, "/b"),
            Decoded::Incomplete => panic!("expected a request"),
        }
        assert_eq!(input, b"GET /c HT");
    }

    #[test]
    fn decode_slice_reports_consumed_bytes() {
        let input = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /c";
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut offset = 0;
        let mut targets = Vec::new();
        loop {
            let (decoded, used) = decoder.decode_slice(&input[offset..]).unwrap();
            offset += used;
            match decoded {
                Decoded::Request(r) => targets.push(r.target),
                Decoded::Incomplete => break,
            }
        }
        assert_eq!(targets, vec!["/a", "/b"]);
        assert_eq!(offset, input.len(), "partial head is held by the decoder");
        assert!(decoder.head_in_progress());
    }

    #[test]
    fn many_small_chunks_in_one_buffer_decode_in_linear_time() {
        // Draining the Vec front per chunk would move ~600 KB per chunk here.
        let mut bytes = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..100_000 {
            bytes.extend_from_slice(b"1\r\nx\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        let outcome = feed(&[&bytes], Limits::default());
        assert_eq!(outcome.results[0].as_ref().unwrap().body.len(), 100_000);
    }

    #[test]
    fn http_1_0_keep_alive_rules() {
        let r = one_request(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(r.minor_version, 0);
        assert!(!r.keep_alive);
        let r = one_request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let r = one_request(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!r.keep_alive);
        let r = one_request(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.keep_alive);
    }

    #[test]
    fn connection_close() {
        let r = one_request(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        let r = one_request(b"GET / HTTP/1.1\r\nConnection: Upgrade , CLOSE\r\n\r\n");
        assert!(!r.keep_alive);
        let r = one_request(b"GET / HTTP/1.1\r\nConnection: foo\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
    }

    #[test]
    fn header_names_fold_and_values_trim() {
        let r = one_request(
            b"GET / HTTP/1.1\r\nMCP-Session-Id:   abc \t\r\nACCEPT: text/event-stream\r\n\
              X-Bin: caf\xe9\r\n\r\n",
        );
        assert_eq!(
            r.headers,
            vec![
                ("mcp-session-id".into(), "abc".into()),
                ("accept".into(), "text/event-stream".into()),
                ("x-bin".into(), "caf\u{fffd}".into()),
            ]
        );
        assert_eq!(r.header("Mcp-Session-ID"), Some("abc"));
        assert_eq!(r.header("missing"), None);
    }

    #[test]
    fn header_returns_first_of_repeated() {
        let r = one_request(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        assert_eq!(r.header("x-a"), Some("1"));
    }

    #[test]
    fn leading_crlfs_are_skipped() {
        let all = requests(b"\r\n\r\n\nGET /a HTTP/1.1\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        let targets: Vec<&str> = all.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, vec!["/a", "/b"]);
    }

    #[test]
    fn bare_lf_head_is_accepted() {
        let r = one_request(b"GET /lf HTTP/1.1\nHost: h\n\n");
        assert_eq!(r.header("host"), Some("h"));
    }

    #[test]
    fn path_variants() {
        let with_target = |target: &str| Request {
            method: "GET".into(),
            target: target.into(),
            minor_version: 1,
            headers: Vec::new(),
            body: Vec::new(),
            keep_alive: true,
        };
        assert_eq!(with_target("/mcp").path(), "/mcp");
        assert_eq!(with_target("/mcp?a=b?c").path(), "/mcp");
        assert_eq!(with_target("/mcp#frag").path(), "/mcp");
        assert_eq!(with_target("HTTP://host:8080/x/y?q").path(), "/x/y");
        assert_eq!(with_target("https://host").path(), "/");
        assert_eq!(with_target("https://host?q").path(), "/");
        assert_eq!(with_target("*").path(), "*");
        assert_eq!(with_target("").path(), "");
    }

    /// A GET head padded with a header so it is exactly `len` bytes.
    fn head_of_len(len: usize) -> Vec<u8> {
        let fixed = b"GET / HTTP/1.1\r\nX-Pad: \r\n\r\n".len();
        let mut head = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        head.resize(len - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert!(len >= fixed);
        assert_eq!(head.len(), len);
        head
    }

    #[test]
    fn head_of_exactly_max_bytes_is_accepted() {
        let limits = small_limits();
        let outcome = decode_every_way(&head_of_len(limits.max_head_bytes), limits);
        assert_eq!(outcome.results.len(), 1);
        assert!(outcome.results[0].is_ok());
    }

    #[test]
    fn head_of_max_plus_one_bytes_is_431() {
        let limits = small_limits();
        let err = error_with(&head_of_len(limits.max_head_bytes + 1), limits);
        assert_eq!(err, DecodeError::HeadTooLarge);
        assert_eq!(
            (err.status(), err.reason()),
            (431, "Request Header Fields Too Large")
        );
    }

    #[test]
    fn default_head_limit_applies() {
        let max = DEFAULT_MAX_HEAD_BYTES;
        assert!(feed(&[&head_of_len(max)], Limits::default()).results[0].is_ok());
        assert_eq!(
            feed(&[&head_of_len(max + 1)], Limits::default()).results,
            vec![Err(DecodeError::HeadTooLarge)]
        );
    }

    #[test]
    fn head_limit_fails_as_soon_as_reached_without_blank_line() {
        let limits = small_limits();
        let mut decoder = RequestDecoder::new(limits);
        let mut input = vec![b'G'; limits.max_head_bytes - 1];
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(input.is_empty());
        input.push(b'G');
        assert_eq!(decoder.decode(&mut input), Err(DecodeError::HeadTooLarge));
    }

    #[test]
    fn endless_leading_crlfs_hit_the_head_limit() {
        let limits = small_limits();
        let crlfs = b"\r\n".repeat(limits.max_head_bytes / 2);
        assert_eq!(error_with(&crlfs, limits), DecodeError::HeadTooLarge);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(error(&head), DecodeError::HeadTooLarge);
    }

    #[test]
    fn huge_content_length_is_413_at_head_time() {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut input = b"POST / HTTP/1.1\r\nContent-Length: 4194305\r\n\r\n".to_vec();
        assert_eq!(decoder.decode(&mut input), Err(DecodeError::BodyTooLarge));
        let err = error(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(err, DecodeError::BodyTooLarge);
        assert_eq!((err.status(), err.reason()), (413, "Content Too Large"));
    }

    #[test]
    fn content_length_at_max_is_accepted() {
        let limits = small_limits();
        let mut bytes = b"POST / HTTP/1.1\r\nContent-Length: 16\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[b'b'; 16]);
        let outcome = decode_every_way(&bytes, limits);
        assert_eq!(outcome.results[0].as_ref().unwrap().body, [b'b'; 16]);
        bytes = b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n".to_vec();
        assert_eq!(error_with(&bytes, limits), DecodeError::BodyTooLarge);
    }

    #[test]
    fn chunked_body_over_max_is_413() {
        let limits = small_limits();
        let ok = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                   8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n";
        assert_eq!(
            decode_every_way(ok, limits).results[0]
                .as_ref()
                .unwrap()
                .body
                .len(),
            16
        );
        let over = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                     8\r\n12345678\r\n9\r\n123456789\r\n0\r\n\r\n";
        assert_eq!(error_with(over, limits), DecodeError::BodyTooLarge);
        let huge = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert_eq!(error(huge), DecodeError::BodyTooLarge);
    }

    #[test]
    fn bad_content_length_is_400() {
        for value in ["abc", "-1", "+5", "5 5", "0x10", "", "5,", "1.0"] {
            let bytes = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(
                feed(&[bytes.as_bytes()], Limits::default()).results,
                vec![Err(DecodeError::BadRequest("invalid Content-Length"))],
                "{value:?}"
            );
        }
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
            DecodeError::BadRequest("conflicting Content-Length values")
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello"),
            DecodeError::BadRequest("conflicting Content-Length values")
        );
    }

    #[test]
    fn content_length_with_transfer_encoding_is_400() {
        let err = error(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n",
        );
        assert_eq!(
            err,
            DecodeError::BadRequest("both Content-Length and Transfer-Encoding")
        );
        assert_eq!((err.status(), err.reason()), (400, "Bad Request"));
    }

    #[test]
    fn unsupported_transfer_encoding_is_501() {
        let err = error(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(err, DecodeError::NotImplemented);
        assert_eq!((err.status(), err.reason()), (501, "Not Implemented"));
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            DecodeError::NotImplemented
        );
    }

    #[test]
    fn odd_transfer_encodings_are_400() {
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            DecodeError::BadRequest("chunked applied more than once")
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n"),
            DecodeError::BadRequest("empty Transfer-Encoding")
        );
        assert_eq!(
            error(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            DecodeError::BadRequest("Transfer-Encoding in HTTP/1.0")
        );
    }

    #[test]
    fn malformed_request_line_is_400() {
        for bytes in [
            &b"GET\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"\rGET / HTTP/1.1\r\n\r\n",
        ] {
            let err = error(bytes);
            assert!(
                matches!(err, DecodeError::BadRequest(_)),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn malformed_headers_are_400() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nSpace Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nName : v\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
        ] {
            assert!(matches!(error(bytes), DecodeError::BadRequest(_)));
        }
    }

    #[test]
    fn bad_chunk_syntax_is_400() {
        let prefix = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for framing in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b" 2\r\nab\r\n0\r\n\r\n",
            b"2\r\nabX\r\n0\r\n\r\n",
            b"2\r\nab\rX0\r\n\r\n",
            b"2\nab\r\n0\r\n\r\n",
            b"2;e\nab\r\n0\r\n\r\n",
            b"0\r\nTrailer: x\n\r\n",
            b"11111111111111111\r\n",
        ] {
            let bytes = [prefix.clone(), framing.to_vec()].concat();
            let err = error(&bytes);
            assert!(
                matches!(err, DecodeError::BadRequest(_)),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(framing)
            );
        }
    }

    #[test]
    fn overlong_chunk_line_and_trailers_are_rejected() {
        let prefix = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut long_ext = prefix.clone();
        long_ext.extend_from_slice(b"1;");
        long_ext.resize(prefix.len() + MAX_CHUNK_LINE_BYTES, b'e');
        assert_eq!(
            feed(&[&long_ext], Limits::default()).results,
            vec![Err(DecodeError::BadRequest("chunk size line too long"))]
        );

        let limits = small_limits();
        let mut trailers = prefix;
        trailers.extend_from_slice(b"0\r\n");
        for _ in 0..8 {
            trailers.extend_from_slice(b"X-Trailer: 0123456789\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(error_with(&trailers, limits), DecodeError::HeadTooLarge);
    }

    #[test]
    fn poisoned_decoder_repeats_error() {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut input = b"BAD\r\n\r\nGET / HTTP/1.1\r\n\r\n".to_vec();
        let err = decoder.decode(&mut input).unwrap_err();
        assert!(matches!(err, DecodeError::BadRequest(_)));
        assert_eq!(decoder.decode(&mut input), Err(err));
        assert_eq!(decoder.decode(&mut Vec::new()), Err(err));
    }

    #[test]
    fn head_in_progress_transitions() {
        let mut decoder = RequestDecoder::new(Limits::default());
        assert!(!decoder.head_in_progress());
        let mut input = Vec::new();
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(!decoder.head_in_progress());

        input.extend_from_slice(b"POST / HTTP/1.1\r\nContent-");
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(decoder.head_in_progress());

        input.extend_from_slice(b"Length: 3\r\n\r\nab");
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(!decoder.head_in_progress(), "head done, body pending");

        input.extend_from_slice(b"cGET");
        assert!(matches!(
            decoder.decode(&mut input),
            Ok(Decoded::Request(_))
        ));
        assert!(!decoder.head_in_progress(), "between requests");
        assert_eq!(input, b"GET");

        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(decoder.head_in_progress());
        input.extend_from_slice(b" / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            decoder.decode(&mut input),
            Ok(Decoded::Request(_))
        ));
        assert!(!decoder.head_in_progress());

        input.extend_from_slice(b"\r\n");
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(
            decoder.head_in_progress(),
            "skipped CRLF counts as head bytes"
        );

        input.extend_from_slice(b"\x01 / HTTP/1.1\r\n\r\n");
        assert!(decoder.decode(&mut input).is_err());
        assert!(!decoder.head_in_progress(), "false once poisoned");
    }

    #[test]
    fn expect_continue_reported_once_after_head() {
        let mut decoder = RequestDecoder::new(Limits::default());
        assert!(!decoder.take_expect_continue());
        let mut input =
            b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n".to_vec();
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(input.is_empty());
        assert!(decoder.take_expect_continue());
        assert!(!decoder.take_expect_continue(), "take semantics");

        input.extend_from_slice(b"da");
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(!decoder.take_expect_continue(), "not re-raised mid-body");
        input.extend_from_slice(b"ta");
        match decoder.decode(&mut input) {
            Ok(Decoded::Request(r)) => assert_eq!(r.body, b"data"),
            other => panic!("{other:?}"),
        }
        assert!(!decoder.take_expect_continue());
    }

    #[test]
    fn expect_continue_chunked() {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut input =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
                .to_vec();
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        assert!(decoder.take_expect_continue());
    }

    #[test]
    fn expect_continue_not_reported_when_needless() {
        let cases: [&[u8]; 4] = [
            // Body already here: the final response makes 100 pointless.
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
            // No body at all.
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            // HTTP/1.0 clients do not understand 100 (RFC 9110 section 10.1.1).
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        ];
        for bytes in cases {
            let mut decoder = RequestDecoder::new(Limits::default());
            let mut input = bytes.to_vec();
            assert!(decoder.decode(&mut input).is_ok());
            assert!(!decoder.take_expect_continue(), "{bytes:?}");
        }
    }

    #[test]
    fn expect_continue_cleared_if_not_taken_before_body_completes() {
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut input =
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n".to_vec();
        assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
        input.push(b'x');
        assert!(matches!(
            decoder.decode(&mut input),
            Ok(Decoded::Request(_))
        ));
        assert!(!decoder.take_expect_continue());
    }

    #[test]
    fn errors_render_for_logs() {
        assert_eq!(
            DecodeError::BadRequest("invalid chunk size").to_string(),
            "400 Bad Request: invalid chunk size"
        );
        assert_eq!(
            DecodeError::BodyTooLarge.to_string(),
            "413 Content Too Large"
        );
    }
}
