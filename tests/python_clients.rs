//! End-to-end tests with the real MCP Python SDK clients (1.x and 2.x in its
//! default auto mode) talking Streamable HTTP to mcphop, in front of three
//! different stdio upstreams: the bundled example server, a Python SDK
//! (FastMCP) stdio server and `@modelcontextprotocol/server-everything`.
//!
//! Every test starts its own mcphop on port 0, so they run in parallel.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_progress_then_result, children_of, client_result, eventually, example_server, is_alive,
    peers_dir, python_client, python_stdio_server, repo_root, server_everything, Mcphop,
};
use serde_json::Value;

/// Per-phase timeout handed to the Python clients (seconds).
const CLIENT_TIMEOUT: &str = "20";

/// The protocol version both SDK majors negotiate through mcphop.
const PROTOCOL: &str = "2025-11-25";

/// The upstreams mcphop is put in front of.
#[derive(Clone, Copy, Debug)]
enum Upstream {
    Example,
    PyStdio,
    Everything,
}

impl Upstream {
    fn command(self) -> Vec<String> {
        match self {
            Upstream::Example => vec![example_server().display().to_string()],
            Upstream::PyStdio => python_stdio_server(),
            Upstream::Everything => server_everything(),
        }
    }

    fn server_name(self) -> &'static str {
        match self {
            Upstream::Example => "mcphop-example",
            Upstream::PyStdio => "mcphop-py-stdio",
            Upstream::Everything => "mcp-servers/everything",
        }
    }
}

fn start(upstream: Upstream) -> Mcphop {
    Mcphop::start(&[], &upstream.command())
}

/// Runs one scenario of the client `major` against `mcphop`; its JSON result.
/// On failure, the panic message includes mcphop's log.
fn run_scenario(mcphop: &Mcphop, major: u8, scenario: &str, extra: &[&str]) -> Value {
    let url = mcphop.url();
    let mut args = vec![
        "--url",
        url.as_str(),
        "--timeout",
        CLIENT_TIMEOUT,
        "--scenario",
        scenario,
    ];
    args.extend_from_slice(extra);
    let output = python_client(major, &args);
    if !output.status.success() {
        panic!(
            "client v{major} scenario {scenario} failed ({}):\nstderr: {}\nstdout: {}\nmcphop log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
            mcphop.log_text()
        );
    }
    client_result(&output)
}

// ----- 1. basic: initialize, tools/list, tools/call echo ----------------------

