//! The fuzz properties of mcphop's sans-IO codecs, one public function per
//! fuzz target: each takes the fuzzer's bytes, drives a codec with them and
//! panics (through `assert!`) only when a property is broken. Owned here so
//! the libFuzzer binaries (`fuzz/fuzz_targets/`) and the seed-corpus test
//! (`tests/fuzz_seeds.rs`, which includes this file as a module) check the
//! very same properties.
//!
//! The properties, for every target:
//! - no input makes the codec panic (a panic is the fuzzer's crash);
//! - no growth past the configured limits: the small limits the first bytes
//!   pick are enforced (head, body, event and line sizes), and a decoder
//!   that asks for more bytes has consumed what it was given, so a caller
//!   never has to hold an unbounded backlog;
//! - split invariance: the same bytes fed whole, in fuzzer-chosen pieces
//!   and one byte at a time decode to the same values and the same error;
//! - round trips where mcphop both writes and reads a format: the request
//!   writer into the request decoder (and a chunked body the harness
//!   frames itself), the response writer into the response decoder, the
//!   SSE encoder into the SSE decoder, JSON-RPC error responses into the
//!   classifier.
//!
//! The first byte of an input picks the mode (raw bytes or a structured
//! round trip); the next few pick limits and the piece sizes. Everything
//! is deterministic in the input, so every crash replays.

use mcphop::http::client::{write_request, ResponseDecoder, ResponseError, ResponseEvent};
use mcphop::http::request::{DecodeError, Decoded, Limits, Request, RequestDecoder, MAX_HEADERS};
use mcphop::http::response;
use mcphop::jsonrpc::{self, Carried, IdKey, Kind, Message, Rejected};
use mcphop::lines::{Line, LineFramer};
use mcphop::mcp::endpoint::{interpret, AccessPolicy, Intent, Reply};
use mcphop::sse;
use mcphop::sse_decoder::{SseDecoder, SseError, SseEvent};
use serde_json::Value;

/// Reads structure out of fuzz bytes; yields zeros once they run out.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length-prefixed piece of at most `max` bytes.
    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.byte()) % (max + 1);
        self.take(n)
    }

    fn string(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Cuts `bytes` into pieces whose sizes cycle through `plan` (a 0 in the
/// plan is an empty piece, which a reactor never passes but a codec must
/// take); a plan of no non-zero size means one piece.
fn pieces<'a>(bytes: &'a [u8], plan: &[u8]) -> Vec<&'a [u8]> {
    if plan.iter().all(|&size| size == 0) {
        return vec![bytes];
    }
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = plan.iter().cycle();
    while !rest.is_empty() {
        let size = usize::from(*sizes.next().unwrap_or(&1));
        let (piece, after) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = after;
    }
    out
}

/// The three ways every decoder is fed: whole, in planned pieces, and one
/// byte at a time.
fn ways<'a>(bytes: &'a [u8], plan: &[u8]) -> [Vec<&'a [u8]>; 3] {
    [vec![bytes], pieces(bytes, plan), bytes.chunks(1).collect()]
}

// ---------------------------------------------------------------------------
// HTTP request decoder (server role)

/// How a run of the request decoder ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestEnd {
    Error(DecodeError),
    /// Waiting for more; whether a head was in progress.
    Incomplete {
        head_in_progress: bool,
    },
}

/// Feeds `chunks` to one decoder as a reactor would (append, decode until
/// it wants more); returns the requests and how it ended, checking the
/// per-call properties on the way.
fn run_request_decoder(chunks: &[&[u8]], limits: Limits) -> (Vec<Request>, RequestEnd) {
    let mut decoder = RequestDecoder::new(limits);
    let mut buffer = Vec::new();
    let mut requests = Vec::new();
    // Bytes consumed since the last request ended (or the start).
    let mut since_boundary = 0usize;
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            let before = buffer.len();
            match decoder.decode(&mut buffer) {
                Ok(Decoded::Request(request)) => {
                    since_boundary = 0;
                    assert!(
                        request.body.len() <= limits.max_body_bytes,
                        "a body of {} bytes passed a limit of {}",
                        request.body.len(),
                        limits.max_body_bytes
                    );
                    assert!(request.headers.len() <= MAX_HEADERS);
                    // Only a chunked body or an explicit 100-continue may
                    // ask for 100; a finished request never leaves one due.
                    assert!(!decoder.take_expect_continue());
                    requests.push(request);
                }
                Ok(Decoded::Incomplete) => {
                    since_boundary += before;
                    // Nothing left for the caller to hold.
                    assert!(
                        buffer.is_empty(),
                        "Incomplete left {} bytes unconsumed",
                        buffer.len()
                    );
                    if decoder.head_in_progress() {
                        assert!(
                            since_boundary <= limits.max_head_bytes,
                            "a head of {since_boundary} bytes is still being read under a limit of {}",
                            limits.max_head_bytes
                        );
                    }
                    break;
                }
                Err(err) => {
                    // Poisoned: the same error, whatever comes next.
                    let mut more = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
                    assert_eq!(decoder.decode(&mut more), Err(err));
                    assert!(!decoder.head_in_progress());
                    assert!(matches!(err.status(), 400 | 413 | 431 | 501 | 505));
                    return (requests, RequestEnd::Error(err));
                }
            }
        }
    }
    let end = RequestEnd::Incomplete {
        head_in_progress: decoder.head_in_progress(),
    };
    (requests, end)
}

