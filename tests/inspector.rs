//! The MCP Inspector CLI (`@modelcontextprotocol/inspector-cli`, its
//! `mcp-inspector-cli --cli` entry point) talking Streamable HTTP
//! (`--transport http`) and the legacy HTTP+SSE transport (`--transport
//! sse`, mcphop's `/sse` front door) to mcphop, in front of the bundled
//! example server.
//!
//! The Inspector CLI reads its own version from `../package.json` relative to
//! its *working directory*, so it runs from inside its `build/` folder, with
//! absolute paths for everything else. A missing peer fails the test.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{example_server, peers_dir, Mcphop};
use serde_json::Value;

/// How long one Inspector CLI run may take (it takes well under a second).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The Inspector CLI's `build/` folder: its working directory.
fn inspector_build_dir() -> PathBuf {
    let dir = peers_dir().join("inspector/node_modules/@modelcontextprotocol/inspector-cli/build");
    assert!(
        dir.join("cli.js").exists() && dir.join("../package.json").exists(),
        "{} is missing: run tests/peers/install.sh (it installs the Inspector CLI into .peers/)",
        dir.join("cli.js").display()
    );
    dir
}

/// What one Inspector CLI run printed.
struct Run {
    exit: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Its stdout as JSON, after checking it succeeded.
    fn json(&self) -> Value {
        assert_eq!(
            self.exit,
            Some(0),
            "the Inspector CLI failed\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "the Inspector CLI printed no JSON ({e})\nstdout: {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `node cli.js --cli URL --transport http ARGS...` from the Inspector
/// CLI's build folder, in its own process group (cli.js spawns a second
/// node), killing the group after `RUN_TIMEOUT`.
fn inspector(mcphop: &Mcphop, args: &[&str]) -> Run {
    inspector_over(mcphop, "http", args)
}

/// As `inspector`, over `transport` (`http`: `/mcp`; `sse`: `/sse`).
fn inspector_over(mcphop: &Mcphop, transport: &str, args: &[&str]) -> Run {
    let dir = inspector_build_dir();
    let url = match transport {
        "sse" => format!("http://127.0.0.1:{}/sse", mcphop.port),
        _ => mcphop.url(),
    };
    let mut child = Command::new("node")
        .arg(dir.join("cli.js"))
        .arg("--cli")
        .arg(url)
        .args(["--transport", transport])
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn node (the Inspector CLI)");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            panic!(
                "the Inspector CLI did not finish within {RUN_TIMEOUT:?}\nmcphop log:\n{}",
                mcphop.log_text()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        exit,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn start() -> Mcphop {
    Mcphop::start(&[], &[example_server().display().to_string()])
}

#[test]
fn inspector_lists_the_example_tools() {
    let mcphop = start();
    let result = inspector(&mcphop, &["--method", "tools/list"]).json();
    let names: Vec<&str> = result["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools array: {result}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    for expected in ["echo", "pid", "progress", "sample"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let echo = result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tool| tool["name"] == "echo")
        .unwrap();
    assert_eq!(echo["inputSchema"]["required"][0], "message", "{echo}");
}

#[test]
fn inspector_calls_echo() {
    calls_echo("http");
}

#[test]
fn inspector_calls_echo_over_legacy_sse() {
    calls_echo("sse");
}

#[test]
fn inspector_lists_tools_over_legacy_sse() {
    let mcphop = start();
    let result = inspector_over(&mcphop, "sse", &["--method", "tools/list"]).json();
    let tools = result["tools"].as_array().map_or(0, Vec::len);
    assert!(tools >= 4, "{result}");
    // The Inspector's SSE stream was a legacy session, and it ended with it.
    let log = mcphop.log_text();
    assert!(
        common::eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("the client closed its legacy SSE stream")),
        "{log}"
    );
}

/// The Inspector over the legacy front door, through mcphop to legacy and
/// Streamable HTTP servers (server-everything in `sse` and `streamableHttp`
/// mode): its echo answers.
#[test]
fn inspector_over_legacy_sse_reaches_http_and_legacy_servers() {
    use upstream::{Kind, Server, Transport};
    for (transport, flag) in [
        (Transport::LegacySse, "--upstream-sse"),
        (Transport::Streamable, "--upstream"),
    ] {
        let server = Server::start_speaking(Kind::Everything, transport);
        let mcphop = Mcphop::start_args(&[flag.to_string(), server.url()]);
        let result = inspector_over(
            &mcphop,
            "sse",
            &[
                "--method",
                "tools/call",
                "--tool-name",
                "echo",
                "--tool-arg",
                "message=hi",
            ],
        )
        .json();
        assert_eq!(
            result["content"][0]["text"], "Echo: hi",
            "{transport:?}: {result}"
        );
    }
}

fn calls_echo(transport: &str) {
    let mcphop = start();
    let result = inspector_over(
        &mcphop,
        transport,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "echo",
            "--tool-arg",
            "message=hi",
        ],
    )
    .json();
    assert_eq!(result["isError"], false, "{result}");
    let content = result["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content array: {result}"));
    assert_eq!(content.len(), 1, "{result}");
    assert_eq!(content[0]["type"], "text", "{result}");
    assert_eq!(content[0]["text"], "hi", "{result}");
}

#[test]
fn inspector_reports_an_unknown_tool() {
    // The negative case: the example server answers an unknown tool with a
    // JSON-RPC error, which reaches the Inspector through mcphop and makes it
    // exit non-zero.
    let mcphop = start();
    let run = inspector(
        &mcphop,
        &["--method", "tools/call", "--tool-name", "no-such-tool"],
    );
    let text = format!("{}\n{}", run.stdout, run.stderr);
    assert_ne!(run.exit, Some(0), "an unknown tool did not fail: {text}");
    assert!(text.contains("Unknown tool: no-such-tool"), "{text}");
}
