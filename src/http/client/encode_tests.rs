//! Tests of the request encoder, [`write_request`].

use super::*;

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