/// `decode_slice` on one buffer (the reactor's pipelined path) must agree
/// with `decode`.
fn run_request_slices(bytes: &[u8], limits: Limits) -> (Vec<Request>, RequestEnd) {
    let mut decoder = RequestDecoder::new(limits);
    let mut requests = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = bytes.get(at..).unwrap_or_default();
        match decoder.decode_slice(rest) {
            Ok((Decoded::Request(request), used)) => {
                assert!(used <= rest.len());
                at += used;
                requests.push(request);
            }
            Ok((Decoded::Incomplete, used)) => {
                assert_eq!(used, rest.len());
                let end = RequestEnd::Incomplete {
                    head_in_progress: decoder.head_in_progress(),
                };
                return (requests, end);
            }
            Err(err) => return (requests, RequestEnd::Error(err)),
        }
    }
}

/// Raw bytes into the request decoder under small limits, three ways.
fn request_raw(input: &mut Input<'_>) {
    let limits = Limits {
        max_head_bytes: 16 + usize::from(input.byte()) * 8,
        max_body_bytes: usize::from(input.byte()) * 4,
    };
    let plan = input.bytes(8);
    let bytes = input.rest();
    let [whole, planned, singles] = ways(bytes, plan);
    let expected = run_request_decoder(&whole, limits);
    assert_eq!(
        run_request_decoder(&planned, limits),
        expected,
        "planned pieces"
    );
    assert_eq!(
        run_request_decoder(&singles, limits),
        expected,
        "byte by byte"
    );
    assert_eq!(run_request_slices(bytes, limits), expected, "decode_slice");
}

const METHODS: [&str; 6] = ["POST", "GET", "DELETE", "HEAD", "PUT", "OPTIONS"];
const HEADER_NAMES: [&str; 10] = [
    "Accept",
    "Content-Type",
    "Mcp-Session-Id",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Host",
    "X-Filler",
    "Last-Event-ID",
    "Expect",
];

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_token_byte)
}

/// Bytes `httparse` takes in a request-target.
fn is_target_byte(b: u8) -> bool {
    (b'!'..=0x7e).contains(&b) || b >= 0x80
}

/// Bytes `httparse` takes in a field value.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=0x7e).contains(&b) || b >= 0x80
}

fn strip_forbidden(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}

fn trim_ows(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// A name from the pool of headers that matter, or a fuzzer-made one.
fn header_name(input: &mut Input<'_>) -> String {
    let pick = usize::from(input.byte());
    match HEADER_NAMES.get(pick % 16) {
        Some(name) => (*name).to_string(),
        None => input.string(12),
    }
}

/// The request writer into the request decoder: what was written is what
/// is read, whenever the writer was given parts that fit a request line.
fn request_round_trip(input: &mut Input<'_>) {
    let pick = usize::from(input.byte());
    let method = match METHODS.get(pick % 8) {
        Some(method) => (*method).to_string(),
        None => input.string(8),
    };
    let target = input.string(24);
    let host = input.string(16);
    let count = usize::from(input.byte() % 6);
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = header_name(input);
        let value = input.string(24);
        headers.push((name, value));
    }
    let plan = input.bytes(4).to_vec();
    let body = input.rest();

    let fields: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut out = Vec::new();
    write_request(&mut out, &method, &target, &host, &fields, body);

    // What the writer should have made of its parts.
    let sent_method: String = method
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0' | ' ' | '\t'))
        .collect();
    let mut sent_target: String = target
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0' | ' ' | '\t'))
        .collect();
    if sent_target.is_empty() {
        sent_target.push('/');
    }
    let owned = ["host", "content-length", "transfer-encoding", "connection"];
    let mut expected_headers = vec![(
        "host".to_string(),
        trim_ows(&strip_forbidden(&host)).to_string(),
    )];
    let mut values_ok = strip_forbidden(&host).bytes().all(is_value_byte);
    for (name, value) in &headers {
        if owned.iter().any(|o| name.eq_ignore_ascii_case(o)) || !is_token(name) {
            continue;
        }
        let value = strip_forbidden(value);
        values_ok &= value.bytes().all(is_value_byte);
        expected_headers.push((name.to_ascii_lowercase(), trim_ows(&value).to_string()));
    }
    let bodiless = matches!(sent_method.as_str(), "GET" | "DELETE" | "HEAD") && body.is_empty();
    if !bodiless {
        expected_headers.push(("content-length".to_string(), body.len().to_string()));
    }
    let well_formed = is_token(&sent_method)
        && sent_target.bytes().all(is_target_byte)
        && values_ok
        && expected_headers.len() <= MAX_HEADERS;

    let limits = Limits {
        max_head_bytes: out.len() + 1,
        max_body_bytes: body.len(),
    };
    let chunks = pieces(&out, &plan);
    let (requests, end) = run_request_decoder(&chunks, limits);
    if !well_formed {
        // Parts no request line can carry: refusing them is right; what
        // matters is that nothing panicked and no request was invented.
        assert!(requests.len() <= 1);
        return;
    }
    assert_eq!(
        end,
        RequestEnd::Incomplete {
            head_in_progress: false
        },
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, sent_method);
    assert_eq!(request.target, sent_target);
    assert_eq!(request.minor_version, 1);
    assert_eq!(request.headers, expected_headers);
    assert_eq!(request.body, body);
    assert!(request.keep_alive);
}

