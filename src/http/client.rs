//! Sans-IO HTTP/1.1 client codec for the upstream side.
//!
//! Owns the client role of HTTP/1.1 framing: encoding requests to an
//! upstream MCP server (Content-Length framing and header sanitising) and
//! decoding its responses into [`ResponseEvent`]s: status-line parsing (via
//! `httparse`), skipping interim 1xx responses, which responses have no body
//! (HEAD, 204, 304), what a response without framing fields means (until
//! close), end of stream, and the keep-alive decision the connection pool
//! acts on. Body framing, keep-alive and header rules are the shared ones in
//! `framing`, so the proxy reads requests and responses alike. It performs
//! no I/O: the reactor passes what it reads to [`ResponseDecoder::decode`]
//! and reports end of stream through [`ResponseDecoder::eof`].

use std::fmt;

use super::cursor::Cursor;
use super::framing::{self, BodyDecoder, BodyKind, FramingError, HeadReader};
use super::{is_forbidden_value_byte, is_token};

pub use super::framing::MAX_CHUNK_LINE_BYTES;

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
    write_request_head(out, method, target, host, headers, body.len());
    out.extend_from_slice(body);
}

/// The head `write_request` writes for a body of `body_len` bytes, for a
/// caller that sends the body from where it is.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body_len: usize,
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
    if !(bodiless_method && body_len == 0) {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(body_len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
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
        framing::header(&self.headers, name)
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

impl From<FramingError> for ResponseError {
    fn from(err: FramingError) -> Self {
        match err {
            FramingError::HeadTooLarge => ResponseError::HeadTooLarge,
            // Response bodies are streamed with no cap, so this is only
            // here to keep the mapping total.
            FramingError::BodyTooLarge => ResponseError::Malformed("body too large"),
            FramingError::LengthOutOfRange => {
                ResponseError::Malformed("Content-Length out of range")
            }
            FramingError::UnsupportedCoding => {
                ResponseError::Malformed("unsupported Transfer-Encoding")
            }
            FramingError::Malformed(detail) => ResponseError::Malformed(detail),
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for or reading a head (interim or final).
    Head,
    /// Final head delivered; reading its body.
    Body(BodyDecoder),
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
    head: HeadReader,
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
            head: HeadReader::default(),
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
        match &self.state {
            State::Done => Ok(()),
            State::Body(body) if body.ends_at_eof() => {
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
        matches!(self.state, State::Done)
    }

    fn fail(&mut self, err: ResponseError) -> ResponseError {
        self.error = Some(err);
        // The buffers (the head's, and a chunked body's line) are never
        // read again; free them now rather than when the connection is
        // finally dropped. `Head` rather than `Done`, so `is_complete`
        // stays false.
        self.head = HeadReader::default();
        self.state = State::Head;
        err
    }

    fn step(&mut self, input: &mut Cursor<'_>, sink: &mut Sink<'_>) -> Result<(), ResponseError> {
        loop {
            match &mut self.state {
                State::Head => {
                    // A status line is judged whole, with its fields.
                    let whole = |_: &mut [u8]| Ok::<(), ResponseError>(());
                    let Some(complete) = self.head.read(input, self.max_head_bytes, whole)? else {
                        return Ok(());
                    };
                    let parsed = parse_head(complete)?;
                    self.head.clear();
                    if let Some(body) = self.start_response(parsed, sink)? {
                        self.state = State::Body(body);
                    }
                }
                State::Body(body) => {
                    if !body.decode(input, &mut |bytes| sink.body(bytes))? {
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
    /// body decoder.
    fn start_response(
        &self,
        parsed: ParsedHead,
        sink: &mut Sink<'_>,
    ) -> Result<Option<BodyDecoder>, ResponseError> {
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
        let kind = if self.head_request || status == 204 || status == 304 {
            // RFC 9112 section 6.3: these never have a body, and any
            // framing fields describe the representation, not this message.
            BodyKind::Length(0)
        } else {
            // Without framing fields the body runs until the upstream closes.
            framing::declared_body(&headers, minor_version)?.unwrap_or(BodyKind::UntilClose)
        };
        // Response bodies are streamed, not buffered, so only the trailer
        // section is capped.
        let body = BodyDecoder::new(kind, u64::MAX, self.max_head_bytes)?;
        let keep_alive = !body.ends_at_eof() && framing::keep_alive(&headers, minor_version);
        sink.events.push(ResponseEvent::Head(ResponseHead {
            status,
            headers,
            keep_alive,
        }));
        Ok(Some(body))
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

/// Parses a complete head (status line through blank line).
fn parse_head(head: &[u8]) -> Result<ParsedHead, ResponseError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    match parsed.parse(head).map_err(framing::map_parse_error)? {
        httparse::Status::Complete(len) if len == head.len() => {}
        _ => return Err(ResponseError::Malformed("invalid status line")),
    }
    let (Some(status), Some(minor_version)) = (parsed.code, parsed.version) else {
        return Err(ResponseError::Malformed("invalid status line"));
    };
    // httparse takes any three digits; a status under 100 has no class (RFC
    // 9110 section 15 defines 1xx to 5xx), and nothing downstream can put it
    // on a status line.
    if !(100..=999).contains(&status) {
        return Err(ResponseError::Malformed("status code under 100"));
    }
    Ok(ParsedHead {
        status,
        minor_version,
        headers: framing::owned_fields(parsed.headers),
    })
}

#[cfg(test)]
mod encode_tests;
#[cfg(test)]
mod tests;
