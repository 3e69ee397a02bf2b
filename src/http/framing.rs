//! HTTP/1.1 message framing shared by both roles, sans-IO.
//!
//! Owns everything the request decoder (server role, `request`) and the
//! response decoder (client role, `client`) must agree on so the proxy never
//! reads a message boundary differently on its two sides: collecting a head
//! under a byte cap, turning `httparse` fields into owned ones, header
//! lookup, the Content-Length / Transfer-Encoding rules of RFC 9112 section
//! 6, the keep-alive rule, and one body decoder (Content-Length, chunked
//! with extensions and trailers, or until close).
//!
//! Line endings: a head (start line and fields) may end its lines with a
//! bare LF, which `httparse` accepts as RFC 9112 section 2.2 allows. Inside
//! a chunked body every line (chunk-size lines, the end of chunk data,
//! trailer lines) must end in CRLF, because a hop that read a bare LF there
//! differently from the next hop would split the body at a different place,
//! which is how chunked request smuggling works.
//!
//! Errors are [`FramingError`]s; each role maps them to its own error type.

use super::cursor::{take_line, Cursor};

/// Longest chunk-size line (size, extensions and CRLF) accepted; longer is
/// a framing error.
///
/// Chunk extensions are discarded, so without this cap a peer could stream
/// an endless extension that counts against neither the head nor body limit.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// Most hex digits in a chunk size: as many as a u64 holds.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

/// Why framing failed, in terms both roles share; the server maps these to
/// statuses, the client to response errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FramingError {
    /// Head, header count, or chunked trailer section over the limit.
    HeadTooLarge,
    /// Declared or decoded body over the body limit.
    BodyTooLarge,
    /// A Content-Length value with more digits than a u64 holds.
    LengthOutOfRange,
    /// A Transfer-Encoding other than `chunked`.
    UnsupportedCoding,
    /// Any other broken rule; the text says which.
    Malformed(&'static str),
}

/// Collects a head line by line under a byte cap, so each byte is scanned
/// once however the head is split across reads.
#[derive(Debug, Default)]
pub(crate) struct HeadReader {
    /// Head bytes from the start line on; kept whole so `httparse` can
    /// parse it in one pass once the blank line arrives.
    head: Vec<u8>,
    /// Offset in `head` where the line being read starts.
    line_start: usize,
    /// Bytes counted against the cap, including skipped empty lines, so a
    /// peer cannot keep a connection busy with bytes no limit counts.
    bytes: usize,
}

impl HeadReader {
    /// Bytes of the current head seen so far (skipped empty lines included).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reads head bytes from `input`; returns the whole head (start line
    /// through blank line) once it is complete. Empty lines before the start
    /// line are skipped (RFC 9112 section 2.2) but count against `max`.
    ///
    /// `start_line` judges the start line (with its line ending) as soon as
    /// it is complete, and may rewrite it in place: a broken one is then
    /// refused at once rather than after the rest of the head, or the head
    /// timeout. It runs at the same point of the input however it is split.
    pub fn read<E: From<FramingError>>(
        &mut self,
        input: &mut Cursor<'_>,
        max: usize,
        start_line: impl Fn(&mut [u8]) -> Result<(), E>,
    ) -> Result<Option<&[u8]>, E> {
        loop {
            // Only reached with the head incomplete: it needs at least one
            // more byte, which would exceed the cap, so fail without waiting
            // (and at the same offset however the input is split).
            if self.bytes >= max {
                return Err(FramingError::HeadTooLarge.into());
            }
            if input.is_empty() {
                return Ok(None);
            }
            let before = self.head.len();
            let complete = take_line(input, &mut self.head, max - self.bytes);
            self.bytes += self.head.len() - before;
            if !complete {
                continue;
            }
            let is_empty = matches!(self.head.get(self.line_start..), Some(b"\r\n" | b"\n"));
            if is_empty && self.line_start == 0 {
                self.head.clear();
                continue;
            }
            if is_empty {
                return Ok(Some(&self.head));
            }
            if self.line_start == 0 {
                // Leading empty lines were dropped, so the head holds
                // exactly the start line.
                start_line(&mut self.head)?;
            }
            self.line_start = self.head.len();
        }
    }

    /// Forgets the current head, keeping the buffer for the next one.
    pub fn clear(&mut self) {
        self.head.clear();
        self.line_start = 0;
        self.bytes = 0;
    }
}

/// Maps an `httparse` head error; the role adds its own text for heads
/// that parse but are not whole.
pub(crate) fn map_parse_error(err: httparse::Error) -> FramingError {
    FramingError::Malformed(match err {
        httparse::Error::TooManyHeaders => return FramingError::HeadTooLarge,
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token => "invalid token in start line",
        httparse::Error::Status => "invalid status code",
        httparse::Error::Version => "invalid HTTP version",
    })
}

/// Parsed fields as owned pairs: names lowercased ASCII, values trimmed of
/// optional whitespace, non-UTF-8 values decoded lossily.
pub(crate) fn owned_fields(fields: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                trim_ows(&String::from_utf8_lossy(h.value)).to_owned(),
            )
        })
        .collect()
}