/// A chunked body framed here (sizes, upper- and lower-case hex, leading
/// zeros, extensions, whitespace before them, trailers) must decode to the
/// same bytes, and the request pipelined after it must follow intact.
fn request_chunked(input: &mut Input<'_>) {
    let plan = input.bytes(6).to_vec();
    let sizes = input.bytes(8).to_vec();
    let style = input.byte();
    let trailers = input.byte() % 3;
    let body = input.rest();

    let mut out = b"POST /mcp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut rest = body;
    let mut cycle = sizes.iter().cycle();
    let mut n = 0usize;
    while !rest.is_empty() {
        let size = usize::from(*cycle.next().unwrap_or(&255)).max(1);
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        let hex = if (style >> (n % 8)) & 1 == 1 {
            format!("{:X}", chunk.len())
        } else {
            format!("{:04x}", chunk.len())
        };
        out.extend_from_slice(hex.as_bytes());
        match (usize::from(style) + n) % 4 {
            0 => out.extend_from_slice(b";ext=\"v;x\""),
            1 => out.extend_from_slice(b" \t;a;b=c"),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = after;
        n += 1;
    }
    out.extend_from_slice(b"0\r\n");
    for i in 0..trailers {
        out.extend_from_slice(format!("X-Trailer-{i}: v\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n");

    let limits = Limits {
        max_head_bytes: 256,
        max_body_bytes: body.len(),
    };
    for chunks in ways(&out, &plan) {
        let (requests, end) = run_request_decoder(&chunks, limits);
        assert_eq!(
            end,
            RequestEnd::Incomplete {
                head_in_progress: false
            }
        );
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].body, body);
        assert_eq!(requests[1].target, "/next");
        assert!(requests[1].body.is_empty());
    }
    // One byte under the declared total is 413, never a truncated body.
    if let Some(smaller) = body.len().checked_sub(1) {
        let limits = Limits {
            max_head_bytes: 256,
            max_body_bytes: smaller,
        };
        let (requests, end) = run_request_decoder(&[&out], limits);
        assert!(requests.is_empty());
        assert_eq!(end, RequestEnd::Error(DecodeError::BodyTooLarge));
    }
}

/// Fuzz target `http_request`: the server-role request decoder.
pub fn http_request(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 3 {
        0 => request_raw(&mut input),
        1 => request_round_trip(&mut input),
        _ => request_chunked(&mut input),
    }
}

// ---------------------------------------------------------------------------
// HTTP response decoder (client role, upstreams)

/// Response events with adjacent body bytes merged, since the decoder may
/// split them differently for different input splits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Head(u16, Vec<(String, String)>, bool),
    Body(Vec<u8>),
    End,
}

fn merge(events: Vec<ResponseEvent>, into: &mut Vec<Ev>) {
    for event in events {
        match event {
            ResponseEvent::Head(head) => {
                into.push(Ev::Head(head.status, head.headers, head.keep_alive))
            }
            ResponseEvent::Body(bytes) => {
                assert!(!bytes.is_empty(), "an empty Body event");
                if let Some(Ev::Body(last)) = into.last_mut() {
                    last.extend_from_slice(&bytes);
                } else {
                    into.push(Ev::Body(bytes));
                }
            }
            ResponseEvent::End => into.push(Ev::End),
        }
    }
}

/// How a response run ended: bytes used (unknown after an error, as
/// `decode` then returns no count), the error if any, and what `eof` said
/// after the last piece.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResponseRun {
    events: Vec<Ev>,
    used: Option<usize>,
    error: Option<ResponseError>,
    eof: Option<Result<(), ResponseError>>,
}

fn run_response_decoder(chunks: &[&[u8]], max_head: usize, head_request: bool) -> ResponseRun {
    let mut decoder = ResponseDecoder::new(max_head, head_request);
    let mut events = Vec::new();
    let mut used = 0usize;
    for chunk in chunks {
        let mut out = Vec::new();
        let result = decoder.decode(chunk, &mut out);
        merge(out, &mut events);
        match result {
            Ok(n) => {
                assert!(n <= chunk.len());
                used += n;
                if n < chunk.len() {
                    // Only a finished response leaves bytes behind.
                    assert!(
                        decoder.is_complete(),
                        "{n} of {} used mid-response",
                        chunk.len()
                    );
                }
                if decoder.is_complete() {
                    assert_eq!(events.last(), Some(&Ev::End));
                    let eof = decoder.eof(&mut Vec::new());
                    assert_eq!(eof, Ok(()));
                    return ResponseRun {
                        events,
                        used: Some(used),
                        error: None,
                        eof: None,
                    };
                }
            }
            Err(err) => {
                assert_eq!(
                    decoder.decode(b"HTTP/1.1 200 OK\r\n\r\n", &mut Vec::new()),
                    Err(err)
                );
                assert!(!decoder.is_complete());
                return ResponseRun {
                    events,
                    used: None,
                    error: Some(err),
                    eof: None,
                };
            }
        }
        assert_eq!(decoder.started(), used > 0);
    }
    let mut out = Vec::new();
    let eof = decoder.eof(&mut out);
    merge(out, &mut events);
    if eof.is_ok() {
        assert_eq!(events.last(), Some(&Ev::End));
    }
    ResponseRun {
        events,
        used: Some(used),
        error: None,
        eof: Some(eof),
    }
}

