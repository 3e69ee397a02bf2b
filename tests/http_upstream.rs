//! mcphop in front of Streamable HTTP upstreams (`--upstream URL`), every
//! request riding mcphop's own keep-alive pool:
//!
//! 1. the real Python SDK clients (1.x and 2.x) through mcphop to two real
//!    upstreams, the Python SDK server (`tests/peers/py_http_server.py`, SSE
//!    answers) and server-everything in `streamableHttp` mode: basic calls,
//!    progress before the result, sampling, the session's GET stream and its
//!    DELETE, seen by a recording TCP relay between mcphop and the upstream,
//!    and the upstream session proven gone afterwards;
//! 2. header forwarding rules, against a fake upstream written here;
//! 3. an upstream 404 for its session ends the client's session with 404;
//! 4. 500 concurrent sessions over a capped pool, counting the upstream's
//!    accepted connections;
//! 5. the upstream killed and restarted on the same port.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process started
//! here is killed by a guard when the test ends, pass or fail. A missing peer
//! fails the test with a clear message.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_progress_then_result, eventually, peers_dir, post_request, raw_exchange,
    read_buffered_response, repo_root, Mcphop, RawResponse, SseStream,
};
use serde_json::{json, Value};

/// Per-phase timeout handed to the Python clients (seconds).
const CLIENT_TIMEOUT: &str = "20";
/// A Python client run that takes longer than this is killed and fails.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);
/// How long an upstream server may take to listen.
const START_LIMIT: Duration = Duration::from_secs(30);
/// The protocol version both SDK majors negotiate with both upstreams.
const PROTOCOL: &str = "2025-11-25";
/// The protocol version the raw clients here ask for (and the Python server
/// agrees to).
const RAW_PROTOCOL: &str = "2025-06-18";

// ===== processes ==============================================================

/// A free loopback port (the listener is dropped; the port is reused soon).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind a free loopback port")
}

/// Lines a child printed, collected by a reader thread.
type Lines = Arc<Mutex<Vec<String>>>;

/// Starts a thread collecting `pipe`'s lines into `sink`, sending each on `tx`.
fn collect_lines(
    pipe: impl Read + Send + 'static,
    sink: Lines,
    tx: Option<mpsc::Sender<String>>,
    tag: &'static str,
) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("MCPHOP_TEST_LOG").is_some() {
                eprintln!("{tag}: {line}");
            }
            sink.lock().unwrap().push(line.clone());
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

/// SIGKILLs a child started with `process_group(0)` and its whole group, and
/// reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

/// Which real upstream server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `tests/peers/py_http_server.py` on the Python SDK 1.x (SSE answers).
    Py,
    /// server-everything in `streamableHttp` mode.
    Everything,
}

/// A running upstream server, killed (with its process group) on drop.
struct Server {
    child: Child,
    port: u16,
    kind: Kind,
    /// Its stdout and stderr lines.
    output: Lines,
}

impl Server {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn output_text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Kills the server now (SIGKILL to its group) and reaps it.
    fn kill(&mut self) {
        kill_group(&mut self.child);
    }

