//! mcphop in front of Streamable HTTP upstreams (`--upstream URL`), every
//! request riding mcphop's own keep-alive pool: the real Python SDK clients
//! (1.x and 2.x) through mcphop to two real upstreams, the Python SDK server
//! (`tests/peers/py_http_server.py`, SSE answers) and server-everything in
//! `streamableHttp` mode: basic calls, progress before the result, sampling,
//! the session's GET stream and its DELETE, seen by a recording TCP relay
//! between mcphop and the upstream, and the upstream session proven gone
//! afterwards.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process started
//! here is killed by a guard when the test ends, pass or fail. A missing peer
//! fails the test with a clear message.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::io::Write;
use std::process::Stdio;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_progress_then_result, eventually, Mcphop};
use serde_json::Value;
use upstream::raw::direct_ping;
use upstream::relay::Relay;
use upstream::{
    collect_lines, python_client_command, run_client, KillOnDrop, Kind, Lines, Server,
    CLIENT_TIMEOUT, PROTOCOL,
};

// ===== real upstreams with the real Python clients =============================

/// The session-level checks every real-client run ends with: mcphop's one
/// upstream session was DELETEd (seen by the relay), mcphop logged so, and the
/// upstream itself no longer knows it.
fn assert_upstream_session_gone(server: &Server, relay: &Relay, mcphop: &Mcphop) -> String {
    let ids = relay.upstream_session_ids();
    assert_eq!(
        ids.len(),
        1,
        "one client session must map to one upstream session: {ids:?}\n{}",
        relay.describe()
    );
    let id = ids.into_iter().next().unwrap();
    let deleted = eventually(Duration::from_secs(10), || {
        relay
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.header("mcp-session-id") == Some(id.as_str()))
    });
    assert!(
        deleted,
        "mcphop never sent DELETE for upstream session {id}:\n{}\nmcphop log:\n{}",
        relay.describe(),
        mcphop.log_text()
    );
    assert!(
        eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("upstream session deleted")),
        "no `upstream session deleted` in mcphop's log:\n{}",
        mcphop.log_text()
    );
    // The upstream's own view: the session is gone.
    let gone = eventually(Duration::from_secs(5), || {
        let response = direct_ping(server.port, &id);
        match server.kind {
            Kind::Py => response.status == 404,
            // server-everything answers 400 "No valid session ID" for any
            // session it does not hold, and logs the transport's removal.
            Kind::Everything => {
                response.status == 400
                    && response.body.contains("No valid session ID")
                    && server
                        .output_text()
                        .contains(&format!("Transport closed for session {id}"))
            }
        }
    });
    assert!(
        gone,
        "the upstream still knows session {id} after the client left: {:?}\nupstream output:\n{}",
        direct_ping(server.port, &id),
        server.output_text()
    );
    id
}

/// The upstream GET stream mcphop opened for `id`: a GET with the session id
/// and `Accept: text/event-stream`, alone on a connection of its own (outside
/// the pool). Its connection index.
fn upstream_get_stream(relay: &Relay, id: &str) -> Option<usize> {
    let requests = relay.requests();
    let get = requests.iter().find(|r| {
        r.method == "GET"
            && r.header("mcp-session-id") == Some(id)
            && r.header("accept")
                .is_some_and(|a| a.contains("text/event-stream"))
    })?;
    let alone = requests.iter().filter(|r| r.conn == get.conn).count() == 1;
    alone.then_some(get.conn)
}

/// The three pieces (upstream, relay, mcphop) of a real-upstream test.
struct Rig {
    mcphop: Mcphop,
    relay: Relay,
    server: Server,
}

fn rig(kind: Kind) -> Rig {
    let server = Server::start(kind);
    let relay = Relay::start(server.port);
    let mcphop = Mcphop::start_http(&[], &relay.url());
    Rig {
        mcphop,
        relay,
        server,
    }
}

fn server_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Py => "mcphop-py-http",
        Kind::Everything => "mcp-servers/everything",
    }
}

