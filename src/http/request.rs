//! Sans-IO HTTP/1.1 request decoder for the server side.
//!
//! Owns the server role of HTTP/1.1 framing: turning bytes read from a
//! client socket into [`Request`] values, request-line parsing (via
//! `httparse`), the size limits that protect the single-threaded reactor,
//! what a request without framing fields means (no body), the
//! `Expect: 100-continue` decision, and the statuses framing errors map to.
//! Body framing, keep-alive and header rules are the shared ones in
//! `framing`, so the proxy reads requests and responses alike. It performs
//! no I/O: the reactor appends what it reads to a buffer and calls
//! [`RequestDecoder::decode`], which drains what it used.

use std::fmt;

use super::cursor::Cursor;
use super::framing::{self, BodyDecoder, BodyKind, FramingError, HeadReader};

pub use super::framing::MAX_CHUNK_LINE_BYTES;

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
        framing::header(&self.headers, name)
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
    /// 505: an HTTP major version other than 1.
    VersionNotSupported,
}

impl DecodeError {
    /// Status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            DecodeError::HeadTooLarge => 431,
            DecodeError::BodyTooLarge => 413,
            DecodeError::BadRequest(_) => 400,
            DecodeError::NotImplemented => 501,
            DecodeError::VersionNotSupported => 505,
        }
    }

    /// Canonical reason phrase for [`DecodeError::status`], for the status line.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::HeadTooLarge => "Request Header Fields Too Large",
            DecodeError::BodyTooLarge => "Content Too Large",
            DecodeError::BadRequest(_) => "Bad Request",
            DecodeError::NotImplemented => "Not Implemented",
            DecodeError::VersionNotSupported => "HTTP Version Not Supported",
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

impl From<FramingError> for DecodeError {
    fn from(err: FramingError) -> Self {
        match err {
            FramingError::HeadTooLarge => DecodeError::HeadTooLarge,
            // A length too large for a u64 is over any body limit.
            FramingError::BodyTooLarge | FramingError::LengthOutOfRange => {
                DecodeError::BodyTooLarge
            }
            FramingError::UnsupportedCoding => DecodeError::NotImplemented,
            FramingError::Malformed(detail) => DecodeError::BadRequest(detail),
        }
    }
}

/// Outcome of one [`RequestDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed; everything usable has been consumed.
    Incomplete,
    /// A whole request; bytes after it are left in the input.
    Request(Request),
}

#[derive(Debug)]
enum State {
    /// Waiting for or reading a request head.
    Head,
    /// Head parsed; reading its body.
    Body { request: Request, body: BodyDecoder },
}

/// Incremental request decoder for one connection.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    head: HeadReader,
    expect_continue: bool,
    error: Option<DecodeError>,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            state: State::Head,
            head: HeadReader::default(),
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
    /// Head bytes, partial chunk-size/trailer lines and a split CRLF after
    /// chunk data are held by the decoder, so while it returns `Incomplete`
    /// it has consumed all of `input`.
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
        self.error.is_none() && matches!(self.state, State::Head) && self.head.bytes() > 0
    }

    /// True while a request's head is decoded and its body is still
    /// arriving (the body timeout applies).
    pub fn body_in_progress(&self) -> bool {
        self.error.is_none() && matches!(self.state, State::Body { .. })
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
        self.expect_continue = false;
    }

    fn step(&mut self, input: &mut Cursor<'_>) -> Result<Decoded, DecodeError> {
        let mut expects = false;
        if let State::Head = self.state {
            let Some(complete) =
                self.head
                    .read(input, self.limits.max_head_bytes, check_request_line)?
            else {
                return Ok(Decoded::Incomplete);
            };
            let (request, body, wants_continue) = parse_head(complete, &self.limits)?;
            self.head.clear();
            expects = wants_continue;
            self.state = State::Body { request, body };
        }

        let done = match &mut self.state {
            State::Body { request, body } => {
                body.decode(input, &mut |bytes| request.body.extend_from_slice(bytes))?
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
}

/// Judges a complete request line before the rest of the head arrives, so
/// a broken one is answered 400 at once, not 408 after the head timeout.
///
/// The version is read first, since `httparse` takes only `HTTP/1.0` and
/// `HTTP/1.1` and would call any other one malformed: a higher minor version
/// of HTTP/1 is served as HTTP/1.1, which it is compatible with (RFC 9110
/// section 2.5), by rewriting its digit in place; another major version is
/// 505, provided the rest of the line is well-formed.
fn check_request_line(line: &mut [u8]) -> Result<(), DecodeError> {
    let text_end = line.len()
        - line
            .iter()
            .rev()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
    // "HTTP/" DIGIT "." DIGIT after the last space (RFC 9112 section 2.3).
    let version_at = line[..text_end]
        .iter()
        .rposition(|&b| b == b' ')
        .map_or(text_end, |space| space + 1);
    let mut major_other_than_1 = false;
    if let [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] = &mut line[version_at..text_end] {
        if major.is_ascii_digit() && minor.is_ascii_digit() {
            if *major != b'1' {
                // Checked as HTTP/1.1, so a malformed line is still 400.
                major_other_than_1 = true;
                *major = b'1';
                *minor = b'1';
            } else if *minor > b'1' {
                *minor = b'1';
            }
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    // Only the line is there, so a well-formed one is Partial: the fields
    // are still to come.
    if let Err(err) = httparse::Request::new(&mut slots).parse(line) {
        return Err(framing::map_parse_error(err).into());
    }
    if major_other_than_1 {
        return Err(DecodeError::VersionNotSupported);
    }
    Ok(())
}

/// Parses a complete head (request line through blank line) and sets up
/// its body decoder; the bool is whether to answer `100 Continue`.
fn parse_head(head: &[u8], limits: &Limits) -> Result<(Request, BodyDecoder, bool), DecodeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(head).map_err(framing::map_parse_error)? {
        httparse::Status::Complete(len) if len == head.len() => {}
        _ => return Err(DecodeError::BadRequest("malformed request head")),
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(DecodeError::BadRequest("malformed request line"));
    };
    let headers = framing::owned_fields(parsed.headers);

    // A request without framing fields has no body (RFC 9112 section 6.3).
    let kind = framing::declared_body(&headers, minor_version)?.unwrap_or(BodyKind::Length(0));
    let body_expected = kind != BodyKind::Length(0);
    let max_body = u64::try_from(limits.max_body_bytes).unwrap_or(u64::MAX);
    let body = BodyDecoder::new(kind, max_body, limits.max_head_bytes)?;
    let keep_alive = framing::keep_alive(&headers, minor_version);
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
    Ok((request, body, expects_continue))
}

#[cfg(test)]
mod tests;