    /// Starts `py_http_server.py` on a free port (a few tries, in case
    /// another test takes the port first).
    fn python() -> Server {
        let mut last = String::new();
        for _ in 0..3 {
            match Server::python_on(free_port()) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("py_http_server.py did not start: {last}");
    }

    /// Starts `py_http_server.py` on `port`; Err if it exits or stays silent.
    fn python_on(port: u16) -> Result<Server, String> {
        let peers = peers_dir();
        let python = peers.join("py1/bin/python");
        let script = repo_root().join("tests/peers/py_http_server.py");
        for path in [&python, &script] {
            assert!(
                path.exists(),
                "{} is missing: run tests/peers/install.sh",
                path.display()
            );
        }
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn py_http_server.py");
        let output: Lines = Arc::default();
        let (tx, rx) = mpsc::channel();
        collect_lines(
            child.stdout.take().expect("stdout"),
            Arc::clone(&output),
            Some(tx),
            "py_http_server",
        );
        collect_lines(
            child.stderr.take().expect("stderr"),
            Arc::clone(&output),
            None,
            "py_http_server",
        );
        let ready = format!("ready on {port}");
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(&ready) => {
                    return Ok(Server {
                        child,
                        port,
                        kind: Kind::Py,
                        output,
                    })
                }
                Ok(_) => {}
                Err(_) => {
                    kill_group(&mut child);
                    let text = output.lock().unwrap().join("\n");
                    return Err(format!("no {ready:?} within {START_LIMIT:?}:\n{text}"));
                }
            }
        }
    }

    /// Starts server-everything in `streamableHttp` mode on a free port
    /// (`PORT=0`; `loopback.cjs` keeps it on 127.0.0.1 and tells the port).
    fn everything() -> Server {
        let peers = peers_dir();
        let entry =
            peers.join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
        let loopback = repo_root().join("tests/peers/loopback.cjs");
        for path in [&entry, &loopback] {
            assert!(
                path.exists(),
                "{} is missing: run tests/peers/install.sh",
                path.display()
            );
        }
        let mut child = Command::new("node")
            .arg("--require")
            .arg(&loopback)
            .arg(&entry)
            .arg("streamableHttp")
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn node (server-everything streamableHttp): is node installed?");
        let output: Lines = Arc::default();
        let (tx, rx) = mpsc::channel();
        collect_lines(
            child.stdout.take().expect("stdout"),
            Arc::clone(&output),
            None,
            "server-everything",
        );
        collect_lines(
            child.stderr.take().expect("stderr"),
            Arc::clone(&output),
            Some(tx),
            "server-everything",
        );
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("loopback.cjs: listening on 127.0.0.1:").nth(1) {
                        let port = rest.trim().parse().expect("loopback.cjs port");
                        return Server {
                            child,
                            port,
                            kind: Kind::Everything,
                            output,
                        };
                    }
                }
                Err(_) => {
                    kill_group(&mut child);
                    panic!(
                        "server-everything (streamableHttp) did not report a loopback port:\n{}",
                        output.lock().unwrap().join("\n")
                    );
                }
            }
        }
    }

    fn start(kind: Kind) -> Server {
        match kind {
            Kind::Py => Server::python(),
            Kind::Everything => Server::everything(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process killed with its group on drop (a Python client).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}

fn python_client_command(major: u8) -> Command {
    let peers = peers_dir();
    let python: PathBuf = peers.join(format!("py{major}/bin/python"));
    let mut command = Command::new(python);
    command
        .arg(repo_root().join(format!("tests/peers/client_v{major}.py")))
        .process_group(0);
    command
}

/// Runs one scenario of the Python client `major` against mcphop, killed
/// after `CLIENT_LIMIT`; its JSON result. Failures carry mcphop's log.
fn run_client(mcphop: &Mcphop, major: u8, scenario: &str, extra: &[&str]) -> Value {
    let url = mcphop.url();
    let mut command = python_client_command(major);
    command
        .args(["--url", &url, "--timeout", CLIENT_TIMEOUT])
        .args(["--scenario", scenario])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(command.spawn().expect("spawn the Python client"));
    let stdout: Lines = Arc::default();
    let stderr: Lines = Arc::default();
    collect_lines(
        child.0.stdout.take().expect("stdout"),
        Arc::clone(&stdout),
        None,
        "client",
    );
    collect_lines(
        child.0.stderr.take().expect("stderr"),
        Arc::clone(&stderr),
        None,
        "client",
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the client") {
            break status;
        }
        assert!(
            started.elapsed() < CLIENT_LIMIT,
            "client v{major} scenario {scenario} still running after {CLIENT_LIMIT:?}\nmcphop log:\n{}",
            mcphop.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    };
    // The pipes close with the process; give the readers a moment to finish.
    eventually(Duration::from_secs(2), || {
        !stdout.lock().unwrap().is_empty() || !status.success()
    });
    thread::sleep(Duration::from_millis(50));
    let out = stdout.lock().unwrap().join("\n");
    let err = stderr.lock().unwrap().join("\n");
    assert!(
        status.success(),
        "client v{major} scenario {scenario} failed ({status}):\nstderr: {err}\nstdout: {out}\nmcphop log:\n{}",
        mcphop.log_text()
    );
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("client result is not JSON ({e}): {out:?}\nstderr: {err}"))
}

// ===== recorded HTTP requests =================================================

/// One HTTP request as a server (or the relay) saw it.
#[derive(Debug, Clone)]
struct SeenRequest {
    /// Which connection carried it (index in accept order).
    conn: usize,
    method: String,
    target: String,
    /// Names in lowercase.
    headers: Vec<(String, String)>,
    body: String,
}

impl SeenRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The JSON-RPC method of a POSTed message, if any.
    fn mcp_method(&self) -> Option<String> {
        self.json()
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// Parses the requests in the bytes one client sent on one connection
/// (mcphop always frames bodies with Content-Length); a partial last
/// request is left out.
fn parse_requests(conn: usize, bytes: &[u8]) -> Vec<SeenRequest> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_start = end + 4;
        if rest.len() < body_start + length {
            break;
        }
        let body = String::from_utf8_lossy(&rest[body_start..body_start + length]).into_owned();
        found.push(SeenRequest {
            conn,
            method,
            target,
            headers,
            body,
        });
        rest = &rest[body_start + length..];
    }
    found
}

// ===== a recording, counting TCP relay ========================================

