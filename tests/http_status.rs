//! Every status code of the Streamable HTTP front door, with raw HTTP against
//! the real binary in front of the bundled example server.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn start(options: &[&str]) -> Mcphop {
    Mcphop::start(options, &[example_server().display().to_string()])
}

fn session_header(session: &str) -> String {
    format!("Mcp-Session-Id: {session}\r\n")
}

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

#[test]
fn initialize_mints_a_session_and_requests_stream_their_answers() {
    let proxy = start(&[]);
    let session = open_session(proxy.port);
    assert_eq!(session.len(), 32);
    assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    let response = raw_exchange(
        proxy.port,
        &post_request(proxy.port, &session_header(&session), TOOLS_LIST),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let messages = response.sse_messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], 2);
    assert_eq!(messages[0]["result"]["tools"].as_array().unwrap().len(), 6);
}

#[test]
fn missing_session_id_is_400() {
    let proxy = start(&[]);
    let response = raw_exchange(proxy.port, &post_request(proxy.port, "", TOOLS_LIST));
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["code"], -32600);
    let get = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n\r\n",
        proxy.port
    );
    assert_eq!(raw_exchange(proxy.port, get.as_bytes()).status, 400);
    let delete = format!(
        "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        proxy.port
    );
    assert_eq!(raw_exchange(proxy.port, delete.as_bytes()).status, 400);
}

#[test]
fn unknown_and_ended_sessions_are_404() {
    let proxy = start(&[]);
    let unknown = raw_exchange(
        proxy.port,
        &post_request(proxy.port, &session_header(&"0".repeat(32)), TOOLS_LIST),
    );
    assert_eq!(unknown.status, 404);

    let session = open_session(proxy.port);
    let delete = format!(
        "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}\r\n",
        proxy.port,
        session_header(&session)
    );
    assert_eq!(raw_exchange(proxy.port, delete.as_bytes()).status, 200);
    let after = raw_exchange(
        proxy.port,
        &post_request(proxy.port, &session_header(&session), TOOLS_LIST),
    );
    assert_eq!(after.status, 404);
    assert_eq!(raw_exchange(proxy.port, delete.as_bytes()).status, 404);
    let get = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n{}\r\n",
        proxy.port,
        session_header(&session)
    );
    assert_eq!(raw_exchange(proxy.port, get.as_bytes()).status, 404);
}

#[test]
fn other_methods_are_405() {
    let proxy = start(&[]);
    for method in ["PUT", "PATCH", "HEAD"] {
        let request = format!(
            "{method} /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            proxy.port
        );
        let response = raw_exchange(proxy.port, request.as_bytes());
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET, POST, DELETE"));
    }
}

#[test]
fn wrong_accept_is_406() {
    let proxy = start(&[]);
    let body = INITIALIZE;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        proxy.port,
        body.len()
    );
    assert_eq!(raw_exchange(proxy.port, request.as_bytes()).status, 406);
    let session = open_session(proxy.port);
    let get = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\n{}\r\n",
        proxy.port,
        session_header(&session)
    );
    assert_eq!(raw_exchange(proxy.port, get.as_bytes()).status, 406);
}

#[test]
fn wrong_content_type_is_415() {
    let proxy = start(&[]);
    let body = INITIALIZE;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: application/json, text/event-stream\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        proxy.port,
        body.len()
    );
    assert_eq!(raw_exchange(proxy.port, request.as_bytes()).status, 415);
}

#[test]
fn unsupported_protocol_version_is_400() {
    let proxy = start(&[]);
    let session = open_session(proxy.port);
    let headers = format!(
        "{}MCP-Protocol-Version: 1999-01-01\r\n",
        session_header(&session)
    );
    let response = raw_exchange(proxy.port, &post_request(proxy.port, &headers, TOOLS_LIST));
    assert_eq!(response.status, 400);
    assert!(response.body.contains("MCP-Protocol-Version"));
    // A supported one passes.
    let headers = format!(
        "{}MCP-Protocol-Version: 2025-06-18\r\n",
        session_header(&session)
    );
    let response = raw_exchange(proxy.port, &post_request(proxy.port, &headers, TOOLS_LIST));
    assert_eq!(response.status, 200);
}

#[test]
fn bodies_that_are_not_json_or_not_json_rpc_are_400_with_codes() {
    let proxy = start(&[]);
    let session = open_session(proxy.port);
    for (body, code) in [
        ("{not json", -32700),
        ("", -32700),
        (r#"{"jsonrpc":"2.0"}"#, -32600),
        (r#"{"id":1,"method":"tools/list"}"#, -32600),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
            -32600,
        ),
        ("42", -32600),
    ] {
        let response = raw_exchange(
            proxy.port,
            &post_request(proxy.port, &session_header(&session), body),
        );
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.json()["error"]["code"], code, "{body}");
    }
}

