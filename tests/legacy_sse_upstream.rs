//! mcphop in front of legacy HTTP+SSE upstreams (`--upstream-sse URL`): the
//! real Python SDK clients (Streamable HTTP) through mcphop to two real
//! legacy servers, the Python SDK server in `sse` mode
//! (`tests/peers/py_http_server.py --sse`) and server-everything in `sse`
//! mode: initialize, tools/call, progress and a sampling round trip. A
//! recording relay between mcphop and the upstream shows one SSE stream per
//! session on a connection of its own, the POSTs on pooled connections, and
//! what N sessions cost in sockets. Killing the upstream mid-call answers
//! the pending request within a second, and the session is gone (404).
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process
//! started here is killed by a guard when the test ends, pass or fail.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_progress_then_result, eventually, Mcphop};
use serde_json::Value;
use upstream::raw::{call_echo, echo_text, post, raw_session, session_header};
use upstream::relay::Relay;
use upstream::{run_client, Kind, Server, Transport};

/// The three pieces (legacy upstream, relay, mcphop) of a test.
struct Rig {
    mcphop: Mcphop,
    relay: Relay,
    server: Server,
}

fn rig(kind: Kind, options: &[&str]) -> Rig {
    let server = Server::start_speaking(kind, Transport::LegacySse);
    let relay = Relay::start(server.port);
    let mut args = vec![
        "--upstream-sse".to_string(),
        format!("{}/sse", relay.url().trim_end_matches("/mcp")),
    ];
    args.extend(options.iter().map(|option| option.to_string()));
    let mcphop = Mcphop::start_args(&args);
    Rig {
        mcphop,
        relay,
        server,
    }
}

/// The upstream session ids mcphop POSTed to (the `session_id` or
/// `sessionId` in each POST's target), and the connections that carried an
/// SSE stream (a `GET /sse`), each alone on its connection.
fn upstream_view(relay: &Relay) -> (BTreeSet<String>, Vec<usize>) {
    let requests = relay.requests();
    let ids = requests
        .iter()
        .filter(|r| r.method == "POST")
        .filter_map(|r| {
            r.target
                .split(['?', '&'])
                .find_map(|part| {
                    part.strip_prefix("session_id=")
                        .or_else(|| part.strip_prefix("sessionId="))
                })
                .map(str::to_string)
        })
        .collect();
    let streams: Vec<usize> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.target.starts_with("/sse"))
        .map(|r| r.conn)
        .collect();
    for conn in &streams {
        let alone = requests.iter().filter(|r| r.conn == *conn).count() == 1;
        assert!(
            alone,
            "an SSE stream's connection carried other requests:\n{}",
            relay.describe()
        );
    }
    (ids, streams)
}

/// One client session is one upstream stream and one upstream session, and
/// the stream's connection closes once the session ended.
fn assert_one_upstream_session(rig: &Rig) {
    let (ids, streams) = upstream_view(&rig.relay);
    assert_eq!(ids.len(), 1, "{ids:?}\n{}", rig.relay.describe());
    assert_eq!(streams.len(), 1, "{}", rig.relay.describe());
    assert!(
        eventually(Duration::from_secs(5), || rig.relay.conn_closed(streams[0])),
        "the SSE stream's connection outlived its session:\n{}",
        rig.mcphop.log_text()
    );
}

fn basic(kind: Kind) {
    let rig = rig(kind, &[]);
    let result = run_client(&rig.mcphop, 1, "basic", &["--echo-tool", "echo"]);
    let context = format!("{kind:?}: {result}\n{}", rig.mcphop.log_text());
    let (server, echo) = match kind {
        Kind::Py => ("mcphop-py-http", "hello from v1"),
        Kind::Everything => ("mcp-servers/everything", "Echo: hello from v1"),
    };
    assert_eq!(result["server"], server, "{context}");
    assert_eq!(result["echo"], echo, "{context}");
    rig.relay.assert_reached(&[
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call",
    ]);
    assert_one_upstream_session(&rig);
}

#[test]
fn basic_python_sse_server() {
    basic(Kind::Py);
}

#[test]
fn basic_server_everything_sse() {
    basic(Kind::Everything);
}