/// What passed through one relayed connection.
#[derive(Default)]
struct RelayConn {
    /// mcphop to the upstream.
    sent: Vec<u8>,
    /// The upstream to mcphop.
    received: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct RelayState {
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    stop: AtomicBool,
    conns: Mutex<Vec<Arc<Mutex<RelayConn>>>>,
    /// Every socket, shut down when the relay is dropped.
    sockets: Mutex<Vec<TcpStream>>,
}

/// A TCP relay on 127.0.0.1 in front of an upstream port: it records every
/// byte both ways per connection, and counts accepted and open connections.
struct Relay {
    port: u16,
    state: Arc<RelayState>,
}

impl Relay {
    fn start(upstream_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(RelayState::default());
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for down in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(down) = down else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
                shared.max_open.fetch_max(open, Ordering::SeqCst);
                let record = Arc::new(Mutex::new(RelayConn::default()));
                shared.conns.lock().unwrap().push(Arc::clone(&record));
                let up = match TcpStream::connect(("127.0.0.1", upstream_port)) {
                    Ok(up) => up,
                    Err(_) => {
                        // Upstream down: the connection is refused, as it
                        // would be without the relay (as near as TCP allows).
                        let _ = down.shutdown(Shutdown::Both);
                        record.lock().unwrap().closed = true;
                        shared.open.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                };
                {
                    let mut sockets = shared.sockets.lock().unwrap();
                    for socket in [&down, &up] {
                        if let Ok(clone) = socket.try_clone() {
                            sockets.push(clone);
                        }
                    }
                }
                let halves_done = Arc::new(AtomicUsize::new(0));
                for to_upstream in [true, false] {
                    let pair = if to_upstream {
                        (down.try_clone(), up.try_clone())
                    } else {
                        (up.try_clone(), down.try_clone())
                    };
                    let (Ok(mut from), Ok(mut to)) = pair else {
                        continue;
                    };
                    let record = Arc::clone(&record);
                    let halves_done = Arc::clone(&halves_done);
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        let clean = loop {
                            match from.read(&mut buffer) {
                                Ok(0) => break true,
                                Ok(count) => {
                                    {
                                        let mut record = record.lock().unwrap();
                                        let log = if to_upstream {
                                            &mut record.sent
                                        } else {
                                            &mut record.received
                                        };
                                        log.extend_from_slice(&buffer[..count]);
                                    }
                                    if to.write_all(&buffer[..count]).is_err() {
                                        break false;
                                    }
                                }
                                Err(_) => break false,
                            }
                        };
                        if clean {
                            let _ = to.shutdown(Shutdown::Write);
                        } else {
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        }
                        if halves_done.fetch_add(1, Ordering::SeqCst) == 1 {
                            record.lock().unwrap().closed = true;
                            shared.open.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                }
            }
        });
        Relay { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    fn max_open(&self) -> usize {
        self.state.max_open.load(Ordering::SeqCst)
    }

    fn conns(&self) -> Vec<Arc<Mutex<RelayConn>>> {
        self.state.conns.lock().unwrap().clone()
    }

    /// Every complete request mcphop sent, connection by connection.
    fn requests(&self) -> Vec<SeenRequest> {
        self.conns()
            .iter()
            .enumerate()
            .flat_map(|(index, conn)| parse_requests(index, &conn.lock().unwrap().sent))
            .collect()
    }

    fn conn_closed(&self, index: usize) -> bool {
        self.conns()
            .get(index)
            .is_some_and(|conn| conn.lock().unwrap().closed)
    }

    /// Everything the upstream sent back, all connections together.
    fn received_text(&self) -> String {
        self.conns()
            .iter()
            .map(|conn| String::from_utf8_lossy(&conn.lock().unwrap().received).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The distinct upstream session ids mcphop's requests carried.
    fn upstream_session_ids(&self) -> BTreeSet<String> {
        self.requests()
            .iter()
            .filter_map(|request| request.header("mcp-session-id").map(str::to_string))
            .collect()
    }

    /// A readable summary of the requests seen, for failure messages.
    fn describe(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "conn {} {} {} session={:?} method={:?}",
                    r.conn,
                    r.method,
                    r.target,
                    r.header("mcp-session-id"),
                    r.mcp_method()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for socket in self.state.sockets.lock().unwrap().iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so it sees the stop flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

// ===== a fake Streamable HTTP upstream =========================================

/// A canned answer.
struct FakeReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl FakeReply {
    fn json(status: u16, body: Value) -> FakeReply {
        FakeReply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    fn empty(status: u16) -> FakeReply {
        FakeReply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// The protocol version the fake upstream answers `initialize` with, whatever
/// the client asked: the session's negotiated version.
const FAKE_PROTOCOL: &str = "2025-03-26";
/// The session id the fake upstream hands out.
const FAKE_SESSION: &str = "up-1";

/// What a plain, well-behaved upstream answers: initialize names session
/// `up-1`; requests get JSON results (tools/call echoes `message`);
/// notifications and responses get 202; GET gets 405 (no stream offered);
/// DELETE gets 200.
fn fake_default_reply(request: &SeenRequest) -> FakeReply {
    match request.method.as_str() {
        "GET" => FakeReply::empty(405),
        "DELETE" => FakeReply::empty(200),
        "POST" => {
            let message = request.json();
            let id = message.get("id").cloned();
            let method = message.get("method").and_then(Value::as_str);
            match (id, method) {
                (Some(id), Some("initialize")) => {
                    let mut reply = FakeReply::json(
                        200,
                        json!({"jsonrpc": "2.0", "id": id, "result": {
                            "protocolVersion": FAKE_PROTOCOL,
                            "capabilities": {"tools": {}},
                            "serverInfo": {"name": "fake-upstream", "version": "0"}
                        }}),
                    );
                    reply
                        .headers
                        .push(("Mcp-Session-Id".into(), FAKE_SESSION.into()));
                    reply
                }
                (Some(id), Some("tools/call")) => {
                    let text = message["params"]["arguments"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    FakeReply::json(
                        200,
                        json!({"jsonrpc": "2.0", "id": id, "result": {
                            "content": [{"type": "text", "text": text}], "isError": false
                        }}),
                    )
                }
                (Some(id), Some(_)) => {
                    FakeReply::json(200, json!({"jsonrpc": "2.0", "id": id, "result": {}}))
                }
                _ => FakeReply::empty(202),
            }
        }
        _ => FakeReply::empty(405),
    }
}

/// Overrides the default answer: given the request and its index among all
/// requests received (0-based), Some answer or None for the default.
type Behavior = dyn Fn(&SeenRequest, usize) -> Option<FakeReply> + Send + Sync;

struct FakeState {
    requests: Mutex<Vec<SeenRequest>>,
    accepted: AtomicUsize,
    stop: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
    behavior: Box<Behavior>,
}

/// A small threaded HTTP/1.1 server on 127.0.0.1 that records every request
/// and answers like a Streamable HTTP MCP server with JSON answers.
struct FakeUpstream {
    port: u16,
    state: Arc<FakeState>,
}

impl FakeUpstream {
    fn start(
        behavior: impl Fn(&SeenRequest, usize) -> Option<FakeReply> + Send + Sync + 'static,
    ) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake upstream");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(FakeState {
            requests: Mutex::default(),
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            sockets: Mutex::default(),
            behavior: Box::new(behavior),
        });
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn = shared.accepted.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    shared.sockets.lock().unwrap().push(clone);
                }
                let shared = Arc::clone(&shared);
                thread::spawn(move || serve_fake_conn(stream, conn, &shared));
            }
        });
        FakeUpstream { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn requests(&self) -> Vec<SeenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    fn describe(&self) -> String {
        self.requests()
            .iter()
            .map(|r| format!("{} {} {:?} {}", r.method, r.target, r.headers, r.body))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for socket in self.state.sockets.lock().unwrap().iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one keep-alive connection of the fake upstream.
fn serve_fake_conn(stream: TcpStream, conn: usize, state: &FakeState) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let Some(request_line) = head.first() else {
            return;
        };
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = head[1..]
            .iter()
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = SeenRequest {
            conn,
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let index = {
            let mut requests = state.requests.lock().unwrap();
            requests.push(request.clone());
            requests.len() - 1
        };
        let reply =
            (state.behavior)(&request, index).unwrap_or_else(|| fake_default_reply(&request));
        let mut out = format!("HTTP/1.1 {} Fake\r\n", reply.status);
        for (name, value) in &reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\n\r\n{}",
            reply.body.len(),
            reply.body
        ));
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

// ===== raw client helpers ======================================================

fn initialize_body(id: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": RAW_PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}
    }})
    .to_string()
}

fn echo_body(id: u64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": message}}})
    .to_string()
}

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// POSTs `body` to mcphop on a fresh connection with `extra` header lines.
fn post(port: u16, extra: &str, body: &str) -> RawResponse {
    raw_exchange(port, &post_request(port, extra, body))
}

fn session_header(session: &str) -> String {
    format!("Mcp-Session-Id: {session}\r\n")
}

/// The JSON-RPC answer with `id` in a response (SSE events or a JSON body).
fn answer(response: &RawResponse, id: u64) -> Option<Value> {
    let messages = if response
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/event-stream"))
    {
        response.sse_messages()
    } else {
        serde_json::from_str::<Value>(&response.body)
            .map(|v| vec![v])
            .unwrap_or_default()
    };
    messages.into_iter().find(|m| m["id"] == json!(id))
}

/// The text of an echo tool's answer.
fn echo_text(response: &RawResponse, id: u64) -> Option<String> {
    answer(response, id).and_then(|m| {
        m["result"]["content"][0]["text"]
            .as_str()
            .map(str::to_string)
    })
}

/// Opens a session on mcphop with raw HTTP (initialize, then
/// notifications/initialized); its mcphop session id.
fn raw_session(mcphop: &Mcphop) -> String {
    let port = mcphop.port;
    let response = post(port, "", &initialize_body(1));
    assert_eq!(
        response.status,
        200,
        "initialize: {response:?}\n{}",
        mcphop.log_text()
    );
    assert!(answer(&response, 1).is_some_and(|m| m.get("result").is_some()));
    let session = response
        .header("mcp-session-id")
        .expect("Mcp-Session-Id")
        .to_string();
    let initialized = post(port, &session_header(&session), INITIALIZED);
    assert_eq!(initialized.status, 202, "{initialized:?}");
    session
}

/// A tools/call echo on `session`.
fn call_echo(port: u16, session: &str, id: u64, message: &str) -> RawResponse {
    post(
        port,
        &format!(
            "{}MCP-Protocol-Version: {RAW_PROTOCOL}\r\n",
            session_header(session)
        ),
        &echo_body(id, message),
    )
}

/// POSTs a `ping` straight to an upstream (no mcphop) on `upstream_session`;
/// the response. For a live session it is answered; for one the upstream
/// ended, it is refused.
fn direct_ping(upstream_port: u16, upstream_session: &str) -> RawResponse {
    let body = r#"{"jsonrpc":"2.0","id":77,"method":"ping"}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{upstream_port}\r\n\
         Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
         Mcp-Session-Id: {upstream_session}\r\nMCP-Protocol-Version: {PROTOCOL}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_exchange(upstream_port, request.as_bytes())
}

/// Sends SIGTERM to mcphop, waits for it to exit, and returns its exit code
/// and the `upstream pool: ...` summary line it logged.
fn shutdown_summary(mcphop: &mut Mcphop) -> (Option<i32>, String) {
    mcphop.signal(libc::SIGTERM);
    let code = mcphop.wait_exit(Duration::from_secs(20));
    let found = eventually(Duration::from_secs(3), || {
        mcphop.log_text().contains("upstream pool:")
    });
    assert!(
        found,
        "no `upstream pool:` line at shutdown:\n{}",
        mcphop.log_text()
    );
    let log = mcphop.log_text();
    let line = log
        .lines()
        .find(|line| line.contains("upstream pool:"))
        .unwrap_or_default()
        .to_string();
    (code, line)
}

/// A `name=N` figure in the pool summary line.
fn figure(summary: &str, name: &str) -> u64 {
    summary
        .split([' ', '[', ']'])
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {summary:?}"))
}

// ===== 1. real upstreams with the real Python clients ==========================

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
    let methods: Vec<String> = rig
        .relay
        .requests()
        .iter()
        .filter_map(SeenRequest::mcp_method)
        .collect();
    for method in [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call",
    ] {
        assert!(
            methods.iter().any(|m| m == method),
            "{method} never reached the upstream: {methods:?}"
        );
    }
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

// ===== 2. forwarding rules =====================================================

const CLIENT_AUTH: &str = "Bearer client-secret";
const CLIENT_COOKIE: &str = "sid=client-cookie";

/// The client's own headers, on every request of the forwarding tests.
fn client_credentials() -> String {
    format!("Authorization: {CLIENT_AUTH}\r\nCookie: {CLIENT_COOKIE}\r\n")
}

/// Runs a whole session through mcphop in front of the fake upstream with
/// `options`: initialize, initialized, tools/call, a GET stream, DELETE, all
/// with the client's Authorization and Cookie. Returns what the fake saw.
fn forwarding_run(options: &[&str]) -> Vec<SeenRequest> {
    let fake = FakeUpstream::start(|_, _| None);
    let mcphop = Mcphop::start_http(options, &fake.url());
    let port = mcphop.port;
    let credentials = client_credentials();

    let init = post(port, &credentials, &initialize_body(1));
    assert_eq!(init.status, 200, "{init:?}\n{}", mcphop.log_text());
    let session = init
        .header("mcp-session-id")
        .expect("Mcp-Session-Id")
        .to_string();
    // The client sees mcphop's session id, never the upstream's.
    assert_eq!(session.len(), 32, "{session}");
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()), "{session}");
    assert_ne!(session, FAKE_SESSION);
    let result = answer(&init, 1).expect("initialize answer");
    assert_eq!(
        result["result"]["protocolVersion"], FAKE_PROTOCOL,
        "{result}"
    );