#[test]
fn foreign_origin_and_host_are_403() {
    let proxy = start(&[]);
    let evil_origin = raw_exchange(
        proxy.port,
        &post_request(proxy.port, "Origin: http://evil.example\r\n", INITIALIZE),
    );
    assert_eq!(evil_origin.status, 403);
    let good_origin = raw_exchange(
        proxy.port,
        &post_request(
            proxy.port,
            &format!("Origin: http://localhost:{}\r\n", proxy.port),
            INITIALIZE,
        ),
    );
    assert_eq!(good_origin.status, 200);
    let body = INITIALIZE;
    let evil_host = format!(
        "POST /mcp HTTP/1.1\r\nHost: evil.example:{}\r\n{POST_HEADERS}Content-Length: {}\r\n\r\n{body}",
        proxy.port,
        body.len()
    );
    assert_eq!(raw_exchange(proxy.port, evil_host.as_bytes()).status, 403);
    // The allow-list can be widened by the operator.
    let widened = start(&["--allowed-origin", "https://app.example"]);
    let allowed = raw_exchange(
        widened.port,
        &post_request(widened.port, "Origin: https://app.example\r\n", INITIALIZE),
    );
    assert_eq!(allowed.status, 200);
}

#[test]
fn wrong_path_is_404() {
    let proxy = start(&[]);
    let body = INITIALIZE;
    let request = format!(
        "POST /other HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{POST_HEADERS}Content-Length: {}\r\n\r\n{body}",
        proxy.port,
        body.len()
    );
    assert_eq!(raw_exchange(proxy.port, request.as_bytes()).status, 404);
}

#[test]
fn oversized_head_is_431_and_oversized_body_is_413() {
    let proxy = start(&["--max-body", "1KiB"]);
    let huge_header = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Filler: {}\r\n\r\n",
        proxy.port,
        "a".repeat(17 * 1024)
    );
    assert_eq!(raw_exchange(proxy.port, huge_header.as_bytes()).status, 431);
    let big_body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"pad":"{}"}}}}"#,
        "x".repeat(2048)
    );
    let response = raw_exchange(proxy.port, &post_request(proxy.port, "", &big_body));
    assert_eq!(response.status, 413);
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn a_slow_head_gets_408_and_a_close() {
    let proxy = start(&["--head-timeout", "300ms"]);
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let response = read_response(&mut stream);
    assert_eq!(response.status, 408);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn over_max_sessions_is_503_with_retry_after() {
    let proxy = start(&["--max-sessions", "2"]);
    open_session(proxy.port);
    open_session(proxy.port);
    let response = raw_exchange(proxy.port, &post_request(proxy.port, "", INITIALIZE));
    assert_eq!(response.status, 503);
    assert!(response.header("retry-after").is_some());
}

#[test]
fn stateless_era_requests_get_a_plain_400_and_mint_no_session() {
    let proxy = start(&[]);
    let discover = r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let response = raw_exchange(
        proxy.port,
        &post_request(
            proxy.port,
            "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: server/discover\r\n",
            discover,
        ),
    );
    assert_eq!(response.status, 400);
    assert!(response.header("mcp-session-id").is_none());
    let error = response.json();
    assert_ne!(error["error"]["code"], -32022);
    assert_eq!(error["id"], 1);
    // No child was spawned for the probe.
    std::thread::sleep(Duration::from_millis(200));
    assert!(children_of(proxy.pid()).is_empty());
    assert!(!proxy.log_text().contains("started: pid"));
}

#[test]
fn notifications_get_202_and_keep_alive_serves_requests_in_turn() {
    let proxy = start(&[]);
    let session = open_session(proxy.port);
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Three requests pipelined on one connection: each answered in turn.
    let mut batch = Vec::new();
    batch.extend(post_request(
        proxy.port,
        &session_header(&session),
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x","progress":1}}"#,
    ));
    for id in [10, 11] {
        batch.extend(post_request(
            proxy.port,
            &session_header(&session),
            &format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"m{id}"}}}}}}"#
            ),
        ));
    }
    stream.write_all(&batch).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    assert_eq!(read_buffered_response(&mut reader).status, 202);
    for id in [10, 11] {
        let response = read_buffered_response(&mut reader);
        assert_eq!(response.status, 200);
        let messages = response.sse_messages();
        assert_eq!(messages.last().unwrap()["id"], id);
        assert_eq!(
            messages.last().unwrap()["result"]["content"][0]["text"],
            format!("m{id}")
        );
    }
}

#[test]
fn string_and_number_ids_are_routed_apart() {
    let proxy = start(&[]);
    let session = open_session(proxy.port);
    for id in [r#""7""#, "7"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"x"}}}}}}"#
        );
        let response = raw_exchange(
            proxy.port,
            &post_request(proxy.port, &session_header(&session), &body),
        );
        let messages = response.sse_messages();
        let expected: serde_json::Value = serde_json::from_str(id).unwrap();
        assert_eq!(messages.last().unwrap()["id"], expected);
    }
}
