//! The hostile-input battery of issue 11, framing and messages: raw
//! sockets against the real binary in front of the bundled example server,
//! each case asserting the exact answer (status, JSON-RPC error code,
//! whether the connection is closed) that a careful proxy gives: broken
//! request lines, HTTP versions, header floods and oversized heads, bad and
//! conflicting Content-Length, Content-Length with Transfer-Encoding,
//! chunk-size overflow, invalid UTF-8 and non-object JSON, `id: null`, deep
//! nesting, huge and ill-typed ids, foreign and malformed session ids,
//! sessions kept apart, and pipelining.
//!
//! Slow and stalled peers are in `tests/hostile_slow.rs`; the shared
//! helpers in `tests/common/hostile.rs`.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::{BufReader, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hostile::*;
use serde_json::Value;

#[test]
fn broken_request_lines_are_400_and_closed() {
    let proxy = start(&[]);
    let port = proxy.port;
    let h = host(port);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not HTTP", b"HELLO\r\n\r\n".to_vec()),
        ("no version", b"GET /mcp\r\n\r\n".to_vec()),
        (
            "two spaces",
            format!("GET  /mcp HTTP/1.1\r\n{h}\r\n").into_bytes(),
        ),
        (
            "no target",
            format!("GET  HTTP/1.1\r\n{h}\r\n").into_bytes(),
        ),
        (
            "NUL in target",
            format!("GET /m\0cp HTTP/1.1\r\n{h}\r\n").into_bytes(),
        ),
        (
            "space in a field name",
            format!("GET /mcp HTTP/1.1\r\n{h}X Y: z\r\n\r\n").into_bytes(),
        ),
        (
            "field without colon",
            format!("GET /mcp HTTP/1.1\r\n{h}Xyz\r\n\r\n").into_bytes(),
        ),
        (
            "obs-fold",
            format!("GET /mcp HTTP/1.1\r\n{h}X: a\r\n b\r\n\r\n").into_bytes(),
        ),
        (
            "control byte in a value",
            format!("GET /mcp HTTP/1.1\r\n{h}X: a\x01b\r\n\r\n").into_bytes(),
        ),
    ];
    for (case, request) in cases {
        assert_refused_and_closed(port, &request, 400, case);
    }
    // A complete request line that is broken is refused at once, without
    // waiting for the rest of the head (nor for the 10 s head timeout).
    let started = Instant::now();
    let lines: [(&str, &[u8]); 3] = [
        ("garbage line alone", b"\x00\x01garbage\r\n"),
        ("NUL in target, line alone", b"GET /m\0 HTTP/1.1\r\n"),
        (
            "trailing token, one field",
            b"GET /mcp HTTP/1.1 x\r\nA: b\r\n",
        ),
    ];
    for (case, request) in lines {
        assert_refused_and_closed(port, request, 400, case);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn http_versions_other_than_1_0_and_1_1() {
    let proxy = start(&[]);
    let port = proxy.port;
    // HTTP/1.2 is compatible with HTTP/1.1 (RFC 9110 section 2.5): served,
    // and answered as HTTP/1.1.
    let mut request = post_request(port, "", INITIALIZE);
    let line_end = request.iter().position(|&b| b == b'\r').unwrap();
    request[line_end - 1] = b'2';
    assert!(request.starts_with(b"POST /mcp HTTP/1.2\r\n"));
    let mut stream = connect(port);
    stream.write_all(&request).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut status_line).unwrap();
    assert_eq!(status_line, "HTTP/1.1 200 OK\r\n");
    // Another major version is 505 and a close, as soon as its line is in.
    let started = Instant::now();
    let others: [(&str, &[u8]); 3] = [
        ("HTTP/2.0", b"GET /mcp HTTP/2.0\r\n\r\n"),
        ("the HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("HTTP/3.0, line alone", b"GET /mcp HTTP/3.0\r\n"),
    ];
    for (case, request) in others {
        assert_refused_and_closed(port, request, 505, case);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn header_floods_and_oversized_heads_are_431_and_closed() {
    let proxy = start(&[]);
    let port = proxy.port;
    let h = host(port);
    let fields = |count: usize| -> String { (0..count).map(|i| format!("X-{i}: v\r\n")).collect() };

    // 64 fields (Host and 63 more) is the limit: that head is read, and
    // the GET without Accept gets the front door's 406.
    let at_limit = format!("GET /mcp HTTP/1.1\r\n{h}{}\r\n", fields(63));
    let (responses, _) = answers(port, at_limit.as_bytes(), 1);
    assert_error(&responses[0], 406, -32600, &Value::Null, "64 fields");

    let started = Instant::now();
    let flood = format!("GET /mcp HTTP/1.1\r\n{h}{}\r\n", fields(64));
    assert_refused_and_closed(port, flood.as_bytes(), 431, "65 fields");
    let big_field = format!(
        "GET /mcp HTTP/1.1\r\n{h}X: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    assert_refused_and_closed(port, big_field.as_bytes(), 431, "a 17 KiB field");
    // Refused as soon as 16 KiB have come, not after the head timeout.
    let endless = format!("GET /mcp HTTP/1.1\r\n{h}X: {}", "a".repeat(20 * 1024));
    assert_refused_and_closed(port, endless.as_bytes(), 431, "a head that never ends");
    let blank_lines = "\r\n".repeat(20_000);
    assert_refused_and_closed(port, blank_lines.as_bytes(), 431, "20000 empty lines");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "431s took {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_and_conflicting_content_length() {
    let proxy = start(&["--max-body", "64KiB"]);
    let port = proxy.port;
    let cases: [(&str, &str, u16); 7] = [
        ("not a number", "Content-Length: 2x\r\n", 400),
        ("negative", "Content-Length: -2\r\n", 400),
        (
            "two different fields",
            "Content-Length: 2\r\nContent-Length: 3\r\n",
            400,
        ),
        ("a list of two values", "Content-Length: 2, 3\r\n", 400),
        ("empty", "Content-Length: \r\n", 400),
        // A number too large for any limit (and for a u64) is over the
        // limit, not malformed: 413, as for any other oversized body.
        (
            "23 digits",
            "Content-Length: 99999999999999999999999\r\n",
            413,
        ),
        ("over --max-body", "Content-Length: 70000\r\n", 413),
    ];
    for (case, framing, status) in cases {
        assert_refused_and_closed(port, &post_framed(port, framing, b"{}"), status, case);
    }
    // The same value twice is one length (RFC 9110 section 8.6).
    let twice = format!(
        "Content-Length: {0}\r\nContent-Length: {0}\r\n",
        INITIALIZE.len()
    );
    let (responses, _) = answers(port, &post_framed(port, &twice, INITIALIZE.as_bytes()), 1);
    assert_eq!(answer(&responses[0])["id"], 1);
}

#[test]
fn content_length_with_transfer_encoding_and_unknown_codings() {
    let proxy = start(&[]);
    let port = proxy.port;
    // Both framings: the smuggling shape, refused rather than guessed at.
    let both = post_framed(
        port,
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"0\r\n\r\n",
    );
    assert_refused_and_closed(port, &both, 400, "Content-Length and Transfer-Encoding");
    let reversed = post_framed(
        port,
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"0\r\n\r\n",
    );
    assert_refused_and_closed(
        port,
        &reversed,
        400,
        "Transfer-Encoding after Content-Length",
    );
    let gzip = post_framed(port, "Transfer-Encoding: gzip\r\n", b"");
    assert_refused_and_closed(port, &gzip, 501, "an unknown transfer coding");
    let twice = post_framed(
        port,
        "Transfer-Encoding: chunked, chunked\r\n",
        b"0\r\n\r\n",
    );
    assert_refused_and_closed(port, &twice, 400, "chunked twice");
    let http10 = format!(
        "POST /mcp HTTP/1.0\r\n{}{POST_HEADERS}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        host(port)
    );
    assert_refused_and_closed(port, http10.as_bytes(), 400, "chunked in HTTP/1.0");

    // A well-formed chunked body is read.
    let mut body = format!("{:x}\r\n", INITIALIZE.len()).into_bytes();
    body.extend_from_slice(INITIALIZE.as_bytes());
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let chunked = post_framed(port, "Transfer-Encoding: chunked\r\n", &body);
    let (responses, _) = answers(port, &chunked, 1);
    assert_eq!(answer(&responses[0])["id"], 1);
}

#[test]
fn chunk_size_overflow_and_broken_chunks() {
    let proxy = start(&["--max-body", "64KiB"]);
    let port = proxy.port;
    let chunked = |body: &[u8]| post_framed(port, "Transfer-Encoding: chunked\r\n", body);
    let mut endless = b"1;".to_vec();
    endless.extend(std::iter::repeat_n(b'e', 5000));
    let cases: [(&str, Vec<u8>, u16); 9] = [
        ("17 hex digits", b"10000000000000000\r\nx".to_vec(), 400),
        (
            "leading zeros past 16 digits",
            b"00000000000000001\r\nx".to_vec(),
            400,
        ),
        ("the largest u64", b"ffffffffffffffff\r\nx".to_vec(), 413),
        ("one chunk over --max-body", b"10001\r\nx".to_vec(), 413),
        ("not hex", b"zz\r\nx".to_vec(), 400),
        ("negative", b"-1\r\nx".to_vec(), 400),
        ("bare LF line ends", b"2\n{}\n0\n\n".to_vec(), 400),
        (
            "no CRLF after the data",
            b"2\r\n{}XX0\r\n\r\n".to_vec(),
            400,
        ),
        ("an endless chunk extension", endless, 400),
    ];
    for (case, body, status) in cases {
        assert_refused_and_closed(port, &chunked(&body), status, case);
    }
    // Chunks that add up past the limit are refused at the size line that
    // crosses it, before their data arrives.
    let mut many = Vec::new();
    for _ in 0..2 {
        many.extend_from_slice(format!("{:x}\r\n", 40 * 1024).as_bytes());
        many.extend(std::iter::repeat_n(b' ', 40 * 1024));
        many.extend_from_slice(b"\r\n");
    }
    assert_refused_and_closed(
        port,
        &chunked(&many),
        413,
        "chunks adding up past the limit",
    );
}

#[test]
fn invalid_utf8_and_bodies_that_are_not_one_object() {
    let proxy = start(&[]);
    let port = proxy.port;
    let session = open_session(port);
    let s = session_header(&session);
    let cases: [(&str, &[u8], i64); 9] = [
        (
            "invalid UTF-8 in a string",
            b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/list\",\"x\":\"\xff\xfe\"}",
            -32700,
        ),
        (
            "a truncated UTF-8 sequence",
            b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"m\",\"x\":\"\xc3\"}",
            -32700,
        ),
        ("an empty body", b"", -32700),
        (
            "trailing bytes",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} x",
            -32700,
        ),
        ("a number", b"42", -32600),
        ("a string", b"\"x\"", -32600),
        ("null", b"null", -32600),
        ("an empty batch", b"[]", -32600),
        ("a batch of a number", b"[1]", -32600),
    ];
    // Each on one keep-alive connection: a bad body is the request's
    // fault, not the connection's, so the next request is still served.
    for (case, body, code) in cases {
        let mut request = post_bytes(port, &s, body);
        request.extend_from_slice(&post_request(port, &s, &tools_call(3, "still here")));
        let (responses, _) = answers(port, &request, 2);
        assert_error(&responses[0], 400, code, &Value::Null, case);
        assert_eq!(responses[0].header("connection"), None, "{case}");
        assert_eq!(echoed(&responses[1]), "still here", "{case}");
    }
    // Invalid UTF-8 before any session exists mints none.
    let init = post_bytes(
        port,
        "",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"x\":\"\xff\"}}",
    );
    let (responses, _) = answers(port, &init, 1);
    assert_error(
        &responses[0],
        400,
        -32700,
        &Value::Null,
        "initialize with invalid UTF-8",
    );
    assert_eq!(responses[0].header("mcp-session-id"), None);
}

#[test]
fn null_ids_and_deep_nesting() {
    // A short request timeout: the requests the upstream cannot read get
    // mcphop's timeout answer in a second rather than five minutes.
    let proxy = start(&["--request-timeout", "1s"]);
    let port = proxy.port;
    let session = open_session(port);
    let s = session_header(&session);
    let exchange = |body: &str| raw_exchange(port, &post_request(port, &s, body));

    let null_id = exchange(r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#);
    assert_error(
        &null_id,
        400,
        -32600,
        &Value::Null,
        "a request with id null",
    );
    let init = raw_exchange(
        port,
        &post_request(
            port,
            "",
            r#"{"jsonrpc":"2.0","id":null,"method":"initialize","params":{}}"#,
        ),
    );
    assert_error(&init, 400, -32600, &Value::Null, "initialize with id null");
    assert_eq!(init.header("mcp-session-id"), None);
    // Nesting within the JSON parser's depth limit (128) is passed on...
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let within = exchange(&format!(
        r#"{{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{{"x":{}}}}}"#,
        nested(120)
    ));
    assert_eq!(answer(&within)["id"], 8);
    // ... and so is deeper nesting, and a number beyond f64, inside the
    // payload: the message is well-formed JSON whose routed fields mcphop
    // reads without building the payload, so it forwards the bytes as
    // received and the upstream answers. The example server's own parser
    // stops at depth 128 and at f64's range, so its answer is a parse error
    // with id null (JSON-RPC's answer when the id cannot be read), relayed
    // on the request's stream; the request itself then gets mcphop's one
    // timeout answer under its id.
    let payloads = [
        ("depth 130", nested(130)),
        ("depth 100000", nested(100_000)),
        ("a number beyond f64", "1e400".to_string()),
    ];
    for (case, payload) in payloads {
        let forwarded = exchange(&format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{{"x":{payload}}}}}"#
        ));
        assert_eq!(forwarded.status, 200, "{case}: {forwarded:?}");
        let messages = forwarded.sse_messages();
        assert_eq!(messages.len(), 2, "{case}: {messages:?}");
        assert_eq!(messages[0]["error"]["code"], -32700, "{case}");
        assert_eq!(messages[0]["id"], Value::Null, "{case}");
        assert_eq!(messages[1]["error"]["code"], -32001, "{case}");
        assert_eq!(messages[1]["id"], 9, "{case}");
    }
    // The proxy is still serving.
    let after = exchange(&tools_call(10, "alive"));
    assert_eq!(echoed(&after), "alive");
}

#[test]
fn huge_ids_come_back_exactly() {
    let proxy = start(&[]);
    let port = proxy.port;
    let session = open_session(port);
    let s = session_header(&session);
    // The extremes of 64-bit integers, and a 10 KiB string id, are routed
    // and answered under the very id the client sent.
    for id in ["18446744073709551615", "-9223372036854775808", "0"] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        let response = raw_exchange(port, &post_request(port, &s, &body));
        assert_eq!(response.status, 200, "id {id}");
        assert!(
            response.body.contains(&format!(r#""id":{id},"#)),
            "id {id} did not come back as sent: {}",
            response.body
        );
    }
    let long = "i".repeat(10 * 1024);
    let body = format!(r#"{{"jsonrpc":"2.0","id":"{long}","method":"ping"}}"#);
    let response = raw_exchange(port, &post_request(port, &s, &body));
    assert_eq!(answer(&response)["id"], long.as_str());
}

#[test]
fn ids_that_are_no_string_or_64_bit_integer_are_refused_with_id_null() {
    let proxy = start(&[]);
    let port = proxy.port;
    let session = open_session(port);
    let s = session_header(&session);
    // JSON-RPC: an id "must be a string or an integer". A number that is no
    // 64-bit integer would come back in another spelling (or not at all),
    // and a wrong type is no id, so neither is echoed: 400, -32600, id null,
    // on a connection that stays open for the next request.
    let ids = [
        "123456789012345678901234567890123",
        "18446744073709551616",
        "-9223372036854775809",
        "1.5",
        "1e2",
        "1e400",
        "true",
        r#"{"a":1}"#,
        "[1]",
    ];
    for id in ids {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        let mut request = post_request(port, &s, &body);
        request.extend_from_slice(&post_request(port, &s, &tools_call(3, "still here")));
        let (responses, _) = answers(port, &request, 2);
        assert_error(
            &responses[0],
            400,
            -32600,
            &Value::Null,
            &format!("id {id}"),
        );
        assert_eq!(responses[0].header("connection"), None, "id {id}");
        assert_eq!(echoed(&responses[1]), "still here", "id {id}");
        // Nor does such an initialize mint a session.
        let init = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{}}}}"#);
        let response = raw_exchange(port, &post_request(port, "", &init));
        assert_error(
            &response,
            400,
            -32600,
            &Value::Null,
            &format!("initialize id {id}"),
        );
        assert_eq!(response.header("mcp-session-id"), None, "id {id}");
    }
}