    let with_session = format!("{credentials}{}", session_header(&session));
    let initialized = post(
        port,
        &format!("{with_session}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n"),
        INITIALIZED,
    );
    assert_eq!(initialized.status, 202, "{initialized:?}");
    // No MCP-Protocol-Version from the client: mcphop still sends the
    // negotiated one upstream.
    let call = post(port, &with_session, &echo_body(2, "forwarded?"));
    assert_eq!(call.status, 200, "{call:?}");
    assert_eq!(
        echo_text(&call, 2).as_deref(),
        Some("forwarded?"),
        "{call:?}"
    );

    // A GET stream: mcphop asks the upstream for one too (refused: 405).
    let get_request = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\
         {with_session}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n\r\n"
    );
    let get = SseStream::open(port, get_request.as_bytes());
    assert_eq!(get.status, 200, "client GET stream");
    assert!(
        eventually(Duration::from_secs(5), || fake
            .requests()
            .iter()
            .any(|r| r.method == "GET")),
        "mcphop asked the upstream for no GET stream:\n{}",
        fake.describe()
    );

    let delete = raw_exchange(
        port,
        format!(
            "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{with_session}\
             MCP-Protocol-Version: {FAKE_PROTOCOL}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(delete.status, 200, "{delete:?}");
    drop(get);
    assert!(
        eventually(Duration::from_secs(5), || fake
            .requests()
            .iter()
            .any(|r| r.method == "DELETE")),
        "mcphop sent no DELETE upstream:\n{}",
        fake.describe()
    );

    // Nothing mcphop sent the client names the upstream's session.
    for response in [&init, &initialized, &call, &delete] {
        for (name, value) in &response.headers {
            assert!(
                !value.contains(FAKE_SESSION),
                "the client saw the upstream session id in {name}: {value}"
            );
        }
        assert!(
            !response.body.contains(FAKE_SESSION),
            "the client saw the upstream session id: {}",
            response.body
        );
    }

    let requests = fake.requests();
    for request in &requests {
        let what = format!("{} {:?}", request.method, request.mcp_method());
        assert_eq!(
            request.header("host"),
            Some(format!("127.0.0.1:{}", fake.port).as_str()),
            "{what}: Host must name the upstream"
        );
        assert_eq!(
            request.header("x-static"),
            Some("v"),
            "{what}: --upstream-header missing"
        );
        assert_eq!(request.header("cookie"), None, "{what}: Cookie forwarded");
        assert_eq!(request.target, "/mcp", "{what}");
        if request.mcp_method().as_deref() == Some("initialize") {
            assert_eq!(request.header("mcp-session-id"), None, "{what}");
            assert_eq!(request.header("mcp-protocol-version"), None, "{what}");
        } else {
            assert_eq!(
                request.header("mcp-session-id"),
                Some(FAKE_SESSION),
                "{what}: the upstream must see its own session id"
            );
            assert_eq!(
                request.header("mcp-protocol-version"),
                Some(FAKE_PROTOCOL),
                "{what}: the negotiated version"
            );
        }
    }
    let methods: Vec<Option<String>> = requests.iter().map(SeenRequest::mcp_method).collect();
    for method in ["initialize", "notifications/initialized", "tools/call"] {
        assert!(
            methods.iter().any(|m| m.as_deref() == Some(method)),
            "{method} missing upstream: {methods:?}"
        );
    }
    requests
}

#[test]
fn client_credentials_are_not_forwarded_by_default() {
    let requests = forwarding_run(&["--upstream-header", "X-Static: v"]);
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            None,
            "{} {:?}: the client's Authorization reached the upstream",
            request.method,
            request.mcp_method()
        );
    }
}

