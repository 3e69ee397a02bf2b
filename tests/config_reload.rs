//! SIGHUP reads the `--config` file again: sessions on an unchanged server
//! keep working; a removed server refuses new sessions while its open ones
//! finish; a new server serves at once; a broken file leaves everything as
//! it was, with the error logged.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process
//! started here is killed by a guard when the test ends, pass or fail.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use common::{eventually, example_server, raw_exchange, Mcphop, RawResponse, TempDir};
use serde_json::{json, Value};
use upstream::raw::{echo_text, initialize_body, session_header};

fn write(path: &PathBuf, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).expect("write the config");
}

fn example(tools: Value) -> Value {
    json!({"command": example_server().display().to_string(), "tools": tools})
}

fn post(port: u16, path: &str, extra: &str, body: &str) -> RawResponse {
    raw_exchange(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// A session on `/servers/NAME/mcp`: its id.
fn open(port: u16, name: &str) -> Result<String, RawResponse> {
    let path = format!("/servers/{name}/mcp");
    let init = post(port, &path, "", &initialize_body(1));
    if init.status != 200 {
        return Err(init);
    }
    let session = init
        .header("mcp-session-id")
        .unwrap_or_default()
        .to_string();
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    post(port, &path, &session_header(&session), initialized);
    Ok(session)
}

fn echo(port: u16, name: &str, session: &str, message: &str) -> RawResponse {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": message}}})
    .to_string();
    post(
        port,
        &format!("/servers/{name}/mcp"),
        &session_header(session),
        &body,
    )
}

#[test]
fn sighup_applies_the_new_file_and_a_broken_one_changes_nothing() {
    let dir = TempDir::new("reload");
    let path = dir.0.join("mcp.json");
    write(
        &path,
        &json!({"mcpServers": {
            "a": example(json!({})),
            "b": example(json!({})),
            "d": example(json!({}))
        }}),
    );
    let mcphop = Mcphop::start_args(&["--config".to_string(), path.display().to_string()]);
    let port = mcphop.port;
    let on_a = open(port, "a").expect("a session on a");
    let on_b = open(port, "b").expect("a session on b");
    let on_d = open(port, "d").expect("a session on d");

    // a unchanged, b removed, c new (echo hidden there), d changed (echo
    // hidden from now on).
    write(
        &path,
        &json!({"mcpServers": {
            "a": example(json!({})),
            "c": example(json!({"deny": ["echo"]})),
            "d": example(json!({"deny": ["echo"]}))
        }}),
    );
    mcphop.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("reloaded")),
        "{}",
        mcphop.log_text()
    );
    assert_eq!(
        echo_text(&echo(port, "a", &on_a, "still a"), 7).as_deref(),
        Some("still a"),
        "the unchanged server's session"
    );
    assert_eq!(
        echo_text(&echo(port, "b", &on_b, "still b"), 7).as_deref(),
        Some("still b"),
        "the removed server's open session finishes on it"
    );
    let refused = open(port, "b").expect_err("no new session on a removed server");
    assert_eq!(refused.status, 404, "{refused:?}");
    let on_c = open(port, "c").expect("a session on the new server");
    let hidden = echo(port, "c", &on_c, "hidden");
    assert!(hidden.body.contains("Unknown tool: echo"), "{hidden:?}");
    // A changed server: its open session keeps the old definition, a new
    // session gets the new one.
    assert_eq!(
        echo_text(&echo(port, "d", &on_d, "old d"), 7).as_deref(),
        Some("old d")
    );
    let new_d = open(port, "d").expect("a new session on the changed server");
    let hidden = echo(port, "d", &new_d, "hidden");
    assert!(hidden.body.contains("Unknown tool: echo"), "{hidden:?}");

    // A broken file: the error is logged, nothing changes.
    std::fs::write(&path, b"{ \"mcpServers\": ").expect("write");
    mcphop.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("not reloaded")),
        "{}",
        mcphop.log_text()
    );
    assert_eq!(
        echo_text(&echo(port, "a", &on_a, "after the broken file"), 7).as_deref(),
        Some("after the broken file")
    );
    assert!(open(port, "c").is_ok(), "c still serves");
    assert!(open(port, "a").is_ok(), "a still serves");
}
