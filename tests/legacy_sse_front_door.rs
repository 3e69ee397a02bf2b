//! mcphop's legacy HTTP+SSE front door (`GET /sse`, `POST
//! /message?sessionId=…`) with a real legacy client, the Python SDK 1.x's
//! `sse_client`, in front of every upstream kind: the bundled stdio example
//! server, Streamable HTTP servers (the Python SDK server and
//! server-everything) and legacy SSE servers (the same two in `sse` mode).
//! Each runs initialize, tools/call, progress and a sampling round trip.
//! Then the front door's own rules over raw sockets: 50 concurrent sessions
//! each with their own child, unknown sessions, a dropped stream ending its
//! session and child, heartbeats, and the Host/Origin guard.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process
//! started here is killed by a guard when the test ends, pass or fail.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::time::Duration;

use common::{
    assert_progress_then_result, eventually, example_server, post_message, raw_exchange,
    LegacyStream, Mcphop,
};
use serde_json::Value;
use upstream::{run_sse_client, Kind, Server, Transport};

/// The upstream behind mcphop.
#[derive(Clone, Copy, Debug)]
enum Up {
    Stdio,
    Http(Kind),
    Sse(Kind),
}

/// mcphop in front of `up`, and the upstream server it needs (kept alive).
fn start(up: Up, options: &[&str]) -> (Mcphop, Option<Server>) {
    let options: Vec<String> = options.iter().map(|option| option.to_string()).collect();
    let (mut args, server) = match up {
        Up::Stdio => (Vec::new(), None),
        Up::Http(kind) => {
            let server = Server::start(kind);
            (vec!["--upstream".to_string(), server.url()], Some(server))
        }
        Up::Sse(kind) => {
            let server = Server::start_speaking(kind, Transport::LegacySse);
            (
                vec!["--upstream-sse".to_string(), server.url()],
                Some(server),
            )
        }
    };
    args.extend(options);
    if matches!(up, Up::Stdio) {
        args.push("--".to_string());
        args.push(example_server().display().to_string());
    }
    (Mcphop::start_args(&args), server)
}

fn kind_of(up: Up) -> Option<Kind> {
    match up {
        Up::Stdio => None,
        Up::Http(kind) | Up::Sse(kind) => Some(kind),
    }
}

fn basic(up: Up) {
    let (mcphop, _server) = start(up, &[]);
    let result = run_sse_client(&mcphop, "basic", &["--echo-tool", "echo"]);
    let context = format!("{up:?}: {result}");
    let (server, echo) = match kind_of(up) {
        None => ("mcphop-example", "hello from v1"),
        Some(Kind::Py) => ("mcphop-py-http", "hello from v1"),
        Some(Kind::Everything) => ("mcp-servers/everything", "Echo: hello from v1"),
    };
    assert_eq!(result["server"], server, "{context}");
    assert_eq!(result["echo"], echo, "{context}");
    // The client's stream closed at its end: its session ended with it.
    assert!(
        eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("the client closed its legacy SSE stream")),
        "{}",
        mcphop.log_text()
    );
}