fn response_raw(input: &mut Input<'_>) {
    let max_head = 16 + usize::from(input.byte()) * 8;
    let head_request = input.bool();
    let plan = input.bytes(8);
    let bytes = input.rest();
    let [whole, planned, singles] = ways(bytes, plan);
    let expected = run_response_decoder(&whole, max_head, head_request);
    for event in &expected.events {
        if let Ev::Head(status, headers, _) = event {
            // 1xx are skipped, 101 and statuses under 100 refused.
            assert!(
                (200..=999).contains(status),
                "status {status} passed as a final response"
            );
            assert!(headers.len() <= mcphop::http::client::MAX_RESPONSE_HEADERS);
        }
    }
    assert_eq!(
        run_response_decoder(&planned, max_head, head_request),
        expected
    );
    assert_eq!(
        run_response_decoder(&singles, max_head, head_request),
        expected
    );
}

/// The response writer into the response decoder.
fn response_round_trip(input: &mut Input<'_>) {
    let framing = input.byte() % 3;
    let status = 100 + ((u16::from(input.byte()) << 8) | u16::from(input.byte())) % 900;
    let keep_alive = input.bool();
    let count = usize::from(input.byte() % 6);
    let mut headers = Vec::new();
    for _ in 0..count {
        let mut name = header_name(input);
        if !is_token(&name) {
            // The writer's contract: callers pass token names.
            name = "X-Made".to_string();
        }
        // ... and values without CR, LF or NUL; only bytes a parser takes.
        let value: String = input
            .string(24)
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        headers.push((name, value));
    }
    let plan = input.bytes(6).to_vec();
    let chunk_plan = input.bytes(6).to_vec();
    let body = input.rest();
    let fields: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();

    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let mut out = Vec::new();
    let ends_at_eof = match framing {
        0 => {
            response::write_full(
                &mut out,
                status,
                &fields,
                if no_body { b"" } else { body },
                keep_alive,
            );
            false
        }
        1 if !no_body => {
            response::write_chunked_head(&mut out, status, &fields, keep_alive);
            for chunk in pieces(body, &chunk_plan) {
                response::write_chunk(&mut out, chunk);
            }
            response::write_last_chunk(&mut out);
            false
        }
        _ if !no_body => {
            response::write_stream_head(&mut out, status, &fields);
            out.extend_from_slice(body);
            true
        }
        _ => return,
    };
    let head_len = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |at| at + 4);
    // An interim response is skipped; the final one after it is read.
    let interim = (100..200).contains(&status);
    if interim {
        response::write_full(&mut out, 200, &[], b"after", true);
    }

    let written_keep_alive = keep_alive && !ends_at_eof;
    let mut expected_headers: Vec<(String, String)> = Vec::new();
    for (name, value) in &headers {
        let framing_field = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        if framing_field || (!written_keep_alive && name.eq_ignore_ascii_case("connection")) {
            continue;
        }
        expected_headers.push((name.to_ascii_lowercase(), trim_ows(value).to_string()));
    }
    if !written_keep_alive {
        expected_headers.push(("connection".to_string(), "close".to_string()));
    }
    let asks_close = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection")
            && v.split(',')
                .any(|o| trim_ows(o).eq_ignore_ascii_case("close"))
    });
    if !no_body {
        match framing {
            1 => expected_headers.push(("transfer-encoding".to_string(), "chunked".to_string())),
            0 => expected_headers.push(("content-length".to_string(), body.len().to_string())),
            _ => {}
        }
    }

    for chunks in ways(&out, &plan) {
        let run = run_response_decoder(&chunks, out.len() + 1, false);
        if status == 101 {
            assert_eq!(
                run.error,
                Some(ResponseError::Malformed(
                    "unexpected 101 Switching Protocols"
                ))
            );
            continue;
        }
        assert_eq!(run.error, None, "{:?}", String::from_utf8_lossy(&out));
        if interim {
            let after_headers = vec![("content-length".to_string(), "5".to_string())];
            assert_eq!(
                run.events,
                vec![
                    Ev::Head(200, after_headers, true),
                    Ev::Body(b"after".to_vec()),
                    Ev::End
                ]
            );
            assert_eq!(run.used, Some(out.len()));
            continue;
        }
        let mut expected = vec![Ev::Head(
            status,
            expected_headers.clone(),
            written_keep_alive && !asks_close,
        )];
        if !no_body && !body.is_empty() {
            expected.push(Ev::Body(body.to_vec()));
        }
        expected.push(Ev::End);
        assert_eq!(run.events, expected);
        assert_eq!(run.used, Some(out.len()));
        assert_eq!(run.eof.is_some(), ends_at_eof);
    }

    // The same bytes for a HEAD request: the head only, the body left over.
    if !interim && status != 101 {
        let run = run_response_decoder(&[&out], out.len() + 1, true);
        assert_eq!(run.error, None);
        assert_eq!(run.used, Some(head_len));
        assert!(matches!(run.events.as_slice(), [Ev::Head(..), Ev::End]));
    }
}

/// Fuzz target `http_response`: the client-role response decoder.
pub fn http_response(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 2 {
        0 => response_raw(&mut input),
        _ => response_round_trip(&mut input),
    }
}

// ---------------------------------------------------------------------------
// SSE decoder

fn run_sse(chunks: &[&[u8]], max: usize) -> (Vec<SseEvent>, Result<(), SseError>) {
    let mut decoder = SseDecoder::new(max);
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(err) = decoder.feed(chunk, &mut events) {
            let mut more = Vec::new();
            assert_eq!(decoder.feed(b"data: x\n\n", &mut more), Err(err));
            assert!(more.is_empty());
            return (events, Err(err));
        }
    }
    // finish() leaves a fresh decoder behind.
    decoder.finish();
    let mut fresh = Vec::new();
    assert_eq!(decoder.feed(b"data: x\n\n", &mut fresh), Ok(()));
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].data, "x");
    (events, Ok(()))
}

