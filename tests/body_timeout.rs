//! The request body timeout (`--body-timeout`, issue 11): a body that stops
//! arriving gets 408 and a close, whether it is shorter than its
//! `Content-Length` or a chunked body cut mid-chunk; a body that keeps moving,
//! however slowly, is not cut, because the timeout counts from the last bytes
//! that arrived (as nginx's `client_body_timeout`). Raw sockets against the
//! binary in front of the bundled example server, on 127.0.0.1.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    example_server, open_session, post_request, read_buffered_response, Mcphop, POST_HEADERS,
};

fn start() -> Mcphop {
    Mcphop::start(
        &["--body-timeout", "1s", "--head-timeout", "10s"],
        &[example_server().display().to_string()],
    )
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `head_and_part`, then waits for mcphop's answer: it must be 408
/// (JSON-RPC -32600, id null) with a close, between 0.9 and 3 s later.
fn assert_stalled_body_gets_408(port: u16, head_and_part: &[u8], case: &str) {
    let mut stream = connect(port);
    let started = Instant::now();
    stream.write_all(head_and_part).expect("write");
    let mut reader = BufReader::new(stream);
    let response = read_buffered_response(&mut reader);
    let elapsed = started.elapsed();
    assert_eq!(response.status, 408, "{case}: {response:?}");
    assert_eq!(response.header("connection"), Some("close"), "{case}");
    let body = response.json();
    assert_eq!(body["error"]["code"], -32600, "{case}: {body}");
    assert_eq!(body["id"], serde_json::Value::Null, "{case}: {body}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{case}: 408 after {elapsed:?}"
    );
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{case}: bytes after the 408"),
        Err(error) => assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset,
            "{case}: not closed"
        ),
    }
}

#[test]
fn a_body_shorter_than_its_content_length_gets_408() {
    let mcphop = start();
    let port = mcphop.port;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{POST_HEADERS}Content-Length: 100\r\n\r\n{{\"jsonrpc\":"
    );
    assert_stalled_body_gets_408(port, request.as_bytes(), "Content-Length 100, 11 sent");
}

#[test]
fn a_chunked_body_cut_mid_chunk_gets_408() {
    let mcphop = start();
    let port = mcphop.port;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{POST_HEADERS}Transfer-Encoding: chunked\r\n\r\n5\r\n{{\"jso"
    );
    assert_stalled_body_gets_408(port, request.as_bytes(), "chunked, cut mid-chunk");
}

/// A body trickled a byte every 400 ms for about 3 s (three times the
/// timeout) is served: each arrival renews the timeout.
#[test]
fn a_slow_body_that_keeps_moving_is_served() {
    let mcphop = start();
    let port = mcphop.port;
    let session = open_session(port);
    let body = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"message":"slow"}}}"#;
    let full = post_request(port, &format!("Mcp-Session-Id: {session}\r\n"), body);
    let split = full.len() - 8;
    let mut stream = connect(port);
    stream.write_all(&full[..split]).expect("write the head");
    for byte in &full[split..] {
        thread::sleep(Duration::from_millis(400));
        stream.write_all(std::slice::from_ref(byte)).expect("write");
    }
    let mut reader = BufReader::new(stream);
    let response = read_buffered_response(&mut reader);
    assert_eq!(response.status, 200, "{response:?}");
    let messages = response.sse_messages();
    let answer = messages.last().expect("an answer");
    assert_eq!(answer["id"], 5, "{messages:?}");
    assert_eq!(answer["result"]["content"][0]["text"], "slow", "{answer}");
}