fn progress(up: Up) {
    let (tool, args) = match kind_of(up) {
        None => ("progress", r#"{"steps":3,"delay_ms":20}"#),
        Some(Kind::Py) => ("progress", r#"{"steps":3,"delay_ms":50}"#),
        Some(Kind::Everything) => (
            "trigger-long-running-operation",
            r#"{"duration":1,"steps":3}"#,
        ),
    };
    let (mcphop, _server) = start(up, &[]);
    let result = run_sse_client(&mcphop, "progress", &["--tool", tool, "--args", args]);
    assert_progress_then_result(&result, &format!("{up:?}: {result}"));
}

fn sampling(up: Up) {
    let tool = match kind_of(up) {
        None | Some(Kind::Py) => "sample",
        Some(Kind::Everything) => "trigger-sampling-request",
    };
    let (mcphop, _server) = start(up, &[]);
    let result = run_sse_client(
        &mcphop,
        "sampling",
        &["--tool", tool, "--args", r#"{"prompt":"hi"}"#],
    );
    let context = format!("{up:?}: {result}");
    assert_eq!(result["sampling_requests"], 1, "{context}");
    let text = result["result_text"].as_str().unwrap_or_default();
    assert!(text.contains("canned-sample-reply"), "{context}");
}

macro_rules! every_upstream {
    ($($name:ident: $up:expr,)*) => {
        mod through_each_upstream {
            use super::*;
            $(
                mod $name {
                    use super::*;
                    #[test]
                    fn basic() {
                        super::basic($up);
                    }
                    #[test]
                    fn progress() {
                        super::progress($up);
                    }
                    #[test]
                    fn sampling() {
                        super::sampling($up);
                    }
                }
            )*
        }
    };
}

every_upstream! {
    stdio_example: Up::Stdio,
    http_python: Up::Http(Kind::Py),
    http_server_everything: Up::Http(Kind::Everything),
    sse_python: Up::Sse(Kind::Py),
    sse_server_everything: Up::Sse(Kind::Everything),
}

/// 50 concurrent legacy sessions each get their own child; the Python
/// client checks each session's answers are its own.
#[test]
fn fifty_concurrent_sessions_each_have_their_own_child() {
    let (mcphop, _server) = start(Up::Stdio, &[]);
    let result = run_sse_client(&mcphop, "concurrent", &["--sessions", "50"]);
    let pids: BTreeSet<u64> = result["pids"]
        .as_array()
        .unwrap_or_else(|| panic!("no pids: {result}"))
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(pids.len(), 50, "{result}");
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
const PID_CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pid","arguments":{}}}"#;

/// A dropped stream ends its session and its child; the session's endpoint
/// then answers 404, as does one that never existed.
#[test]
fn a_dropped_stream_ends_the_session_and_its_child() {
    let (mcphop, _server) = start(Up::Stdio, &[]);
    let port = mcphop.port;
    let mut stream = LegacyStream::open(port, "");
    assert!(stream.endpoint.starts_with("/message?sessionId="));
    let accepted = post_message(port, &stream.endpoint, "", INITIALIZE);
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let answer = stream.next_message();
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(
        answer["result"]["protocolVersion"], "2024-11-05",
        "{answer}"
    );
    assert_eq!(
        post_message(port, &stream.endpoint, "", PID_CALL).status,
        202
    );
    let answer = stream.next_message();
    let pid: i32 = answer["result"]["content"][0]["text"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("no pid: {answer}"));
    let endpoint = stream.endpoint.clone();
    drop(stream);
    let gone = eventually(Duration::from_secs(10), || unsafe {
        libc::kill(pid, 0) != 0
    });
    assert!(
        gone,
        "child {pid} outlived its session:\n{}",
        mcphop.log_text()
    );
    assert_eq!(post_message(port, &endpoint, "", PID_CALL).status, 404);
    let unknown = post_message(port, "/message?sessionId=no-such-session", "", PID_CALL);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let missing = post_message(port, "/message", "", PID_CALL);
    assert_eq!(missing.status, 400, "{missing:?}");
    // A Streamable HTTP session's id is not a legacy session's.
    let streamable = upstream::raw::raw_session(&mcphop);
    let crossed = post_message(
        port,
        &format!("/message?sessionId={streamable}"),
        "",
        PID_CALL,
    );
    assert_eq!(crossed.status, 404, "{crossed:?}");
}

/// Bad JSON is refused with 400 and a parse error; the session goes on.
#[test]
fn a_malformed_message_gets_400_and_the_session_goes_on() {
    let (mcphop, _server) = start(Up::Stdio, &[]);
    let port = mcphop.port;
    let mut stream = LegacyStream::open(port, "");
    let refused = post_message(port, &stream.endpoint, "", "{not json");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("-32700"), "{refused:?}");
    assert_eq!(
        post_message(port, &stream.endpoint, "", INITIALIZE).status,
        202
    );
    assert_eq!(stream.next_message()["id"], 1);
}

/// A silent legacy stream carries keep-alive comments.
#[test]
fn a_silent_stream_gets_heartbeats() {
    let (mcphop, _server) = start(Up::Stdio, &["--sse-keepalive", "200ms"]);
    let mut stream = LegacyStream::open(mcphop.port, "");
    let mut line = String::new();
    let mut heard = false;
    for _ in 0..20 {
        line.clear();
        if stream.reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.starts_with(": keepalive") {
            heard = true;
            break;
        }
    }
    assert!(heard, "no heartbeat on a silent legacy stream");
}

/// The Host and Origin guard applies to the legacy paths as to `/mcp`.
#[test]
fn foreign_hosts_and_origins_are_refused() {
    let (mcphop, _server) = start(Up::Stdio, &[]);
    let port = mcphop.port;
    let origin = raw_exchange(
        port,
        format!(
            "GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(origin.status, 403, "{origin:?}");
    let host = raw_exchange(
        port,
        b"POST /message?sessionId=x HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(host.status, 403, "{host:?}");
    assert!(!mcphop.log_text().contains("session "), "a session started");
}

/// An upstream that refuses `initialize`: the legacy client hears the
/// error on its stream, and the stream ends with the session that never
/// started.
#[test]
fn a_refused_initialize_is_answered_and_ends_the_stream() {
    use upstream::fake::{FakeReply, FakeUpstream};
    let fake = FakeUpstream::start(|request, _| {
        (request.method == "POST").then(|| {
            FakeReply::json(
                500,
                serde_json::json!({"jsonrpc": "2.0", "id": 1,
                    "error": {"code": -32603, "message": "no sessions today"}}),
            )
        })
    });
    let mcphop = Mcphop::start_http(&[], &fake.url());
    let mut stream = LegacyStream::open(mcphop.port, "");
    assert_eq!(
        post_message(mcphop.port, &stream.endpoint, "", INITIALIZE).status,
        202
    );
    let answer = stream.next_message();
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(answer["error"]["message"], "no sessions today", "{answer}");
    let mut rest = String::new();
    let ended = std::io::Read::read_to_string(&mut stream.reader, &mut rest);
    assert!(ended.is_ok(), "the stream did not end: {ended:?} {rest:?}");
    assert_eq!(
        post_message(mcphop.port, &stream.endpoint, "", PID_CALL).status,
        404
    );
}