fn sse_raw(input: &mut Input<'_>) {
    let max = 1 + usize::from(input.byte()) * 4;
    let plan = input.bytes(8);
    let bytes = input.rest();
    let [whole, planned, singles] = ways(bytes, plan);
    let expected = run_sse(&whole, max);
    for event in &expected.0 {
        assert!(
            event.data.len() <= max,
            "an event of {} bytes under a limit of {max}",
            event.data.len()
        );
        // Lines end at CR or LF, so no field can hold one except data's joins.
        assert!(!event
            .id
            .as_deref()
            .unwrap_or("")
            .contains(['\r', '\n', '\0']));
        assert!(!event.event.as_deref().unwrap_or("").contains(['\r', '\n']));
        assert!(!event.data.contains('\r'));
        assert_ne!(event.event.as_deref(), Some(""));
    }
    assert_eq!(run_sse(&planned, max), expected, "planned pieces");
    assert_eq!(run_sse(&singles, max), expected, "byte by byte");
}

/// What `sse::push_field` makes of a value.
fn field_value(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect()
}

/// The SSE encoder into the SSE decoder, over a stream of events, priming
/// events and comments.
fn sse_round_trip(input: &mut Input<'_>) {
    let plan = input.bytes(6).to_vec();
    let count = 1 + usize::from(input.byte() % 6);
    let mut out = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..count {
        match input.byte() % 4 {
            0 => {
                let text = input.string(16);
                sse::write_comment(&mut out, &text);
            }
            1 => {
                let id = input.string(12);
                let retry = u64::from(input.byte()) << 24 | u64::from(input.byte());
                sse::write_priming(&mut out, &id, u128::from(retry));
                let id_bytes = field_value(id.as_bytes());
                expected.push(SseEvent {
                    event: None,
                    id: (!id_bytes.contains(&0))
                        .then(|| String::from_utf8_lossy(&id_bytes).into_owned()),
                    data: String::new(),
                    retry: Some(retry),
                });
            }
            _ => {
                let event = input.bool().then(|| input.string(12));
                let id = input.bool().then(|| input.string(12));
                let data = input.bytes(64);
                sse::write_event(&mut out, event.as_deref(), id.as_deref(), data);
                let event = event
                    .map(|e| String::from_utf8_lossy(&field_value(e.as_bytes())).into_owned())
                    .filter(|e| !e.is_empty());
                let id = id
                    .map(|i| field_value(i.as_bytes()))
                    .filter(|i| !i.contains(&0))
                    .map(|i| String::from_utf8_lossy(&i).into_owned());
                let lines: Vec<Vec<u8>> = data
                    .split(|&b| b == b'\n')
                    .map(|line| field_value(line.strip_suffix(b"\r").unwrap_or(line)))
                    .collect();
                let joined = lines.join(&b'\n');
                expected.push(SseEvent {
                    event,
                    id,
                    data: String::from_utf8_lossy(&joined).into_owned(),
                    retry: None,
                });
            }
        }
    }
    for chunks in ways(&out, &plan) {
        let (events, result) = run_sse(&chunks, ROUND_TRIP_MAX_EVENT_BYTES);
        assert_eq!(result, Ok(()));
        assert_eq!(events, expected, "{:?}", String::from_utf8_lossy(&out));
    }
}

/// The round trip's limit: far above its largest event (a few fields and 64
/// bytes of data), so the limit never decides its outcome.
const ROUND_TRIP_MAX_EVENT_BYTES: usize = 1 << 20;

/// Fuzz target `sse`: the SSE decoder, and the encoder into it.
pub fn sse(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 2 {
        0 => sse_raw(&mut input),
        _ => sse_round_trip(&mut input),
    }
}

// ---------------------------------------------------------------------------
// stdio line framing

/// What a line framer should yield for `bytes`, lines cut at LF, one CR
/// before it dropped, lines over `max` reported by length.
fn reference_lines(bytes: &[u8], max: usize) -> Vec<Result<Vec<u8>, usize>> {
    let mut lines = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = rest.split_at(end);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        lines.push(if line.len() > max {
            Err(line.len())
        } else {
            Ok(line.to_vec())
        });
        rest = after.get(1..).unwrap_or_default();
    }
    lines
}

fn run_lines(chunks: &[&[u8]], max: usize) -> Vec<Line> {
    let mut framer = LineFramer::new(max);
    let mut lines = Vec::new();
    for chunk in chunks {
        framer.feed(chunk);
        while let Some(line) = framer.next_line() {
            lines.push(line);
        }
        // Once every line is out, at most one line's worth is held, and
        // the CR that may begin its CRLF.
        assert!(
            framer.buffered() <= max + 1,
            "{} bytes buffered under a line limit of {max}",
            framer.buffered()
        );
    }
    lines
}