/// Trims optional whitespace (SP / HTAB) from both ends of a field value
/// or list element.
pub(crate) fn trim_ows(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// First value of field `name` (case-insensitive) in owned fields.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Elements of every field named `name` (a lowercase name), split on commas,
/// trimmed, empties dropped: how list-valued headers such as `Connection`
/// and `Transfer-Encoding` are read on both sides.
pub(crate) fn list_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .flat_map(|(_, v)| v.split(','))
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// Whether the sender allows the connection to be reused after this
/// message, from `Connection` and the HTTP version: `close` always wins;
/// HTTP/1.0 needs an explicit `keep-alive`; HTTP/1.1 is persistent by default.
pub(crate) fn keep_alive(headers: &[(String, String)], minor_version: u8) -> bool {
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

/// The single Content-Length value; repeated identical values (as separate
/// fields or a list) are accepted, as RFC 9110 section 8.6 allows.
///
/// Anything but digits is malformed. A value too large for a u64 is
/// [`FramingError::LengthOutOfRange`] rather than saturated, so no value is
/// ever read as a different length than the one sent.
pub(crate) fn content_length(headers: &[(String, String)]) -> Result<u64, FramingError> {
    let mut found: Option<u64> = None;
    for item in headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .flat_map(|(_, v)| v.split(','))
    {
        let item = trim_ows(item);
        if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FramingError::Malformed("invalid Content-Length"));
        }
        let parsed = item
            .bytes()
            .try_fold(0u64, |acc, digit| {
                acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
            })
            .ok_or(FramingError::LengthOutOfRange)?;
        match found {
            Some(previous) if previous != parsed => {
                return Err(FramingError::Malformed("conflicting Content-Length values"));
            }
            _ => found = Some(parsed),
        }
    }
    found.ok_or(FramingError::Malformed("invalid Content-Length"))
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// Exactly this many bytes (Content-Length, or 0 for no body).
    Length(u64),
    Chunked,
    /// Everything until the peer closes the connection (responses only).
    UntilClose,
}