#[test]
fn forward_header_passes_authorization_on_posts() {
    let requests = forwarding_run(&[
        "--upstream-header",
        "X-Static: v",
        "--forward-header",
        "Authorization",
    ]);
    let posts: Vec<&SeenRequest> = requests.iter().filter(|r| r.method == "POST").collect();
    assert!(posts.len() >= 3, "{posts:?}");
    for request in posts {
        assert_eq!(
            request.header("authorization"),
            Some(CLIENT_AUTH),
            "POST {:?}: --forward-header Authorization not applied",
            request.mcp_method()
        );
    }
}

/// The upstream GET stream and DELETE that a client's GET and DELETE cause
/// should carry its forwarded Authorization too: an upstream that needs the
/// token refuses them otherwise (no server-to-client stream, and a session
/// never deleted). mcphop sends neither with it today (the exchanges are
/// started without the client's headers): see the report. Run with
/// `cargo test --test http_upstream -- --ignored`.
#[test]
fn forward_header_passes_authorization_on_get_and_delete() {
    let requests = forwarding_run(&[
        "--upstream-header",
        "X-Static: v",
        "--forward-header",
        "Authorization",
    ]);
    let missing: Vec<String> = requests
        .iter()
        .filter(|r| r.header("authorization") != Some(CLIENT_AUTH))
        .map(|r| format!("{} {:?}", r.method, r.mcp_method()))
        .collect();
    assert!(
        missing.is_empty(),
        "--forward-header Authorization not applied to: {missing:?}"
    );
}