/// Fuzz target `lines`: the stdio line framer.
pub fn lines(data: &[u8]) {
    let mut input = Input::new(data);
    let max = usize::from(input.byte() % 64);
    let plan = input.bytes(8);
    let bytes = input.rest();
    let reference = reference_lines(bytes, max);
    for chunks in ways(bytes, plan) {
        let got = run_lines(&chunks, max);
        assert_eq!(got.len(), reference.len());
        for (line, want) in got.iter().zip(&reference) {
            match (line, want) {
                (Line::Complete(got), Ok(want)) => assert_eq!(got, want),
                // The exact length, without the CR of its CRLF, however
                // the reads split it.
                (Line::Overlong(got), Err(want)) => assert_eq!(got, want, "Overlong"),
                (got, want) => panic!("got {got:?}, expected {want:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// JSON-RPC classification

/// Checks that `kind` is consistent with the message's fields.
fn check_kind(message: &Value, kind: Kind) {
    let object = message.as_object();
    assert!(object.is_some());
    assert_eq!(message.get("jsonrpc").and_then(Value::as_str), Some("2.0"));
    let method = message.get("method").and_then(Value::as_str);
    let id = message.get("id").and_then(IdKey::of_id);
    match kind {
        Kind::Request => {
            assert!(method.is_some());
            assert!(id.is_some());
        }
        Kind::Notification => {
            assert!(method.is_some());
            assert!(message.get("id").is_none());
        }
        Kind::Response => {
            assert!(message.get("method").is_none());
            assert!(message.get("result").is_some() || message.get("error").is_some());
            assert!(id.is_some() || message["id"].is_null());
        }
    }
}

/// `params._meta.progressToken` and the like, read from a full `Value`.
fn pointer_key(value: &Value, pointer: &str) -> Option<IdKey> {
    value.pointer(pointer).and_then(IdKey::of)
}

/// One message's bytes through the light view (`Message`, what mcphop
/// routes on), checked against `classify` on the full `Value` parsed from
/// the same bytes: the same kind, id and method; a refusal only where
/// `classify` refuses too, or for a routed key given twice (which the view
/// refuses and a `Value` reads as its last occurrence); and a refusal never
/// echoes an id that is not one.
fn check_message(bytes: &[u8], value: &Value) {
    let reference = jsonrpc::classify(value);
    if let Ok(kind) = reference {
        check_kind(value, kind);
    }
    let message = match Message::parse(bytes) {
        Ok(message) => message,
        Err(Rejected::NotJson(why)) => panic!("a JSON value refused as not JSON: {why}"),
        Err(rejected @ Rejected::NotJsonRpc { why, .. }) => {
            assert!(
                reference.is_err() || why == "a JSON-RPC message must not repeat a key",
                "refused ({why}) what classify took as {reference:?}"
            );
            assert_eq!(rejected.code(), jsonrpc::INVALID_REQUEST);
            // The refusal's answer is a response mcphop itself can route:
            // its id is the message's own only when that is an id, else null.
            let answer = jsonrpc::error_response(rejected.id(), rejected.code(), "x");
            let answer = Message::parse(answer.as_slice()).expect("a refusal is a message");
            assert_eq!(answer.kind(), Kind::Response);
            assert_eq!(answer.reply_id().get(), rejected.id().get());
            return;
        }
    };
    let kind = message.kind();
    assert_eq!(reference, Ok(kind));
    assert_eq!(message.id_key(), value.get("id").and_then(IdKey::of_id));
    // mcphop writes its own answers (timeouts, cancels) under the key's
    // spelling of a numeric id, so that spelling is the id as sent.
    if let Some(IdKey::Number(spelled)) = message.id_key() {
        assert_eq!(spelled, message.reply_id().get());
    }
    assert_eq!(
        message.method(),
        value.get("method").and_then(Value::as_str)
    );
    // The other fields are total functions of the bytes; where the view
    // names one, the full value names the same (the view names nothing for
    // a params object that repeats a key, so only this direction holds).
    if let Some(token) = message.request_progress_token() {
        assert_eq!(
            Some(token),
            pointer_key(value, "/params/_meta/progressToken")
        );
    }
    if let Some(token) = message.progress_token() {
        assert_eq!(Some(token), pointer_key(value, "/params/progressToken"));
    }
    if let Some(id) = message.cancelled_request() {
        assert_eq!(
            Some(id),
            value.pointer("/params/requestId").and_then(IdKey::of_id)
        );
    }
    if let Some(version) = message.meta_protocol_version() {
        let pointer = "/params/_meta/io.modelcontextprotocol~1protocolVersion";
        assert_eq!(
            Some(version),
            value.pointer(pointer).and_then(Value::as_str)
        );
    }
    let _ = message.takes_server_requests();
    if let Some(version) = message.result_protocol_version() {
        assert_eq!(
            Some(version.as_ref()),
            value
                .pointer("/result/protocolVersion")
                .and_then(Value::as_str)
        );
    }
    assert_eq!(message.has_result(), value.get("result").is_some());
    // The answer mcphop writes under a message's id reaches the same id: it
    // echoes the id's text as received.
    if kind == Kind::Request {
        let answer = jsonrpc::error_response(message.reply_id(), jsonrpc::INVALID_REQUEST, "x");
        let answer = Message::parse(answer.as_slice()).expect("an error answer is a message");
        assert_eq!(answer.kind(), Kind::Response);
        assert_eq!(answer.id_key(), message.id_key());
        assert_eq!(answer.reply_id().get(), message.reply_id().get());
    }
}

/// An error response for `id` must classify as a response to that id when
/// `id` is one (a string or a 64-bit integer) or null, and be refused
/// otherwise, by both `classify` and the view.
fn check_error_response(id: &Value, code: i64, text: &str) {
    let Ok(raw) = serde_json::value::to_raw_value(id) else {
        return;
    };
    let bytes = jsonrpc::error_response(&raw, code, text);
    let parsed: Value = serde_json::from_slice(&bytes).expect("error_response writes JSON");
    let routable = IdKey::of_id(id).is_some() || id.is_null();
    match jsonrpc::classify(&parsed) {
        Ok(kind) => {
            assert!(routable, "an error response to {id} classified");
            assert_eq!(kind, Kind::Response);
            assert_eq!(parsed.get("id").and_then(IdKey::of_id), IdKey::of_id(id));
            assert_eq!(parsed["error"]["code"], code);
            assert_eq!(parsed["error"]["message"], text);
        }
        Err(why) => assert!(!routable, "error response to {id} refused: {}", why.0),
    }
    match Message::parse(bytes.as_slice()) {
        Ok(message) => {
            assert!(routable, "the view took an error response to {id}");
            assert_eq!(message.kind(), Kind::Response);
            assert_eq!(message.id_key(), IdKey::of_id(id));
        }
        Err(rejected) => {
            assert!(
                !routable,
                "the view refused an error response to {id}: {rejected}"
            );
            assert_eq!(rejected.id().get(), "null");
        }
    }
}

/// Fuzz target `jsonrpc`: classification, the light view, and error
/// responses.
pub fn jsonrpc(data: &[u8]) {
    let mut input = Input::new(data);
    let code = i64::from(input.byte() as i8) * 1000;
    let text = input.string(16);
    let bytes = input.rest();
    // Whatever the bytes, the view and the batch splitter return a value.
    let _ = Message::parse(bytes);
    let carried = jsonrpc::carried(bytes);
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    match (carried, &value) {
        (Ok(Carried::One(one)), _) => {
            assert_eq!(one, bytes);
            check_message(bytes, &value);
        }
        (Ok(Carried::Batch(elements)), Value::Array(values)) => {
            assert_eq!(elements.len(), values.len());
            for (element, value) in elements.iter().zip(values) {
                // Each element slice is that element's own JSON text.
                let reparsed: Value =
                    serde_json::from_slice(element).expect("a batch element is JSON");
                assert_eq!(&reparsed, value);
                check_message(element, value);
            }
        }
        (carried, _) => panic!("{carried:?} for the JSON {value}"),
    }
    if let Some(id) = value.get("id") {
        check_error_response(id, jsonrpc::INVALID_REQUEST, "x");
    }
    check_error_response(&value, code, &text);
}

// ---------------------------------------------------------------------------
// Front-door rules

const PORT: u16 = 8080;
const PATH: &str = "/mcp";

fn policy() -> AccessPolicy {
    AccessPolicy::new(
        PORT,
        &["proxy.example".to_string()],
        &["https://app.example".to_string()],
    )
}

fn allowed_host(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let names = ["localhost", "127.0.0.1", "[::1]"];
    host == "proxy.example"
        || names
            .iter()
            .any(|n| host == *n || host == format!("{n}:{PORT}"))
}

fn allowed_origin(origin: &str) -> bool {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let names = ["localhost", "127.0.0.1", "[::1]"];
    origin == "https://app.example"
        || ["http", "https"].iter().any(|scheme| {
            names.iter().any(|n| {
                origin == format!("{scheme}://{n}") || origin == format!("{scheme}://{n}:{PORT}")
            })
        })
}

fn check_reply(reply: &Reply) {
    assert!(
        matches!(reply.status, 400 | 403 | 404 | 405 | 406 | 415),
        "status {}",
        reply.status
    );
    if reply.status == 405 {
        assert!(reply.headers.iter().any(|(n, _)| *n == "Allow"));
    }
    if !reply.body.is_empty() {
        let body: Value = serde_json::from_slice(&reply.body).expect("a reply body is JSON");
        assert_eq!(jsonrpc::classify(&body), Ok(Kind::Response));
        let code = body["error"]["code"].as_i64();
        assert!(
            matches!(
                code,
                Some(jsonrpc::INVALID_REQUEST | jsonrpc::PARSE_ERROR | jsonrpc::UPSTREAM_GONE)
            ),
            "code {code:?}"
        );
        // Only an id that is one is echoed; anything else answers null.
        let id = &body["id"];
        assert!(
            id.is_null() || IdKey::of_id(id).is_some(),
            "a reply echoed the id {id}"
        );
    }
}

/// A message an intent carries agrees with `classify` on the full value of
/// its bytes (where serde_json builds one: nesting past 128 levels and
/// numbers beyond f64 in a payload travel without being understood).
fn check_carried(message: &Message) {
    if let Ok(value) = serde_json::from_slice::<Value>(message.bytes()) {
        assert_eq!(jsonrpc::classify(&value), Ok(message.kind()));
        assert_eq!(message.id_key(), value.get("id").and_then(IdKey::of_id));
    }
}

fn check_intent(request: &Request) {
    let policy = policy();
    let intent = interpret(&mut request.clone(), PATH, &policy);
    assert_eq!(
        interpret(&mut request.clone(), PATH, &policy),
        intent,
        "not deterministic"
    );
    if let Intent::Reply(reply) = &intent {
        check_reply(reply);
        return;
    }
    // Anything but a Reply passed the front door.
    let hosts: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n == "host")
        .map(|(_, v)| v.as_str())
        .collect();
    match hosts.as_slice() {
        [] => assert_eq!(request.minor_version, 0, "HTTP/1.1 without Host passed"),
        [host] => assert!(allowed_host(host), "Host {host:?} passed"),
        _ => panic!("two Host fields passed"),
    }
    if let Some(origin) = request.header("origin") {
        assert!(allowed_origin(origin), "Origin {origin:?} passed");
    }
    assert_eq!(request.path(), PATH);
    let session_header = request.header("mcp-session-id");
    // Two session fields with different values never pass: which session
    // a request goes to must not depend on which of them is read.
    assert!(
        request
            .headers
            .iter()
            .filter(|(n, _)| n == "mcp-session-id")
            .all(|(_, v)| Some(v.as_str()) == session_header),
        "two different Mcp-Session-Id fields passed"
    );
    match intent {
        Intent::Reply(_) => {}
        Intent::Initialize { message } => {
            assert_eq!(request.method, "POST");
            assert_eq!(message.method(), Some("initialize"));
            assert_eq!(message.kind(), Kind::Request);
            // The message owns the request's body, as received.
            assert_eq!(message.bytes(), request.body.as_slice());
            check_carried(&message);
            assert!(session_header.is_none());
        }
        Intent::Post { session, message } => {
            assert_eq!(request.method, "POST");
            assert!(!session.is_empty());
            assert_eq!(Some(session.as_str()), session_header);
            assert_eq!(message.bytes(), request.body.as_slice());
            check_carried(&message);
        }
        Intent::Batch { session, messages } => {
            assert_eq!(request.method, "POST");
            assert_eq!(Some(session.as_str()), session_header);
            assert!(!messages.is_empty());
            let Ok(Carried::Batch(elements)) = jsonrpc::carried(&request.body) else {
                panic!("a batch from a body that is no JSON array");
            };
            assert_eq!(messages.len(), elements.len());
            for (message, element) in messages.iter().zip(elements) {
                assert_eq!(message.bytes(), element);
                assert_ne!(message.method(), Some("initialize"));
                check_carried(message);
            }
        }
        Intent::OpenStream {
            session,
            last_event_id,
        } => {
            assert_eq!(request.method, "GET");
            assert_eq!(Some(session.as_str()), session_header);
            assert!(last_event_id.is_none_or(|id| !id.is_empty()));
        }
        Intent::Delete { session } => {
            assert_eq!(request.method, "DELETE");
            assert_eq!(Some(session.as_str()), session_header);
        }
        Intent::Stateless { refusal } => {
            assert_eq!(request.method, "POST");
            assert_eq!(refusal.status, 400);
            check_reply(&refusal);
        }
    }
}

const ENDPOINT_HEADERS: [(&str, &[&str]); 7] = [
    (
        "host",
        &[
            "127.0.0.1:8080",
            "localhost",
            "evil.example",
            "PROXY.example",
            "",
        ],
    ),
    (
        "origin",
        &[
            "http://localhost:8080",
            "https://evil.example",
            "https://app.example/",
            "null",
        ],
    ),
    (
        "accept",
        &[
            "application/json, text/event-stream",
            "text/event-stream",
            "*/*",
            "application/*;q=1, text/*",
        ],
    ),
    (
        "content-type",
        &[
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "",
        ],
    ),
    (
        "mcp-session-id",
        &["0123456789abcdef0123456789abcdef", "", "x"],
    ),
    (
        "mcp-protocol-version",
        &["2025-06-18", "2026-07-28", "1999-01-01", "2025-03-26"],
    ),
    ("last-event-id", &["3-0", " ", "x"]),
];

const BODIES: [&str; 6] = [
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    r#"[{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","method":"n"}]"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"server/discover"}"#,
    r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
];

/// A request built field by field, so the fuzzer reaches the rules past
/// the Host, Accept and Content-Type checks quickly.
fn structured_request(input: &mut Input<'_>) -> Request {
    let pick = usize::from(input.byte());
    let method = match METHODS.get(pick % 8) {
        Some(method) => (*method).to_string(),
        None => input.string(8),
    };
    let target = match input.byte() % 4 {
        0 => "/mcp".to_string(),
        1 => "http://127.0.0.1:8080/mcp?x=1".to_string(),
        2 => "/mcp#frag".to_string(),
        _ => input.string(16),
    };
    let minor_version = input.byte() & 1;
    let mut headers = Vec::new();
    let mask = input.byte();
    for (i, (name, values)) in ENDPOINT_HEADERS.iter().enumerate() {
        if i == 0 || (mask >> i) & 1 == 1 {
            let pick = usize::from(input.byte());
            let value = match values.get(pick % (values.len() + 1)) {
                Some(value) => (*value).to_string(),
                None => input.string(40),
            };
            headers.push((name.to_string(), value));
        }
    }
    if mask & 0x80 != 0 {
        headers.push(("host".to_string(), "localhost".to_string()));
    }
    let body = match BODIES.get(usize::from(input.byte() % 8)) {
        Some(body) => body.as_bytes().to_vec(),
        None => input.rest().to_vec(),
    };
    Request {
        method,
        target,
        minor_version,
        headers,
        body,
        keep_alive: true,
    }
}

/// Fuzz target `endpoint`: `interpret` on whole requests, decoded from
/// raw bytes or built from the pool of fields that matter.
pub fn endpoint(data: &[u8]) {
    let mut input = Input::new(data);
    if input.bool() {
        check_intent(&structured_request(&mut input));
        return;
    }
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buffer = input.rest().to_vec();
    while let Ok(Decoded::Request(request)) = decoder.decode(&mut buffer) {
        check_intent(&request);
    }
}
