//! Sans-IO HTTP/1.1 response encoder for the server side.
//!
//! Owns the bytes of every response head and body framing the server writes:
//! status lines, header sanitising, Content-Length and chunked framing,
//! `Connection: close`, and interim `100 Continue`. Functions append to a
//! caller-owned buffer so the reactor can queue several responses in one
//! write buffer without extra copies.
//!
//! The encoder owns message framing: caller-supplied `Content-Length` and
//! `Transfer-Encoding` fields are dropped (a proxy forwarding upstream headers
//! would otherwise emit two framings), and so is a caller `Connection` field
//! when the encoder itself writes `Connection: close`.

use super::{is_forbidden_value_byte, is_token};

/// Status written instead of one outside 100..=999, which cannot be put on
/// a status line; debug builds assert instead.
pub const FALLBACK_STATUS: u16 = 500;

/// Canonical reason phrase for a status code; unknown codes get `"Unknown"`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends a complete response with a Content-Length body to `out`.
/// Always writes `Content-Length`; writes `Connection: close` when !keep_alive.
///
/// Exception: a 1xx, 204 or 304 response gets neither `Content-Length` nor
/// body, because those responses never have a body (RFC 9110 sections 8.6
/// and 15) and a stray length would misframe the next response; debug builds
/// assert `body` is empty.
pub fn write_full(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let status = checked_status(status);
    write_head_start(out, status, headers, keep_alive);
    if forbids_body(status) {
        debug_assert!(body.is_empty(), "status {status} cannot carry a body");
        out.extend_from_slice(b"\r\n");
        return;
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Appends a response head for a streamed body using `Transfer-Encoding: chunked`.
///
/// Follow with [`write_chunk`] calls and one [`write_last_chunk`]. Only for
/// HTTP/1.1 clients: an HTTP/1.0 client cannot decode chunked bodies.
pub fn write_chunked_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    keep_alive: bool,
) {
    let status = checked_status(status);
    debug_assert!(!forbids_body(status), "status {status} cannot carry a body");
    write_head_start(out, status, headers, keep_alive);
    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
}

/// Appends a response head for a body that ends when the connection closes
/// (`Connection: close`, no length): how an HTTP/1.0 client gets a stream.
pub fn write_stream_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    let status = checked_status(status);
    write_head_start(out, status, headers, false);
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk (no-op for empty data, since an empty chunk would end the body).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of `length` bytes that `fill` writes straight into
/// `out` (no staging buffer). Should `fill` write another length, the chunk
/// is rewritten from what it wrote, so the framing stays right.
pub fn write_chunk_with(out: &mut Vec<u8>, length: usize, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    push_hex(out, length);
    out.extend_from_slice(b"\r\n");
    let data_start = out.len();
    fill(out);
    if out.len() - data_start == length {
        if length > 0 {
            out.extend_from_slice(b"\r\n");
        } else {
            out.truncate(start);
        }
        return;
    }
    let data = out.split_off(data_start);
    out.truncate(start);
    write_chunk(out, &data);
}

/// Appends the terminating zero-length chunk (with an empty trailer section).
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Appends `HTTP/1.1 100 Continue\r\n\r\n`.
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

fn checked_status(status: u16) -> u16 {
    debug_assert!(
        (100..=999).contains(&status),
        "status {status} is not three digits"
    );
    if (100..=999).contains(&status) {
        status
    } else {
        FALLBACK_STATUS
    }
}

/// 1xx and 204 must not carry Content-Length; 304's would have to describe
/// the unsent representation, which this encoder does not know.
pub(crate) fn forbids_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Status line, caller headers, and `Connection: close` if needed; leaves
/// the head open for the framing field and blank line.
fn write_head_start(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)], keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        debug_assert!(is_token(name), "invalid header name {name:?}");
        debug_assert!(
            !value.bytes().any(is_forbidden_value_byte),
            "header {name} value contains CR, LF or NUL"
        );
        if is_framing_header(name) || (!keep_alive && name.eq_ignore_ascii_case("connection")) {
            continue;
        }
        push_header(out, name, value);
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
}