// ===== 3. an upstream 404 ends the session ====================================

/// The fake upstream answers 404 to request number `index` (0-based;
/// 0 is initialize): the client gets 404 for it, and 404 for the session's
/// next request, which mcphop answers itself.
fn upstream_404_ends_session(index: usize) {
    let fake = FakeUpstream::start(move |_, n| (n == index).then(|| FakeReply::empty(404)));
    let mcphop = Mcphop::start_http(&[], &fake.url());
    let port = mcphop.port;
    let init = post(port, "", &initialize_body(1));
    assert_eq!(init.status, 200, "{init:?}");
    let session = init.header("mcp-session-id").unwrap().to_string();
    let headers = format!(
        "{}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n",
        session_header(&session)
    );
    let second = if index == 1 {
        post(port, &headers, INITIALIZED)
    } else {
        let initialized = post(port, &headers, INITIALIZED);
        assert_eq!(initialized.status, 202, "{initialized:?}");
        post(port, &headers, &echo_body(2, "refused"))
    };
    assert_eq!(
        second.status,
        404,
        "the upstream's 404 must reach the client: {second:?}\n{}",
        mcphop.log_text()
    );
    let seen = fake.requests().len();
    let later = post(port, &headers, &echo_body(3, "later"));
    assert_eq!(later.status, 404, "a later request: {later:?}");
    assert!(
        !fake
            .requests()
            .iter()
            .skip(seen)
            .any(|r| r.body.contains("later")),
        "the later request went upstream: mcphop should know the session ended"
    );
    assert!(
        eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("no longer knows the session")),
        "{}",
        mcphop.log_text()
    );
}

