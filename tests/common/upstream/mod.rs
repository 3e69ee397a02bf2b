//! Shared harness of the HTTP-upstream tests (`tests/http_upstream_*.rs`),
//! included by each with `#[path = "common/upstream/mod.rs"] mod upstream;`:
//! the real upstream servers (the Python SDK server and server-everything in
//! `streamableHttp` mode) and the real Python clients, started as process
//! groups and killed on drop. Its submodules hold the recording relay
//! ([`relay`]), the fake upstream ([`fake`]) and the raw-HTTP client helpers
//! ([`raw`]). Not every test file uses every item, hence `dead_code` allowed.

#![allow(dead_code)]

pub mod fake;
pub mod raw;
pub mod relay;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{eventually, peers_dir, repo_root, Mcphop};
use serde_json::Value;

/// Per-phase timeout handed to the Python clients (seconds).
pub const CLIENT_TIMEOUT: &str = "20";
/// A Python client run that takes longer than this is killed and fails.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(60);
/// How long an upstream server may take to listen.
pub const START_LIMIT: Duration = Duration::from_secs(30);
/// The protocol version both SDK majors negotiate with both upstreams.
pub const PROTOCOL: &str = "2025-11-25";
/// The protocol version the raw clients here ask for (and the Python server
/// agrees to).
pub const RAW_PROTOCOL: &str = "2025-06-18";

// ===== processes ==============================================================

/// A free loopback port (the listener is dropped; the port is reused soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind a free loopback port")
}

/// Lines a child printed, collected by a reader thread.
pub type Lines = Arc<Mutex<Vec<String>>>;

/// Starts a thread collecting `pipe`'s lines into `sink`, sending each on `tx`.
pub fn collect_lines(
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

/// The one process-group killer of the tests (`tests/common`).
pub use crate::common::kill_group;

/// Which real upstream server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `tests/peers/py_http_server.py` on the Python SDK 1.x (SSE answers).
    Py,
    /// server-everything in `streamableHttp` mode.
    Everything,
}

/// Which transport a real upstream server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP at `/mcp`.
    Streamable,
    /// The legacy HTTP+SSE transport: `GET /sse`, then POSTs to its endpoint.
    LegacySse,
}

/// A running upstream server, killed (with its process group) on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub kind: Kind,
    pub transport: Transport,
    /// Its stdout and stderr lines.
    pub output: Lines,
}

impl Server {
    /// Its MCP endpoint: `/mcp`, or `/sse` for the legacy transport.
    pub fn url(&self) -> String {
        match self.transport {
            Transport::Streamable => format!("http://127.0.0.1:{}/mcp", self.port),
            Transport::LegacySse => format!("http://127.0.0.1:{}/sse", self.port),
        }
    }

    pub fn output_text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Kills the server now (SIGKILL to its group) and reaps it.
    pub fn kill(&mut self) {
        kill_group(&mut self.child);
    }

    /// Starts `py_http_server.py` on a free port (a few tries, in case
    /// another test takes the port first).
    pub fn python() -> Server {
        Server::python_speaking(Transport::Streamable)
    }

    /// Starts `py_http_server.py` speaking `transport` on a free port.
    pub fn python_speaking(transport: Transport) -> Server {
        let mut last = String::new();
        for _ in 0..3 {
            match Server::python_on_speaking(free_port(), transport) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("py_http_server.py did not start: {last}");
    }

    /// Starts `py_http_server.py` on `port`; Err if it exits or stays silent.
    pub fn python_on(port: u16) -> Result<Server, String> {
        Server::python_on_speaking(port, Transport::Streamable)
    }

    fn python_on_speaking(port: u16, transport: Transport) -> Result<Server, String> {
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
            .args((transport == Transport::LegacySse).then_some("--sse"))
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
                        transport,
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
    pub fn everything() -> Server {
        Server::everything_speaking(Transport::Streamable)
    }

    /// Starts server-everything speaking `transport` (its `streamableHttp`
    /// or `sse` mode) on a free loopback port.
    pub fn everything_speaking(transport: Transport) -> Server {
        let mode = match transport {
            Transport::Streamable => "streamableHttp",
            Transport::LegacySse => "sse",
        };
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
            .arg(mode)
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
                            transport,
                            output,
                        };
                    }
                }
                Err(_) => {
                    kill_group(&mut child);
                    panic!(
                        "server-everything ({mode}) did not report a loopback port:\n{}",
                        output.lock().unwrap().join("\n")
                    );
                }
            }
        }
    }

    pub fn start(kind: Kind) -> Server {
        Server::start_speaking(kind, Transport::Streamable)
    }

    pub fn start_speaking(kind: Kind, transport: Transport) -> Server {
        match kind {
            Kind::Py => Server::python_speaking(transport),
            Kind::Everything => Server::everything_speaking(transport),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process killed with its group on drop (a Python client).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}

pub fn python_client_command(major: u8) -> Command {
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
pub fn run_client(mcphop: &Mcphop, major: u8, scenario: &str, extra: &[&str]) -> Value {
    run_client_at(mcphop, major, "--url", &mcphop.url(), scenario, extra)
}

/// As `run_client`, with the Python SDK 1.x's legacy `sse_client` on
/// mcphop's `/sse` front door.
pub fn run_sse_client(mcphop: &Mcphop, scenario: &str, extra: &[&str]) -> Value {
    let url = format!("http://127.0.0.1:{}/sse", mcphop.port);
    run_client_at(mcphop, 1, "--sse-url", &url, scenario, extra)
}

/// As `run_client`, at `url` (`--url` for Streamable HTTP, `--sse-url`
/// for the legacy transport).
pub fn run_client_at(
    mcphop: &Mcphop,
    major: u8,
    url_flag: &str,
    url: &str,
    scenario: &str,
    extra: &[&str],
) -> Value {
    let mut command = python_client_command(major);
    command
        .args([url_flag, url, "--timeout", CLIENT_TIMEOUT])
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
