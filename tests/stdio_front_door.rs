//! The stdio front door (`mcphop stdio --upstream URL`): a client that only
//! speaks stdio spawns mcphop, which carries its one session to a remote
//! server. The Python SDK's stdio clients (1.x `stdio_client`, 2.x
//! `Client`) and the Inspector CLI spawn it in front of server-everything
//! (Streamable HTTP) and of the Python SDK server (legacy SSE): initialize,
//! tools/call, progress and a sampling round trip; and raw stdin/stdout show
//! that closing stdin DELETEs the upstream session and exits 0.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process
//! started here is killed by a guard when the test ends, pass or fail.

mod common;
#[path = "common/inspector.rs"]
mod inspector;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_progress_then_result, eventually, TempDir};
use serde_json::{json, Value};
use upstream::relay::Relay;
use upstream::{collect_lines, python_client_command, KillOnDrop, Kind, Lines, Server, Transport};

fn mcphop_bin() -> String {
    env!("CARGO_BIN_EXE_mcphop").to_string()
}

/// Runs a Python client scenario that spawns `mcphop stdio ARGS`; its JSON.
fn run_stdio_client(major: u8, mcphop_args: &str, scenario: &str, extra: &[&str]) -> Value {
    let command_line = format!("{} stdio --log-level warn {mcphop_args}", mcphop_bin());
    let output = python_client_command(major)
        .args([
            "--stdio",
            &command_line,
            "--timeout",
            "20",
            "--scenario",
            scenario,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "v{major} {scenario} through `{command_line}` failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"))
}

#[test]
fn python_clients_reach_a_streamable_http_server_through_mcphop_stdio() {
    let server = Server::everything();
    let upstream = format!("--upstream {}", server.url());
    for major in [1, 2] {
        let basic = run_stdio_client(major, &upstream, "basic", &["--echo-tool", "echo"]);
        assert_eq!(
            basic["server"], "mcp-servers/everything",
            "v{major}: {basic}"
        );
        assert_eq!(
            basic["echo"],
            format!("Echo: hello from v{major}"),
            "v{major}: {basic}"
        );
    }
    let progress = run_stdio_client(
        1,
        &upstream,
        "progress",
        &[
            "--tool",
            "trigger-long-running-operation",
            "--args",
            r#"{"duration":1,"steps":3}"#,
        ],
    );
    assert_progress_then_result(&progress, &progress.to_string());
    let sampling = run_stdio_client(
        1,
        &upstream,
        "sampling",
        &[
            "--tool",
            "trigger-sampling-request",
            "--args",
            r#"{"prompt":"hi"}"#,
        ],
    );
    assert_eq!(sampling["sampling_requests"], 1, "{sampling}");
    assert!(
        sampling["result_text"]
            .as_str()
            .is_some_and(|text| text.contains("canned-sample-reply")),
        "{sampling}"
    );
}

#[test]
fn a_python_client_reaches_a_legacy_sse_server_through_mcphop_stdio() {
    let server = Server::start_speaking(Kind::Py, Transport::LegacySse);
    let upstream = format!("--upstream-sse {}", server.url());
    let basic = run_stdio_client(1, &upstream, "basic", &["--echo-tool", "echo"]);
    assert_eq!(basic["server"], "mcphop-py-http", "{basic}");
    assert_eq!(basic["echo"], "hello from v1", "{basic}");
    let progress = run_stdio_client(
        1,
        &upstream,
        "progress",
        &[
            "--tool",
            "progress",
            "--args",
            r#"{"steps":3,"delay_ms":50}"#,
        ],
    );
    assert_progress_then_result(&progress, &progress.to_string());
}

#[test]
fn the_inspector_cli_spawns_mcphop_stdio() {
    let server = Server::everything();
    let dir = TempDir::new("inspector");
    let file = json!({"mcpServers": {"mcphop": {
        "command": mcphop_bin(),
        "args": ["stdio", "--log-level", "warn", "--upstream", server.url()]
    }}});
    let config = dir.write("inspector.json", &file.to_string());
    let config = config.display().to_string();
    let listed = inspector::inspector_raw(&[
        "--config",
        &config,
        "--server",
        "mcphop",
        "--method",
        "tools/list",
    ])
    .json();
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {listed}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert!(names.contains(&"echo"), "{names:?}");
    let called = inspector::inspector_raw(
        &[
            &["--config", &config, "--server", "mcphop"][..],
            &inspector::CALL_ECHO_HI,
        ]
        .concat(),
    )
    .json();
    assert_eq!(called["content"][0]["text"], "Echo: hi", "{called}");
}

/// mcphop stdio spawned by hand: its stdin, its stdout lines, its log.
struct StdioMcphop {
    child: KillOnDrop,
    stdout: std::sync::mpsc::Receiver<String>,
    log: Lines,
}

impl StdioMcphop {
    fn start(args: &[&str]) -> StdioMcphop {
        let mut child = Command::new(mcphop_bin())
            .arg("stdio")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcphop stdio");
        let (tx, stdout) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log: Lines = Default::default();
        collect_lines(
            child.stderr.take().expect("stderr"),
            log.clone(),
            None,
            "mcphop",
        );
        StdioMcphop {
            child: KillOnDrop(child),
            stdout,
            log,
        }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.child.0.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{message}").expect("write a line");
    }

    fn next(&self) -> Value {
        let line = self
            .stdout
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line on stdout; log:\n{}", self.log_text()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

#[test]
fn closing_stdin_deletes_the_upstream_session_and_exits_zero() {
    let server = Server::python();
    let relay = Relay::start(server.port);
    let mut mcphop = StdioMcphop::start(&["--upstream", &relay.url(), "--health-interval", "0"]);
    // Anything but initialize first has no session to go to.
    mcphop.send(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}));
    let refused = mcphop.next();
    assert_eq!(refused["id"], 9, "{refused}");
    assert!(refused["error"]["message"].is_string(), "{refused}");
    mcphop.send(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}}),
    );
    let init = mcphop.next();
    assert_eq!(init["id"], 1, "{init}");
    assert_eq!(
        init["result"]["serverInfo"]["name"], "mcphop-py-http",
        "{init}"
    );
    mcphop.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    mcphop.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "over stdio"}}}));
    let echo = mcphop.next();
    assert_eq!(echo["result"]["content"][0]["text"], "over stdio", "{echo}");
    // Not JSON: a parse error on stdout, and the session goes on.
    {
        let stdin = mcphop.child.0.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{{not json").expect("write");
    }
    let parse_error = mcphop.next();
    assert_eq!(parse_error["error"]["code"], -32700, "{parse_error}");

    drop(mcphop.child.0.stdin.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = mcphop.child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "mcphop stdio did not exit after stdin closed:\n{}",
            mcphop.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", mcphop.log_text());
    let ids = relay.upstream_session_ids();
    assert_eq!(ids.len(), 1, "{}", relay.describe());
    let deleted = eventually(Duration::from_secs(5), || {
        relay.requests().iter().any(|r| r.method == "DELETE")
    });
    assert!(deleted, "no DELETE upstream:\n{}", relay.describe());
    // The relay's upstream lives to the end.
    drop(server);
}
