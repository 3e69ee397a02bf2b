//! Tests of the request decoder, each run over every split of its input.

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
    let r = one_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc");
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
fn split_crlf_after_chunk_data_is_consumed() {
    // The shared body decoder tracks the CR and the LF separately, so the
    // whole input is used even when the CRLF after chunk data is split
    // (the server decoder used to leave a lone CR in `input`).
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r".to_vec();
    assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
    assert!(input.is_empty());
    input.extend_from_slice(b"\n0\r\n\r\n");
    match decoder.decode(&mut input) {
        Ok(Decoded::Request(r)) => assert_eq!(r.body, b"ok"),
        other => panic!("{other:?}"),
    }
    assert!(input.is_empty());
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
        b"GET / HTTP/1.10\r\n\r\n",
        b"GET / HTTP/1\r\n\r\n",
        b"G\0T / HTTP/2.0\r\n\r\n",
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
fn a_broken_request_line_is_refused_before_the_head_ends() {
    // No blank line follows: the line alone decides, at once.
    for (bytes, why) in [
        (&b"\x00\x01garbage\r\n"[..], "invalid token in start line"),
        (b"GET /m\0 HTTP/1.1\r\n", "invalid token in start line"),
        (
            b"GET / HTTP/1.1 extra\r\nHost: a\r\n",
            "invalid line ending",
        ),
        (b"GET / HTTP/3\r\n", "invalid HTTP version"),
    ] {
        assert_eq!(
            error(bytes),
            DecodeError::BadRequest(why),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // A good line waits for the rest of the head.
    let outcome = decode_every_way(b"GET / HTTP/1.1\r\nHost: a\r\n", Limits::default());
    assert_eq!(outcome.results, Vec::new());
    let mut decoder = RequestDecoder::new(Limits::default());
    assert_eq!(
        decoder.decode(&mut b"GET / HTTP/1.1\r\n".to_vec()),
        Ok(Decoded::Incomplete)
    );
    assert!(decoder.head_in_progress());
}

#[test]
fn a_higher_http_1_minor_version_is_served_as_http_1_1() {
    for version in ["1.2", "1.9"] {
        let bytes = format!("GET /mcp HTTP/{version}\r\nHost: a\r\n\r\n");
        let request = one_request(bytes.as_bytes());
        assert_eq!(request.minor_version, 1, "HTTP/{version}");
        assert_eq!(request.target, "/mcp");
        assert!(request.keep_alive);
    }
}

#[test]
fn another_http_major_version_is_505() {
    for bytes in [
        &b"GET / HTTP/2.0\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n",
        b"GET / HTTP/3.0\r\nHost: a\r\n",
        b"GET / HTTP/0.9\r\n",
    ] {
        let err = error(bytes);
        assert_eq!(
            err,
            DecodeError::VersionNotSupported,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(err.status(), 505);
        assert_eq!(err.reason(), "HTTP Version Not Supported");
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
fn head_and_body_in_progress_transitions() {
    let mut decoder = RequestDecoder::new(Limits::default());
    assert!(!decoder.head_in_progress());
    let mut input = Vec::new();
    assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
    assert!(!decoder.head_in_progress());

    input.extend_from_slice(b"POST / HTTP/1.1\r\nContent-");
    assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
    assert!(decoder.head_in_progress());

    assert!(!decoder.body_in_progress(), "still in the head");
    input.extend_from_slice(b"Length: 3\r\n\r\nab");
    assert_eq!(decoder.decode(&mut input), Ok(Decoded::Incomplete));
    assert!(!decoder.head_in_progress(), "head done, body pending");
    assert!(decoder.body_in_progress(), "head done, body pending");

    input.extend_from_slice(b"cGET");
    assert!(matches!(
        decoder.decode(&mut input),
        Ok(Decoded::Request(_))
    ));
    assert!(!decoder.head_in_progress(), "between requests");
    assert!(!decoder.body_in_progress(), "between requests");
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
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".to_vec();
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
