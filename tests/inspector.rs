//! The MCP Inspector CLI (`@modelcontextprotocol/inspector-cli`, its
//! `mcp-inspector-cli --cli` entry point) talking Streamable HTTP
//! (`--transport http`) and the legacy HTTP+SSE transport (`--transport
//! sse`, mcphop's `/sse` front door) to mcphop, in front of the bundled
//! example server.
//!
//! The Inspector CLI runner is `tests/common/inspector.rs`. A missing peer
//! fails the test.

mod common;
#[path = "common/inspector.rs"]
mod inspector;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::time::Duration;

use common::{example_server, Mcphop};
use inspector::{inspector, inspector_over, CALL_ECHO_HI};

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
        let result = inspector_over(&mcphop, "sse", &CALL_ECHO_HI).json();
        assert_eq!(
            result["content"][0]["text"], "Echo: hi",
            "{transport:?}: {result}"
        );
    }
}

fn calls_echo(transport: &str) {
    let mcphop = start();
    let result = inspector_over(&mcphop, transport, &CALL_ECHO_HI).json();
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