#[test]
fn upstream_404_on_a_notification_ends_the_session() {
    upstream_404_ends_session(1);
}

#[test]
fn upstream_404_on_a_request_ends_the_session() {
    upstream_404_ends_session(2);
}

// ===== 4. 500 concurrent sessions over a capped pool ==========================

/// One raw client: its own keep-alive connection, initialize, initialized,
/// tools/call echo (the answer checked), DELETE.
fn one_raw_session(port: u16, n: usize, start: &Barrier) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(40))))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    start.wait();
    let mut exchange = |request: Vec<u8>| -> Result<RawResponse, String> {
        writer
            .write_all(&request)
            .map_err(|e| format!("write: {e}"))?;
        // read_buffered_response panics on a broken response; keep it a
        // failure of this session rather than of the thread.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_buffered_response(&mut reader)
        }))
        .map_err(|_| "broken or missing response".to_string())
    };
    let init = exchange(post_request(port, "", &initialize_body(1)))?;
    if init.status != 200 {
        return Err(format!("initialize: {} {}", init.status, init.body));
    }
    let session = init
        .header("mcp-session-id")
        .ok_or("no Mcp-Session-Id")?
        .to_string();
    let headers = format!(
        "{}MCP-Protocol-Version: {RAW_PROTOCOL}\r\n",
        session_header(&session)
    );
    let initialized = exchange(post_request(port, &headers, INITIALIZED))?;
    if initialized.status != 202 {
        return Err(format!("initialized: {}", initialized.status));
    }
    let message = format!("hello {n}");
    let call = exchange(post_request(port, &headers, &echo_body(2, &message)))?;
    if echo_text(&call, 2).as_deref() != Some(message.as_str()) {
        return Err(format!("echo {n}: {} {}", call.status, call.body));
    }
    let delete = exchange(
        format!(
            "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: 0\r\n\r\n"
        )
        .into_bytes(),
    )?;
    if delete.status != 200 {
        return Err(format!("delete: {}", delete.status));
    }
    Ok(())
}

/// 500 raw clients at once through mcphop, whose pool is capped at 64
/// connections, to the Python SDK server behind a counting relay: every call
/// completes, and the upstream accepts no more connections than the cap
/// (raw clients open no GET streams; without the pool it would be 2000, one
/// per request). Idle connections are kept (`--pool-max-idle-per-host 64`),
/// so a lull does not close and reopen them.
#[test]
fn five_hundred_sessions_share_a_capped_pool() {
    const SESSIONS: usize = 500;
    const CAP: usize = 64;
    let server = Server::python();
    let relay = Relay::start(server.port);
    let mut mcphop = Mcphop::start_http(
        &[
            "--pool-max-per-host",
            "64",
            "--pool-max-idle-per-host",
            "64",
            "--pool-idle-timeout",
            "30s",
            "--pool-queue-timeout",
            "40s",
        ],
        &relay.url(),
    );
    let port = mcphop.port;
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let (tx, results) = mpsc::channel();
    for n in 0..SESSIONS {
        let barrier = Arc::clone(&barrier);
        let tx = tx.clone();
        thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = tx.send(one_raw_session(port, n, &barrier));
            })
            .expect("spawn a client thread");
    }
    drop(tx);
    let deadline = started + Duration::from_secs(90);
    let mut done = 0;
    let mut failures = Vec::new();
    while done < SESSIONS {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(outcome) => {
                done += 1;
                if let Err(why) = outcome {
                    failures.push(why);
                }
            }
            Err(_) => break,
        }
    }
    let elapsed = started.elapsed();
    let accepted = relay.accepted();
    eprintln!(
        "{SESSIONS} sessions: {done} finished, {} failed in {elapsed:.1?}; \
         the upstream accepted {accepted} connections (at most {} open at once, cap {CAP})",
        failures.len(),
        relay.max_open()
    );
    assert_eq!(
        done,
        SESSIONS,
        "sessions still running after {elapsed:?}\nmcphop log:\n{}",
        mcphop.log_text()
    );
    assert!(
        failures.is_empty(),
        "{} sessions failed, first: {:?}\nmcphop log:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        mcphop.log_text()
    );
    assert!(
        relay.max_open() <= CAP,
        "{} upstream connections open at once, over the cap {CAP}",
        relay.max_open()
    );
    assert!(
        accepted <= CAP,
        "the upstream accepted {accepted} connections, over the pool cap {CAP}"
    );
    // 500 sessions did not run on a handful of connections either: the pool
    // grew under load (at least a few), and every request was counted.
    assert!(accepted >= 2, "accepted {accepted}");
    let requests = relay.requests().len();
    assert!(
        requests >= 4 * SESSIONS,
        "the upstream saw {requests} requests for {SESSIONS} sessions"
    );
    let (code, summary) = shutdown_summary(&mut mcphop);
    eprintln!("{summary}");
    assert_eq!(code, Some(0), "{}", mcphop.log_text());
    assert_eq!(figure(&summary, "waiter_timeouts"), 0, "{summary}");
    assert!(figure(&summary, "reuses") > 0, "{summary}");
}