fn basic(major: u8, upstream: Upstream) {
    let mcphop = start(upstream);
    let result = run_scenario(&mcphop, major, "basic", &["--echo-tool", "echo"]);
    let context = format!("v{major} vs {upstream:?}: {result}");
    assert_eq!(result["server"], upstream.server_name(), "{context}");
    assert_eq!(result["protocol"], PROTOCOL, "{context}");
    let tools: Vec<&str> = result["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools is not a list: {context}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"echo"), "no echo tool: {context}");
    let echo = result["echo"]
        .as_str()
        .unwrap_or_else(|| panic!("echo is not text: {context}"));
    let expected = format!("hello from v{major}");
    match upstream {
        Upstream::Everything => assert_eq!(echo, format!("Echo: {expected}"), "{context}"),
        _ => assert_eq!(echo, expected, "{context}"),
    }
}

#[test]
fn basic_v1_example_server() {
    basic(1, Upstream::Example);
}

#[test]
fn basic_v1_python_stdio_server() {
    basic(1, Upstream::PyStdio);
}

#[test]
fn basic_v1_server_everything() {
    basic(1, Upstream::Everything);
}

#[test]
fn basic_v2_example_server() {
    basic(2, Upstream::Example);
}

#[test]
fn basic_v2_python_stdio_server() {
    basic(2, Upstream::PyStdio);
}

#[test]
fn basic_v2_server_everything() {
    basic(2, Upstream::Everything);
}

// ----- 2. progress notifications arrive before the result ---------------------

fn progress(major: u8, upstream: Upstream) {
    let (tool, args) = match upstream {
        Upstream::Example => ("progress", r#"{"steps":3,"delay_ms":20}"#),
        Upstream::Everything => (
            "trigger-long-running-operation",
            r#"{"duration":1,"steps":3}"#,
        ),
        Upstream::PyStdio => unreachable!("the Python stdio server has no progress tool"),
    };
    let mcphop = start(upstream);
    let result = run_scenario(
        &mcphop,
        major,
        "progress",
        &["--tool", tool, "--args", args],
    );
    let context = format!("v{major} vs {upstream:?}: {result}");
    assert_progress_then_result(&result, &context);
}

#[test]
fn progress_v1_example_server() {
    progress(1, Upstream::Example);
}

#[test]
fn progress_v2_example_server() {
    progress(2, Upstream::Example);
}

#[test]
fn progress_v1_server_everything() {
    progress(1, Upstream::Everything);
}

#[test]
fn progress_v2_server_everything() {
    progress(2, Upstream::Everything);
}

// ----- 3. sampling: a server-to-client request round-trips --------------------

fn sampling(major: u8, upstream: Upstream) {
    let tool = match upstream {
        Upstream::Example => "sample",
        Upstream::Everything => "trigger-sampling-request",
        Upstream::PyStdio => unreachable!("the Python stdio server has no sampling tool"),
    };
    let mcphop = start(upstream);
    let result = run_scenario(
        &mcphop,
        major,
        "sampling",
        &["--tool", tool, "--args", r#"{"prompt":"hi"}"#],
    );
    let context = format!("v{major} vs {upstream:?}: {result}");
    assert_eq!(result["sampling_requests"], 1, "{context}");
    let text = result["result_text"]
        .as_str()
        .unwrap_or_else(|| panic!("result_text is not text: {context}"));
    assert!(text.contains("canned-sample-reply"), "{context}");
}

#[test]
fn sampling_v1_example_server() {
    sampling(1, Upstream::Example);
}

#[test]
fn sampling_v2_example_server() {
    sampling(2, Upstream::Example);
}

#[test]
fn sampling_v1_server_everything() {
    sampling(1, Upstream::Everything);
}

#[test]
fn sampling_v2_server_everything() {
    sampling(2, Upstream::Everything);
}

// ----- 4. concurrent sessions each get their own child -------------------------

/// The child pids mcphop logged as session starts ("session X started: pid N").
fn logged_child_pids(log: &str) -> HashSet<u32> {
    log.lines()
        .filter_map(|line| line.split(" started: pid ").nth(1))
        .filter_map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect()
}

fn concurrent(major: u8) {
    const SESSIONS: usize = 20;
    let mcphop = start(Upstream::Example);
    let result = run_scenario(
        &mcphop,
        major,
        "concurrent",
        &["--pid-tool", "pid", "--sessions", &SESSIONS.to_string()],
    );
    let pids: Vec<u32> = result["pids"]
        .as_array()
        .unwrap_or_else(|| panic!("pids is not a list: {result}"))
        .iter()
        .map(|pid| {
            pid.as_u64()
                .and_then(|pid| u32::try_from(pid).ok())
                .unwrap_or_else(|| panic!("bad pid {pid} in {result}"))
        })
        .collect();
    assert_eq!(pids.len(), SESSIONS, "{result}");
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), SESSIONS, "pids are not distinct: {result}");
    assert!(!distinct.contains(&mcphop.pid()), "{result}");
    // Each pid is one that mcphop itself spawned for a session.
    let log = mcphop.log_text();
    let spawned = logged_child_pids(&log);
    assert!(
        distinct.is_subset(&spawned),
        "pids {distinct:?} not all among the children mcphop spawned {spawned:?}\n{log}"
    );
    // The clients closed their sessions (DELETE): every child goes away.
    assert!(
        eventually(Duration::from_secs(5), || pids
            .iter()
            .all(|&pid| !is_alive(pid))),
        "children still alive: {:?}\n{}",
        pids.iter()
            .filter(|&&pid| is_alive(pid))
            .collect::<Vec<_>>(),
        mcphop.log_text()
    );
}

#[test]
fn concurrent_v1_distinct_children() {
    concurrent(1);
}

#[test]
fn concurrent_v2_distinct_children() {
    concurrent(2);
}

// ----- 5. closing the client session (DELETE) ends its child ------------------

/// Reads one line from the receiver within `limit`, as JSON.
fn next_json(lines: &mpsc::Receiver<String>, limit: Duration, what: &str) -> Value {
    let line = lines
        .recv_timeout(limit)
        .unwrap_or_else(|e| panic!("no {what} line from the client: {e}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what} line is not JSON ({e}): {line}"))
}

fn delete_ends_child(major: u8) {
    let mcphop = start(Upstream::Example);
    let url = mcphop.url();
    let mut client = Command::new(peers_dir().join(format!("py{major}/bin/python")))
        .arg(repo_root().join(format!("tests/peers/client_v{major}.py")))
        .args(["--url", &url, "--timeout", CLIENT_TIMEOUT])
        .args(["--scenario", "pid", "--pid-tool", "pid"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the Python client");
    let stdout = client.stdout.take().expect("client stdout");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Kill the client if an assertion fails, so it does not linger.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = client.stdin.take().expect("client stdin");
    let mut client = KillOnDrop(client);

    let first = next_json(&lines, Duration::from_secs(30), "first");
    let pid = first["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .unwrap_or_else(|| panic!("no pid in {first}"));
    assert!(
        is_alive(pid),
        "child {pid} is not alive while the session is open"
    );
    let children: Vec<u32> = children_of(mcphop.pid())
        .iter()
        .map(|info| info.pid)
        .collect();
    assert!(
        children.contains(&pid),
        "{pid} is not a child of mcphop ({}): {children:?}",
        mcphop.pid()
    );
    assert!(
        !mcphop.log_text().contains("client sent DELETE"),
        "a session ended before the client closed it:\n{}",
        mcphop.log_text()
    );

    stdin.write_all(b"\n").expect("write to the client's stdin");
    stdin.flush().expect("flush the client's stdin");
    let last = next_json(&lines, Duration::from_secs(30), "final");
    assert_eq!(last["pid"], pid, "{last}");
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
    assert!(status.success(), "client exited with {status}");

    assert!(
        eventually(Duration::from_secs(5), || !is_alive(pid)),
        "child {pid} outlived its session\n{}",
        mcphop.log_text()
    );
    // The session's end is logged once the child is reaped; wait for it.
    assert!(
        eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("client sent DELETE")),
        "mcphop never saw a DELETE:\n{}",
        mcphop.log_text()
    );
}

#[test]
fn delete_ends_child_v1() {
    delete_ends_child(1);
}

#[test]
fn delete_ends_child_v2() {
    delete_ends_child(2);
}

// ----- 6. no child is left behind, and SIGTERM exits cleanly ------------------

#[test]
fn no_children_left_and_sigterm_exits_zero() {
    let mut mcphop = start(Upstream::Example);
    let result = run_scenario(
        &mcphop,
        1,
        "concurrent",
        &["--pid-tool", "pid", "--sessions", "5"],
    );
    assert_eq!(result["pids"].as_array().map(Vec::len), Some(5), "{result}");
    let result = run_scenario(
        &mcphop,
        2,
        "concurrent",
        &["--pid-tool", "pid", "--sessions", "5"],
    );
    assert_eq!(result["pids"].as_array().map(Vec::len), Some(5), "{result}");
    let result = run_scenario(
        &mcphop,
        2,
        "sampling",
        &["--tool", "sample", "--args", r#"{"prompt":"hi"}"#],
    );
    assert_eq!(result["sampling_requests"], 1, "{result}");

    // A second mcphop in front of server-everything, whose children are node.
    let mut everything = start(Upstream::Everything);
    let result = run_scenario(&everything, 1, "basic", &["--echo-tool", "echo"]);
    assert_eq!(result["server"], "mcp-servers/everything", "{result}");

    for proxy in [&mcphop, &everything] {
        let mut left = Vec::new();
        let clean = eventually(Duration::from_secs(10), || {
            left = children_of(proxy.pid());
            left.is_empty()
        });
        assert!(
            clean,
            "children (state Z = zombie) left behind by mcphop {}: {left:?}\n{}",
            proxy.pid(),
            proxy.log_text()
        );
    }

    for proxy in [&mut mcphop, &mut everything] {
        proxy.signal(libc::SIGTERM);
        let code = proxy.wait_exit(Duration::from_secs(15));
        assert_eq!(
            code,
            Some(0),
            "mcphop did not exit 0 on SIGTERM\n{}",
            proxy.log_text()
        );
    }
}