fn progress(kind: Kind) {
    let (tool, args) = match kind {
        Kind::Py => ("progress", r#"{"steps":3,"delay_ms":100}"#),
        Kind::Everything => (
            "trigger-long-running-operation",
            r#"{"duration":1,"steps":3}"#,
        ),
    };
    let rig = rig(kind, &[]);
    let result = run_client(
        &rig.mcphop,
        1,
        "progress",
        &["--tool", tool, "--args", args],
    );
    assert_progress_then_result(&result, &format!("{kind:?}: {result}"));
    assert_one_upstream_session(&rig);
}

#[test]
fn progress_python_sse_server() {
    progress(Kind::Py);
}

#[test]
fn progress_server_everything_sse() {
    progress(Kind::Everything);
}

fn sampling(kind: Kind) {
    let tool = match kind {
        Kind::Py => "sample",
        Kind::Everything => "trigger-sampling-request",
    };
    let rig = rig(kind, &[]);
    let result = run_client(
        &rig.mcphop,
        1,
        "sampling",
        &["--tool", tool, "--args", r#"{"prompt":"hi"}"#],
    );
    let context = format!("{kind:?}: {result}");
    assert_eq!(result["sampling_requests"], 1, "{context}");
    let text = result["result_text"].as_str().unwrap_or_default();
    assert!(text.contains("canned-sample-reply"), "{context}");
    // The client's answer was POSTed upstream to the session's endpoint.
    let answered = rig.relay.requests().iter().any(|r| {
        r.method == "POST"
            && r.json().get("method").is_none()
            && r.body.contains("canned-sample-reply")
    });
    assert!(answered, "{}", rig.relay.describe());
    assert_one_upstream_session(&rig);
}

#[test]
fn sampling_python_sse_server() {
    sampling(Kind::Py);
}

#[test]
fn sampling_server_everything_sse() {
    sampling(Kind::Everything);
}

/// Opens `count` raw sessions at once, each calling echo with its own
/// message; every answer is its own session's.
fn concurrent_sessions(mcphop: &Mcphop, count: usize) {
    let port = mcphop.port;
    let workers: Vec<_> = (0..count)
        .map(|n| {
            let session = raw_session(mcphop);
            thread::spawn(move || {
                let message = format!("session {n} of {session}");
                let response = call_echo(port, &session, 2, &message);
                (message, echo_text(&response, 2), response.status)
            })
        })
        .collect();
    for worker in workers {
        let (message, echoed, status) = worker.join().expect("a client thread");
        let echoed = echoed.unwrap_or_default();
        assert!(
            echoed.ends_with(&message),
            "a session got {echoed:?} ({status}) instead of its own {message:?}\n{}",
            mcphop.log_text()
        );
    }
}

/// 50 concurrent sessions each get their own upstream session and stream,
/// and their answers never cross.
#[test]
fn fifty_sessions_each_have_their_own_upstream_session() {
    let rig = rig(Kind::Py, &[]);
    concurrent_sessions(&rig.mcphop, 50);
    let (ids, streams) = upstream_view(&rig.relay);
    assert_eq!(ids.len(), 50, "{ids:?}");
    assert_eq!(streams.len(), 50);
}

/// 200 sessions cost 200 stream connections plus at most the pool's cap
/// for all their POSTs.
#[test]
fn two_hundred_sessions_cost_their_streams_plus_the_pool_cap() {
    const CAP: usize = 8;
    let cap = CAP.to_string();
    // Health probes open connections of their own, one per interval, apart
    // from the sessions' streams and the pool: off here, so every
    // connection the relay counts is a session's.
    let rig = rig(
        Kind::Py,
        &["--pool-max-per-host", &cap, "--health-interval", "0"],
    );
    concurrent_sessions(&rig.mcphop, 200);
    let (ids, streams) = upstream_view(&rig.relay);
    assert_eq!(ids.len(), 200);
    assert_eq!(streams.len(), 200);
    let most = rig.relay.max_open();
    eprintln!(
        "200 sessions: {} upstream connections made, at most {most} open at once",
        rig.relay.accepted()
    );
    assert!(
        most <= 200 + CAP,
        "{most} upstream connections open at once for 200 sessions (cap {CAP})"
    );
    assert!(
        rig.relay.accepted() <= 200 + CAP,
        "{} upstream connections made for 200 sessions",
        rig.relay.accepted()
    );
}

/// Killing the upstream mid-call gives the pending request a JSON-RPC error
/// within a second, and the session's next request gets 404.
#[test]
fn a_dead_upstream_answers_pending_requests_and_ends_the_session() {
    let mut rig = rig(Kind::Py, &[]);
    let session = raw_session(&rig.mcphop);
    let port = rig.mcphop.port;
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"progress","arguments":{"steps":100,"delay_ms":100},"_meta":{"progressToken":"p7"}}}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{}Content-Length: {}\r\n\r\n{body}",
        session_header(&session),
        body.len()
    )
    .expect("send the call");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // The first progress notification: the call is under way upstream.
    loop {
        line.clear();
        let read = reader.read_line(&mut line).expect("read the stream");
        assert!(read > 0, "the stream ended before any progress");
        if line.contains("notifications/progress") {
            break;
        }
    }
    rig.server.kill();
    let killed = Instant::now();
    let error = loop {
        line.clear();
        let read = reader.read_line(&mut line).expect("read the stream");
        assert!(read > 0, "the stream ended without an answer to the call");
        if let Some(data) = line.strip_prefix("data: ") {
            let message: Value = serde_json::from_str(data.trim()).expect("JSON event");
            if message["id"] == 7 {
                break message;
            }
        }
    };
    let waited = killed.elapsed();
    eprintln!("the pending call was answered {waited:?} after the upstream died: {error}");
    assert!(
        error["error"]["message"].is_string(),
        "the call got no error: {error}"
    );
    assert!(
        waited < Duration::from_secs(1),
        "the error came {waited:?} after the upstream died"
    );
    let next = call_echo(port, &session, 8, "anyone?");
    assert_eq!(next.status, 404, "{next:?}");
    // A new session cannot reach the dead upstream either: a clear error.
    let fresh = post(
        port,
        "",
        &upstream::raw::initialize_body(1).replace("\"id\":1", "\"id\":9"),
    );
    let text = fresh.body.to_string();
    assert!(
        text.contains("\"error\""),
        "initialize against a dead upstream: {fresh:?}"
    );
}