#[test]
fn foreign_and_malformed_session_ids() {
    let proxy = start(&[]);
    let port = proxy.port;
    let session = open_session(port);
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let not_found = |extra: &str, case: &str| {
        let response = raw_exchange(port, &post_request(port, extra, list));
        assert_error(&response, 404, -32000, &Value::Null, case);
    };
    not_found(&session_header(&"0".repeat(32)), "an unknown id");
    not_found(&session_header("a"), "one character");
    not_found(
        &session_header(&session[..31]),
        "a live id less its last character",
    );
    not_found(
        &session_header(&format!("{session}a")),
        "a live id and one more",
    );
    not_found(&session_header(&"z".repeat(4096)), "4096 characters");
    not_found(
        &session_header(&session.to_uppercase()),
        "a live id in upper case",
    );
    let other = open_session(port);
    not_found(
        &session_header(&format!("{session}, {other}")),
        "two live ids as a list",
    );
    // Two fields naming different sessions: which one the request reaches
    // must not depend on which is read, so neither is: 400, as for two Hosts.
    let two_fields = format!("{}{}", session_header(&session), session_header(&other));
    let response = raw_exchange(port, &post_request(port, &two_fields, list));
    assert_error(
        &response,
        400,
        -32600,
        &Value::Null,
        "two live ids in two fields",
    );
    let high = post_bytes(port, "Mcp-Session-Id: \u{ff}\u{fe}abc\r\n", list.as_bytes());
    let (responses, _) = answers(port, &high, 1);
    assert_error(&responses[0], 404, -32000, &Value::Null, "non-ASCII bytes");

    // GET and DELETE with an unknown id are 404 too.
    let get = format!(
        "GET /mcp HTTP/1.1\r\n{}Accept: text/event-stream\r\n{}\r\n",
        host(port),
        session_header(&"f".repeat(32))
    );
    assert_error(
        &raw_exchange(port, get.as_bytes()),
        404,
        -32000,
        &Value::Null,
        "GET",
    );
    let delete = format!(
        "DELETE /mcp HTTP/1.1\r\n{}Mcp-Session-Id: \u{ff}\r\n\r\n",
        host(port)
    );
    assert_error(
        &raw_exchange(port, delete.as_bytes()),
        404,
        -32000,
        &Value::Null,
        "DELETE",
    );

    // An empty id is a missing one: 400, with the request's id.
    let empty = raw_exchange(port, &post_request(port, "Mcp-Session-Id: \r\n", list));
    assert_error(&empty, 400, -32600, &serde_json::json!(2), "an empty id");
    // A control byte cannot be in a field value at all.
    assert_refused_and_closed(
        port,
        &post_bytes(port, "Mcp-Session-Id: ab\x01cd\r\n", list.as_bytes()),
        400,
        "a control byte",
    );
    // Whitespace around a field value is not part of it (RFC 9110 5.5).
    let padded = raw_exchange(
        port,
        &post_request(port, &format!("Mcp-Session-Id:   {session}\t \r\n"), list),
    );
    assert_eq!(answer(&padded)["id"], 2);
    // And the session is unharmed by all of it.
    let after = raw_exchange(
        port,
        &post_request(port, &session_header(&session), &tools_call(3, "ok")),
    );
    assert_eq!(echoed(&after), "ok");
}

