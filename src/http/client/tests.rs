//! Tests of the response decoder, each run over every split of its input.

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
fn a_status_under_100_is_malformed() {
    for bytes in [
        &b"HTTP/1.1 000 X\r\n\r\n"[..],
        b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 001\r\n\r\n",
    ] {
        assert_eq!(
            error(bytes),
            ResponseError::Malformed("status code under 100"),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // The edges of the range are statuses (100 an interim one, skipped).
    for (bytes, status) in [
        (&b"HTTP/1.1 999 X\r\nContent-Length: 0\r\n\r\n"[..], 999),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            200,
        ),
    ] {
        let outcome = complete(bytes);
        assert!(
            matches!(outcome.events.first(), Some(ResponseEvent::Head(head)) if head.status == status),
            "{:?}",
            outcome.events
        );
    }
}

#[test]
fn content_length_with_transfer_encoding() {
    assert_eq!(
        error(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
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
        error(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
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
