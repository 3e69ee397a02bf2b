//! Helpers shared by the hostile-input tests (`tests/hostile_*.rs`): a
//! proxy in front of the example server, raw connections, requests built
//! byte by byte, and assertions on the exact answer and on the close.

#![allow(dead_code)]

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

pub fn start(options: &[&str]) -> Mcphop {
    Mcphop::start(options, &[example_server().display().to_string()])
}

pub fn session_header(session: &str) -> String {
    format!("Mcp-Session-Id: {session}\r\n")
}

pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Writes `bytes` on a fresh connection and reads `count` responses.
pub fn answers(port: u16, bytes: &[u8], count: usize) -> (Vec<RawResponse>, BufReader<TcpStream>) {
    let mut stream = connect(port);
    stream.write_all(bytes).expect("write");
    let mut reader = BufReader::new(stream);
    let responses = (0..count)
        .map(|_| read_buffered_response(&mut reader))
        .collect();
    (responses, reader)
}

/// After its answer, mcphop closes the connection (EOF, not a hang).
pub fn assert_closed(reader: &mut BufReader<TcpStream>, case: &str) {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        // A reset after the answer is a close too (mcphop may close with
        // unread input, which makes the kernel send RST).
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(_) => assert!(
            rest.is_empty(),
            "{case}: bytes after the answer: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(err) => panic!("{case}: the connection was not closed ({err})"),
    }
}

/// A JSON-RPC error answer: exact status, error code and id.
pub fn assert_error(response: &RawResponse, status: u16, code: i64, id: &Value, case: &str) {
    assert_eq!(response.status, status, "{case}: {response:?}");
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{case}: {body}");
    assert_eq!(&body["id"], id, "{case}: {body}");
    assert_eq!(body["jsonrpc"], "2.0", "{case}: {body}");
}

/// Sends one request that must be refused with `status` (JSON-RPC -32600,
/// id null) and a close, as every framing error is.
pub fn assert_refused_and_closed(port: u16, request: &[u8], status: u16, case: &str) {
    let (responses, mut reader) = answers(port, request, 1);
    assert_error(&responses[0], status, -32600, &Value::Null, case);
    assert_eq!(
        responses[0].header("connection"),
        Some("close"),
        "{case}: {:?}",
        responses[0]
    );
    assert_closed(&mut reader, case);
}

pub fn host(port: u16) -> String {
    format!("Host: 127.0.0.1:{port}\r\n")
}

/// A POST with the usual headers, `extra` header lines, and a framing of
/// the caller's (no Content-Length is added).
pub fn post_framed(port: u16, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST /mcp HTTP/1.1\r\n{}{POST_HEADERS}{extra}\r\n",
        host(port)
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A POST whose body may hold any bytes (post_request takes a &str).
pub fn post_bytes(port: u16, extra: &str, body: &[u8]) -> Vec<u8> {
    post_framed(
        port,
        &format!("{extra}Content-Length: {}\r\n", body.len()),
        body,
    )
}

pub fn tools_call(id: u64, message: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{message}"}}}}}}"#
    )
}

/// The single JSON-RPC message of a request's SSE answer.
pub fn answer(response: &RawResponse) -> Value {
    assert_eq!(response.status, 200, "{response:?}");
    let messages = response.sse_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    messages.into_iter().next().unwrap()
}

pub fn echoed(response: &RawResponse) -> String {
    answer(response)["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