/// Applies RFC 9112 section 6.3 to the framing fields of a message that
/// may carry a body; `None` when it has neither Transfer-Encoding nor
/// Content-Length, whose meaning differs by role (no body for a request,
/// until close for a response).
pub(crate) fn declared_body(
    headers: &[(String, String)],
    minor_version: u8,
) -> Result<Option<BodyKind>, FramingError> {
    let has_te = headers.iter().any(|(n, _)| n == "transfer-encoding");
    let has_cl = headers.iter().any(|(n, _)| n == "content-length");

    if has_te {
        // Both framings at once is the classic smuggling shape: a hop that
        // picked the other one would splice one message into the next, so
        // the message is refused rather than guessed at.
        if has_cl {
            return Err(FramingError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        // RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding
        // must be treated as having faulty framing.
        if minor_version == 0 {
            return Err(FramingError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        let mut codings = 0usize;
        for coding in list_values(headers, "transfer-encoding") {
            codings += 1;
            // Only chunked can be decoded; a compression coding would be
            // passed on as if it were the JSON or SSE payload.
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(FramingError::UnsupportedCoding);
            }
        }
        return match codings {
            0 => Err(FramingError::Malformed("empty Transfer-Encoding")),
            1 => Ok(Some(BodyKind::Chunked)),
            _ => Err(FramingError::Malformed("chunked applied more than once")),
        };
    }

    if has_cl {
        return content_length(headers).map(|n| Some(BodyKind::Length(n)));
    }
    Ok(None)
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Bytes still due.
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// Incremental decoder for one message body, whichever its framing.
///
/// Consumes every byte it is given until the body is complete (partial
/// chunk-size and trailer lines are copied inside, a CRLF split after chunk
/// data is tracked byte by byte), so callers keep no leftovers mid-body and
/// any split of the input gives the same body bytes.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    body: Body,
    /// Partial chunk-size or trailer line.
    line: Vec<u8>,
    /// Body bytes declared by the chunk-size lines read so far.
    declared: u64,
    max_body: u64,
    max_trailer_bytes: usize,
}

impl BodyDecoder {
    /// A decoder for a body of `kind`. `max_body` caps the decoded bytes
    /// (`u64::MAX` for none): a Content-Length over it fails here, a chunk
    /// that would cross it fails at its size line. `max_trailer_bytes` caps
    /// the trailer section of a chunked body.
    pub fn new(
        kind: BodyKind,
        max_body: u64,
        max_trailer_bytes: usize,
    ) -> Result<BodyDecoder, FramingError> {
        let body = match kind {
            BodyKind::Length(n) if n > max_body => return Err(FramingError::BodyTooLarge),
            BodyKind::Length(n) => Body::Length(n),
            BodyKind::Chunked => Body::Chunked(Chunk::Size),
            BodyKind::UntilClose => Body::UntilClose,
        };
        Ok(BodyDecoder {
            body,
            line: Vec::new(),
            declared: 0,
            max_body,
            max_trailer_bytes,
        })
    }

    /// True if only the peer closing the connection ends this body.
    pub fn ends_at_eof(&self) -> bool {
        self.body == Body::UntilClose
    }

    /// Decodes from `input`, passing body bytes (never empty) to `out`;
    /// returns whether the body is complete. Bytes after the body are left
    /// in `input`.
    pub fn decode(
        &mut self,
        input: &mut Cursor<'_>,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<bool, FramingError> {
        match &mut self.body {
            Body::Length(remaining) => {
                let taken = input.take_u64(*remaining);
                if !taken.is_empty() {
                    out(taken);
                }
                *remaining -= taken.len() as u64;
                Ok(*remaining == 0)
            }
            Body::UntilClose => {
                let taken = input.take(usize::MAX);
                if !taken.is_empty() {
                    out(taken);
                }
                Ok(false)
            }
            Body::Chunked(_) => self.decode_chunked(input, out),
        }
    }

    fn decode_chunked(
        &mut self,
        input: &mut Cursor<'_>,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<bool, FramingError> {
        loop {
            let Body::Chunked(chunk) = self.body else {
                return Ok(false);
            };
            let next = match chunk {
                Chunk::Size => {
                    let budget = MAX_CHUNK_LINE_BYTES.saturating_sub(self.line.len());
                    if !take_line(input, &mut self.line, budget) {
                        if self.line.len() >= MAX_CHUNK_LINE_BYTES {
                            return Err(FramingError::Malformed("chunk size line too long"));
                        }
                        return Ok(false);
                    }
                    let size = parse_chunk_line(&self.line)?;
                    self.line.clear();
                    if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        self.declared = self.declared.saturating_add(size);
                        if self.declared > self.max_body {
                            return Err(FramingError::BodyTooLarge);
                        }
                        Chunk::Data(size)
                    }
                }
                Chunk::Data(remaining) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let taken = input.take_u64(remaining);
                    out(taken);
                    match remaining - taken.len() as u64 {
                        0 => Chunk::DataCr,
                        left => Chunk::Data(left),
                    }
                }
                Chunk::DataCr | Chunk::DataLf => {
                    let (expected, then) = if chunk == Chunk::DataCr {
                        (b'\r', Chunk::DataLf)
                    } else {
                        (b'\n', Chunk::Size)
                    };
                    match input.take(1).first() {
                        None => return Ok(false),
                        Some(&b) if b == expected => then,
                        Some(_) => {
                            return Err(FramingError::Malformed("missing CRLF after chunk data"))
                        }
                    }
                }
                Chunk::Trailers(seen) => {
                    let budget = self.max_trailer_bytes.saturating_sub(seen);
                    let before = self.line.len();
                    let complete = take_line(input, &mut self.line, budget);
                    let seen = seen + (self.line.len() - before);
                    self.body = Body::Chunked(Chunk::Trailers(seen));
                    if !complete {
                        if seen >= self.max_trailer_bytes {
                            return Err(FramingError::HeadTooLarge);
                        }
                        return Ok(false);
                    }
                    // Trailer fields are discarded, but line endings are
                    // still checked so framing is never guessed at.
                    if !self.line.ends_with(b"\r\n") {
                        return Err(FramingError::Malformed("invalid line ending in trailer"));
                    }
                    let was_empty = self.line.len() == 2;
                    self.line.clear();
                    if was_empty {
                        return Ok(true);
                    }
                    Chunk::Trailers(seen)
                }
            };
            self.body = Body::Chunked(next);
        }
    }
}

/// Parses a complete chunk-size line (through its LF) into the chunk size:
/// hex digits, optional whitespace, optional `;` extensions (discarded),
/// then CRLF. The line must end in CRLF and hold no other CR.
pub(crate) fn parse_chunk_line(line: &[u8]) -> Result<u64, FramingError> {
    let Some(content) = line.strip_suffix(b"\r\n") else {
        return Err(FramingError::Malformed("chunk size line without CRLF"));
    };
    if content.contains(&b'\r') {
        return Err(FramingError::Malformed("CR inside chunk size line"));
    }
    let digits = content
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(content.len());
    let (size, rest) = content.split_at(digits);
    // An empty size must not read as 0, which would end the body early.
    if size.is_empty() {
        return Err(FramingError::Malformed("invalid chunk size"));
    }
    // Sixteen hex digits fill a u64; more (even leading zeros) is refused
    // outright, as httparse and other common parsers do, rather than read.
    if size.len() > MAX_CHUNK_SIZE_DIGITS {
        return Err(FramingError::Malformed("chunk size out of range"));
    }
    let size = size
        .iter()
        .try_fold(0u64, |acc, &digit| {
            let value = char::from(digit).to_digit(16)?;
            acc.checked_mul(16)?.checked_add(u64::from(value))
        })
        .ok_or(FramingError::Malformed("chunk size out of range"))?;
    // Whitespace may sit before the extensions (the "implied LWS" older
    // senders use), but nothing else may follow the size.
    let rest = trim_leading_ows(rest);
    if rest.is_empty() || rest.first() == Some(&b';') {
        Ok(size)
    } else {
        Err(FramingError::Malformed("invalid chunk size line"))
    }
}

fn trim_leading_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests;