#[test]
fn one_session_cannot_touch_another_sessions_requests() {
    let proxy = start(&[]);
    let port = proxy.port;
    let first = open_session(port);
    let second = open_session(port);
    // A slow request in the first session, id 5 ...
    let slow = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"progress","arguments":{"steps":3,"delay_ms":300},"_meta":{"progressToken":"p5"}}}"#;
    let mut stream = connect(port);
    stream
        .write_all(&post_request(port, &session_header(&first), slow))
        .unwrap();
    thread::sleep(Duration::from_millis(200));
    // ... which the second session tries to cancel, and answer, by its id,
    // while it makes a request of its own with the same id.
    let s2 = session_header(&second);
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5,"reason":"not yours"}}"#;
    assert_eq!(
        raw_exchange(port, &post_request(port, &s2, cancel)).status,
        202
    );
    let forged =
        r#"{"jsonrpc":"2.0","id":5,"result":{"content":[{"type":"text","text":"forged"}]}}"#;
    assert_eq!(
        raw_exchange(port, &post_request(port, &s2, forged)).status,
        202
    );
    let own = raw_exchange(port, &post_request(port, &s2, &tools_call(5, "second")));
    assert_eq!(echoed(&own), "second");
    // The first session's request runs to its own end.
    let response = read_response(&mut stream);
    let messages = response.sse_messages();
    let result = messages.last().expect("an answer");
    assert_eq!(result["id"], 5);
    assert_eq!(result["result"]["content"][0]["text"], "done after 3 steps");
    let progress = messages.iter().filter(|m| m.get("id").is_none()).count();
    assert_eq!(progress, 3, "{messages:?}");
}