fn is_framing_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// Appends `name: value\r\n`, defending against header injection in release
/// builds: a field with an invalid name is dropped, and CR, LF and NUL are
/// removed from the value.
fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    if !is_token(name) {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend(value.bytes().filter(|&b| !is_forbidden_value_byte(b)));
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal without going through a formatter (which would
/// return an io::Result that can never fail for a Vec).
fn push_decimal(out: &mut Vec<u8>, n: usize) {
    push_radix(out, n, 10);
}

/// Writes `n` in lowercase hex, as chunk sizes are sent.
fn push_hex(out: &mut Vec<u8>, n: usize) {
    push_radix(out, n, 16);
}

fn push_radix(out: &mut Vec<u8>, mut n: usize, radix: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // usize::MAX in base 10 has at most 20 digits.
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        if let (Some(slot), Some(&digit)) = (buf.get_mut(start), DIGITS.get(n % radix)) {
            *slot = digit;
        }
        n /= radix;
        if n == 0 || start == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_filled_in_place_is_a_chunk() {
        let mut expected = b"head".to_vec();
        write_chunk(&mut expected, b"hello, world");
        for claimed in [12, 3, 40] {
            let mut out = b"head".to_vec();
            write_chunk_with(&mut out, claimed, |out| {
                out.extend_from_slice(b"hello, world")
            });
            assert_eq!(out, expected, "claimed {claimed}");
        }
        let mut out = b"head".to_vec();
        write_chunk_with(&mut out, 0, |_| {});
        assert_eq!(out, b"head");
    }

    fn full(status: u16, headers: &[(&str, &str)], body: &[u8], keep_alive: bool) -> String {
        let mut out = Vec::new();
        write_full(&mut out, status, headers, body, keep_alive);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn reason_phrases() {
        let expected = [
            (200, "OK"),
            (202, "Accepted"),
            (204, "No Content"),
            (400, "Bad Request"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (406, "Not Acceptable"),
            (408, "Request Timeout"),
            (413, "Content Too Large"),
            (415, "Unsupported Media Type"),
            (421, "Misdirected Request"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (502, "Bad Gateway"),
            (503, "Service Unavailable"),
            (504, "Gateway Timeout"),
            (299, "Unknown"),
            (0, "Unknown"),
        ];
        for (status, phrase) in expected {
            assert_eq!(reason_phrase(status), phrase, "{status}");
        }
    }

    #[test]
    fn full_response_keep_alive() {
        assert_eq!(
            full(
                200,
                &[("Content-Type", "application/json")],
                b"{\"ok\":true}",
                true
            ),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Content-Length: 11\r\n\r\n{\"ok\":true}"
        );
    }

    #[test]
    fn full_response_close_and_empty_body() {
        assert_eq!(
            full(202, &[], b"", false),
            "HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            full(404, &[("X-A", "1"), ("X-B", "2")], b"nope", true),
            "HTTP/1.1 404 Not Found\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 4\r\n\r\nnope"
        );
    }

    #[test]
    fn full_response_appends_after_existing_bytes() {
        let mut out = b"earlier".to_vec();
        write_full(&mut out, 408, &[], b"", false);
        assert_eq!(
            out,
            b"earlierHTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn no_content_has_no_length_or_body() {
        assert_eq!(
            full(204, &[("Mcp-Session-Id", "s")], b"", true),
            "HTTP/1.1 204 No Content\r\nMcp-Session-Id: s\r\n\r\n"
        );
    }

    #[test]
    fn not_modified_has_no_length_or_body() {
        assert_eq!(
            full(304, &[], b"", false),
            "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn caller_framing_headers_are_replaced() {
        assert_eq!(
            full(
                200,
                &[
                    ("content-length", "999"),
                    ("Transfer-Encoding", "chunked"),
                    ("Connection", "keep-alive"),
                ],
                b"x",
                false
            ),
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
        );
        // With keep-alive the caller may still send `Connection: keep-alive`
        // (needed by HTTP/1.0 clients).
        assert_eq!(
            full(200, &[("Connection", "keep-alive")], b"", true),
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn chunked_stream() {
        let mut out = Vec::new();
        write_chunked_head(
            &mut out,
            200,
            &[("Content-Type", "text/event-stream")],
            true,
        );
        write_chunk(&mut out, b"data: 1\n\n");
        write_chunk(&mut out, b"");
        write_chunk(&mut out, &[b'z'; 26]);
        write_last_chunk(&mut out);
        let expected = [
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
               Transfer-Encoding: chunked\r\n\r\n"[..],
            b"9\r\ndata: 1\n\n\r\n",
            b"1a\r\n",
            &[b'z'; 26],
            b"\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn chunked_head_close() {
        let mut out = Vec::new();
        write_chunked_head(&mut out, 503, &[], false);
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
              Transfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn empty_chunk_is_noop() {
        let mut out = b"x".to_vec();
        write_chunk(&mut out, b"");
        assert_eq!(out, b"x");
    }

    #[test]
    fn continue_line() {
        let mut out = Vec::new();
        write_continue(&mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn header_sanitising() {
        let mut out = Vec::new();
        push_header(&mut out, "X-Evil", "a\r\nSet-Cookie: b\0");
        assert_eq!(out, b"X-Evil: aSet-Cookie: b\r\n");
        out.clear();
        push_header(&mut out, "Bad\r\nName", "v");
        push_header(&mut out, "", "v");
        push_header(&mut out, "A:B", "v");
        assert!(out.is_empty());
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "contains CR, LF or NUL")]
    fn header_injection_asserts_in_debug() {
        full(200, &[("X", "a\r\nb")], b"", true);
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn header_injection_stripped_in_release() {
        assert_eq!(
            full(200, &[("X", "a\r\nb"), ("Bad Name", "v")], b"", true),
            "HTTP/1.1 200 OK\r\nX: ab\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            full(7, &[], b"", false),
            "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn numbers() {
        let render = |n: usize, hex: bool| {
            let mut out = Vec::new();
            if hex {
                push_hex(&mut out, n);
            } else {
                push_decimal(&mut out, n);
            }
            String::from_utf8(out).unwrap()
        };
        assert_eq!(render(0, false), "0");
        assert_eq!(render(1234567890, false), "1234567890");
        assert_eq!(render(usize::MAX, false), usize::MAX.to_string());
        assert_eq!(render(0, true), "0");
        assert_eq!(render(0xabc, true), "abc");
        assert_eq!(render(usize::MAX, true), format!("{:x}", usize::MAX));
    }

    #[test]
    fn round_trips_through_request_decoder_style_framing() {
        // The chunk framing written here must parse with httparse, which
        // the request side uses for the same grammar.
        let mut out = Vec::new();
        write_chunk(&mut out, &[0u8; 300]);
        assert_eq!(
            httparse::parse_chunk_size(&out),
            Ok(httparse::Status::Complete((5, 300)))
        );
    }
}