fn basic(major: u8, kind: Kind) {
    let rig = rig(kind);
    let result = run_client(&rig.mcphop, major, "basic", &["--echo-tool", "echo"]);
    let context = format!("v{major} vs {kind:?}: {result}");
    assert_eq!(result["server"], server_name(kind), "{context}");
    assert_eq!(result["protocol"], PROTOCOL, "{context}");
    let tools: Vec<&str> = result["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools is not a list: {context}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"echo"), "no echo tool: {context}");
    let expected = format!("hello from v{major}");
    let expected = match kind {
        Kind::Py => expected,
        Kind::Everything => format!("Echo: {expected}"),
    };
    assert_eq!(result["echo"], expected.as_str(), "{context}");
    // initialize, tools/list and tools/call went to the upstream as such.
    rig.relay.assert_reached(&[
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call",
    ]);
    assert_upstream_session_gone(&rig.server, &rig.relay, &rig.mcphop);
}

#[test]
fn basic_v1_python_server() {
    basic(1, Kind::Py);
}

#[test]
fn basic_v2_python_server() {
    basic(2, Kind::Py);
}

#[test]
fn basic_v1_server_everything() {
    basic(1, Kind::Everything);
}

#[test]
fn basic_v2_server_everything() {
    basic(2, Kind::Everything);
}

/// Progress notifications from an SSE answer reach the client in order,
/// before the result; the call lasts long enough (0.6 s or more) that the
/// client's GET stream is up, so mcphop's upstream GET stream is checked too.
fn progress(major: u8, kind: Kind) {
    let (tool, args) = match kind {
        Kind::Py => ("progress", r#"{"steps":3,"delay_ms":300}"#),
        Kind::Everything => (
            "trigger-long-running-operation",
            r#"{"duration":1,"steps":3}"#,
        ),
    };
    let rig = rig(kind);
    let result = run_client(
        &rig.mcphop,
        major,
        "progress",
        &["--tool", tool, "--args", args],
    );
    let context = format!("v{major} vs {kind:?}: {result}");
    assert_progress_then_result(&result, &context);
    // The upstream sent them on an SSE answer (not the GET stream).
    let received = rig.relay.received_text();
    assert!(
        received.contains("text/event-stream") && received.contains("notifications/progress"),
        "the upstream did not answer with an SSE stream carrying progress"
    );
    let id = assert_upstream_session_gone(&rig.server, &rig.relay, &rig.mcphop);
    let get = upstream_get_stream(&rig.relay, &id).unwrap_or_else(|| {
        panic!(
            "mcphop opened no upstream GET stream of its own for session {id}:\n{}",
            rig.relay.describe()
        )
    });
    assert!(
        eventually(Duration::from_secs(5), || rig.relay.conn_closed(get)),
        "the upstream GET stream's connection outlived its session"
    );
}

#[test]
fn progress_v1_python_server() {
    progress(1, Kind::Py);
}

#[test]
fn progress_v2_python_server() {
    progress(2, Kind::Py);
}

#[test]
fn progress_v1_server_everything() {
    progress(1, Kind::Everything);
}

#[test]
fn progress_v2_server_everything() {
    progress(2, Kind::Everything);
}

/// A server-to-client sampling request, on the upstream's SSE answer, reaches
/// the client, and its answer reaches the upstream.
fn sampling(major: u8, kind: Kind) {
    let tool = match kind {
        Kind::Py => "sample",
        Kind::Everything => "trigger-sampling-request",
    };
    let rig = rig(kind);
    let result = run_client(
        &rig.mcphop,
        major,
        "sampling",
        &["--tool", tool, "--args", r#"{"prompt":"hi"}"#],
    );
    let context = format!("v{major} vs {kind:?}: {result}");
    assert_eq!(result["sampling_requests"], 1, "{context}");
    let text = result["result_text"]
        .as_str()
        .unwrap_or_else(|| panic!("result_text is not text: {context}"));
    assert!(text.contains("canned-sample-reply"), "{context}");
    if kind == Kind::Py {
        assert_eq!(text, "sampled: canned-sample-reply", "{context}");
    }
    // The client's answer went upstream as a POSTed JSON-RPC response.
    let answered = rig.relay.requests().iter().any(|r| {
        r.method == "POST"
            && r.json().get("method").is_none()
            && r.body.contains("canned-sample-reply")
    });
    assert!(
        answered,
        "the sampling answer never reached the upstream:\n{}",
        rig.relay.describe()
    );
    assert_upstream_session_gone(&rig.server, &rig.relay, &rig.mcphop);
}

#[test]
fn sampling_v1_python_server() {
    sampling(1, Kind::Py);
}

#[test]
fn sampling_v2_python_server() {
    sampling(2, Kind::Py);
}

#[test]
fn sampling_v1_server_everything() {
    sampling(1, Kind::Everything);
}

#[test]
fn sampling_v2_server_everything() {
    sampling(2, Kind::Everything);
}

/// Reads one line from `lines` within `limit`, as JSON.
fn next_json(lines: &mpsc::Receiver<String>, limit: Duration, what: &str) -> Value {
    let line = lines
        .recv_timeout(limit)
        .unwrap_or_else(|e| panic!("no {what} line from the client: {e}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what} line is not JSON ({e}): {line}"))
}

/// The GET stream and DELETE, step by step, with a client that holds its
/// session open (the `pid` scenario): while it is open, mcphop holds a GET
/// stream of its own upstream and the upstream session answers; once the
/// client closes, mcphop DELETEs it, closes the GET stream, and the upstream
/// answers 404 for it.
fn get_stream_and_delete(major: u8) {
    let rig = rig(Kind::Py);
    let mut command = python_client_command(major);
    command
        .args(["--url", &rig.mcphop.url(), "--timeout", CLIENT_TIMEOUT])
        .args(["--scenario", "pid", "--pid-tool", "pid"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut client = KillOnDrop(command.spawn().expect("spawn the Python client"));
    let (tx, lines) = mpsc::channel();
    collect_lines(
        client.0.stdout.take().expect("stdout"),
        Arc::default(),
        Some(tx),
        "client",
    );
    let stderr: Lines = Arc::default();
    collect_lines(
        client.0.stderr.take().expect("stderr"),
        Arc::clone(&stderr),
        None,
        "client",
    );
    let mut stdin = client.0.stdin.take().expect("stdin");

    let first = next_json(&lines, Duration::from_secs(30), "first");
    assert!(first["pid"].is_u64(), "{first}");
    let ids = rig.relay.upstream_session_ids();
    assert_eq!(ids.len(), 1, "{ids:?}\n{}", rig.relay.describe());
    let id = ids.into_iter().next().unwrap();

    // Open: mcphop's own upstream GET stream, alive, on its own connection.
    let mut get = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            get = upstream_get_stream(&rig.relay, &id);
            get.is_some()
        }),
        "mcphop opened no upstream GET stream while the client held one:\n{}\nmcphop log:\n{}",
        rig.relay.describe(),
        rig.mcphop.log_text()
    );
    let get = get.unwrap();
    assert!(!rig.relay.conn_closed(get), "the GET stream closed early");
    // The upstream session is live: the control for the 404 below.
    let live = direct_ping(rig.server.port, &id);
    assert_eq!(live.status, 200, "live upstream session: {live:?}");
    assert!(
        !rig.relay.requests().iter().any(|r| r.method == "DELETE"),
        "a DELETE went out while the session was open"
    );

    stdin.write_all(b"\n").expect("write to the client's stdin");
    stdin.flush().expect("flush the client's stdin");
    let last = next_json(&lines, Duration::from_secs(30), "final");
    assert_eq!(last["closed"], true, "{last}");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = client.0.try_wait().expect("wait for the client") {
            break status;
        }
        assert!(Instant::now() < deadline, "the client did not exit");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "client exited with {status}: {}",
        stderr.lock().unwrap().join("\n")
    );

    let gone = assert_upstream_session_gone(&rig.server, &rig.relay, &rig.mcphop);
    assert_eq!(gone, id);
    assert!(
        eventually(Duration::from_secs(5), || rig.relay.conn_closed(get)),
        "mcphop kept the upstream GET stream open after the session ended"
    );
}

#[test]
fn get_stream_and_delete_v1_python_server() {
    get_stream_and_delete(1);
}

#[test]
fn get_stream_and_delete_v2_python_server() {
    get_stream_and_delete(2);
}