// ===== 5. the upstream restarts on the same port ===============================

/// Kills the upstream and starts it again on the same port: while it is down
/// calls fail fast (no hang), the stale pooled connections are evicted, and
/// once it is back new sessions work at once; the old session, unknown to the
/// new process, gets 404.
#[test]
fn upstream_restart_on_the_same_port() {
    let mut server = Server::python();
    let upstream_port = server.port;
    let mut mcphop = Mcphop::start_http(
        &[
            "--pool-connect-timeout",
            "1s",
            "--pool-queue-timeout",
            "2s",
            "--pool-idle-timeout",
            "30s",
        ],
        &server.url(),
    );
    let port = mcphop.port;
    let old = raw_session(&mcphop);
    // Several calls at once, so the pool holds several idle connections.
    let calls: Vec<_> = (0..4)
        .map(|n| {
            let old = old.clone();
            thread::spawn(move || call_echo(port, &old, 10 + n, &format!("before {n}")))
        })
        .collect();
    for (n, call) in calls.into_iter().enumerate() {
        let response = call.join().expect("call thread");
        assert_eq!(
            echo_text(&response, 10 + n as u64).as_deref(),
            Some(format!("before {n}").as_str()),
            "{response:?}"
        );
    }

    server.kill();

    // Down: a call on the old session and a new initialize both fail fast.
    let started = Instant::now();
    let down_call = call_echo(port, &old, 20, "while down");
    let took = started.elapsed();
    assert!(
        matches!(down_call.status, 502..=504),
        "a call while the upstream is down: {down_call:?}\n{}",
        mcphop.log_text()
    );
    assert!(
        took < Duration::from_secs(5),
        "a call while down took {took:?}"
    );
    let started = Instant::now();
    let down_init = post(port, "", &initialize_body(1));
    let took = started.elapsed();
    assert!(
        matches!(down_init.status, 502..=504),
        "initialize while the upstream is down: {down_init:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "initialize while down took {took:?}"
    );

    // Back, on the same port.
    let deadline = Instant::now() + Duration::from_secs(20);
    let _restarted = loop {
        match Server::python_on(upstream_port) {
            Ok(server) => break server,
            Err(why) => {
                assert!(Instant::now() < deadline, "restart failed: {why}");
                thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let started = Instant::now();
    let fresh = raw_session(&mcphop);
    let call = call_echo(port, &fresh, 2, "after");
    assert_eq!(
        echo_text(&call, 2).as_deref(),
        Some("after"),
        "{call:?}\n{}",
        mcphop.log_text()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The new process never heard of the old session: 404, then 404.
    let stale = call_echo(port, &old, 21, "old session");
    assert_eq!(stale.status, 404, "{stale:?}\n{}", mcphop.log_text());
    let again = call_echo(port, &old, 22, "old session again");
    assert_eq!(again.status, 404, "{again:?}");

    let (code, summary) = shutdown_summary(&mut mcphop);
    assert_eq!(code, Some(0), "{}", mcphop.log_text());
    let evicted = figure(&summary, "peer_closed") + figure(&summary, "error");
    assert!(
        evicted >= 1,
        "no stale connection was evicted: {summary}\n{}",
        mcphop.log_text()
    );
}

/// Kills the upstream and restarts it at once, while mcphop's pool still
/// holds connections to the dead process: the next calls must not fail on
/// them, hang, or be retried into errors; they succeed.
#[test]
fn upstream_restart_with_stale_pooled_connections() {
    let mut server = Server::python();
    let upstream_port = server.port;
    let mut mcphop = Mcphop::start_http(&["--pool-idle-timeout", "30s"], &server.url());
    let port = mcphop.port;
    let old = raw_session(&mcphop);
    let calls: Vec<_> = (0..4)
        .map(|n| {
            let old = old.clone();
            thread::spawn(move || call_echo(port, &old, 10 + n, "warm"))
        })
        .collect();
    for call in calls {
        assert_eq!(call.join().expect("call").status, 200);
    }
    server.kill();
    let restarted = Server::python_on(upstream_port);
    let _restarted = restarted.unwrap_or_else(|why| panic!("restart failed: {why}"));

    for attempt in 0..3 {
        let started = Instant::now();
        let fresh = raw_session(&mcphop);
        let call = call_echo(port, &fresh, 2, "after");
        assert_eq!(
            echo_text(&call, 2).as_deref(),
            Some("after"),
            "attempt {attempt}: {call:?}\n{}",
            mcphop.log_text()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let stale = call_echo(port, &old, 21, "old session");
    assert_eq!(stale.status, 404, "{stale:?}\n{}", mcphop.log_text());

    let (code, summary) = shutdown_summary(&mut mcphop);
    assert_eq!(code, Some(0), "{}", mcphop.log_text());
    let evicted = figure(&summary, "peer_closed") + figure(&summary, "error");
    assert!(evicted >= 1, "no stale connection was evicted: {summary}");
}