#[test]
fn pipelined_requests_are_each_answered_in_order() {
    let proxy = start(&[]);
    let port = proxy.port;
    let session = open_session(port);
    let s = session_header(&session);

    let mut batch = Vec::new();
    batch.extend(post_request(port, &s, &tools_call(11, "one")));
    batch.extend(post_request(port, &s, &tools_call(12, "two")));
    batch.extend(post_request(
        port,
        &s,
        r#"{"jsonrpc":"2.0","method":"notifications/whatever"}"#,
    ));
    batch.extend(format!("GET /mcp HTTP/1.1\r\n{}\r\n", host(port)).into_bytes());
    batch.extend(post_request(port, &s, &tools_call(13, "three")));
    let (responses, _) = answers(port, &batch, 5);
    assert_eq!(echoed(&responses[0]), "one");
    assert_eq!(answer(&responses[0])["id"], 11);
    assert_eq!(echoed(&responses[1]), "two");
    assert_eq!(responses[2].status, 202);
    assert_error(
        &responses[3],
        406,
        -32600,
        &Value::Null,
        "pipelined GET without Accept",
    );
    assert_eq!(echoed(&responses[4]), "three");

    // A broken request after a good one: the good one is answered, then
    // the 400 and the close.
    let mut broken = post_request(port, &s, &tools_call(21, "first"));
    broken.extend_from_slice(b"BROKEN\r\n\r\n");
    broken.extend(post_request(port, &s, &tools_call(22, "never")));
    let (responses, mut reader) = answers(port, &broken, 2);
    assert_eq!(echoed(&responses[0]), "first");
    assert_error(
        &responses[1],
        400,
        -32600,
        &Value::Null,
        "pipelined garbage",
    );
    assert_eq!(responses[1].header("connection"), Some("close"));
    assert_closed(&mut reader, "pipelined garbage");

    // Connection: close ends the exchange; what was pipelined after it is
    // not read.
    let mut closing = post_request(
        port,
        &format!("{s}Connection: close\r\n"),
        &tools_call(31, "last"),
    );
    closing.extend(post_request(port, &s, &tools_call(32, "never")));
    let (responses, mut reader) = answers(port, &closing, 1);
    assert_eq!(echoed(&responses[0]), "last");
    assert_closed(&mut reader, "after Connection: close");
}
