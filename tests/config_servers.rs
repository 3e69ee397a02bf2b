//! `--config FILE` in the `mcpServers` format: three named servers in one
//! mcphop (the bundled example server over stdio, the default;
//! server-everything over stdio, with tools hidden; the Python SDK server
//! over Streamable HTTP, its URL's port from `${VAR}`), each served at
//! `/servers/NAME/mcp` (and `/servers/NAME/sse`) to the Python SDK clients
//! 1.x and 2.x and to the Inspector CLI; a hidden tool is absent from
//! `tools/list` and refused by `tools/call`; sessions stay on their
//! server's routes; `--check-config` reports every error with its place.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process
//! started here is killed by a guard when the test ends, pass or fail.

mod common;
#[path = "common/inspector.rs"]
mod inspector;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::path::PathBuf;
use std::process::Command;

use common::{example_server, server_everything, Mcphop, TempDir};
use inspector::{inspector_at, CALL_ECHO_HI};
use serde_json::{json, Value};
use upstream::raw::{answer, initialize_body, post, raw_session, session_header};
use upstream::{run_client_at, Server};

/// A config file in a fresh temp dir; removed with it.
struct ConfigFile {
    _dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn write(value: &Value) -> ConfigFile {
        let dir = TempDir::new("config");
        let text = serde_json::to_string_pretty(value).unwrap();
        let path = dir.write("mcp.json", &text);
        ConfigFile { _dir: dir, path }
    }

    fn path(&self) -> String {
        self.path.display().to_string()
    }
}

/// The three servers, the Python one at `${PY_PORT}`.
fn three_servers() -> Value {
    let everything = server_everything();
    json!({
        "mcpServers": {
            "example": {
                "command": example_server().display().to_string(),
                "default": true,
                "tools": {"deny": ["flood"]}
            },
            "everything": {
                "command": everything[0],
                "args": everything[1..],
                "tools": {"deny": ["get-env", "toggle-*"]}
            },
            "python": {
                "url": "http://127.0.0.1:${PY_PORT}/mcp",
                "transport": "streamable-http"
            }
        },
        "mcphop": {"log_level": "info"}
    })
}

/// mcphop with the three servers (the Python one started here).
fn start() -> (Mcphop, Server, ConfigFile) {
    let python = Server::python();
    let file = ConfigFile::write(&three_servers());
    let mcphop = Mcphop::start_with_env(
        &["--config".to_string(), file.path()],
        &[("PY_PORT", python.port.to_string())],
    );
    (mcphop, python, file)
}

fn url(mcphop: &Mcphop, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", mcphop.port)
}

#[test]
fn each_server_is_served_by_name_to_both_python_sdks() {
    let (mcphop, _python, _file) = start();
    for (name, server, echo) in [
        ("example", "mcphop-example", "hello from v{}"),
        (
            "everything",
            "mcp-servers/everything",
            "Echo: hello from v{}",
        ),
        ("python", "mcphop-py-http", "hello from v{}"),
    ] {
        for major in [1, 2] {
            let path = format!("/servers/{name}/mcp");
            let result = run_client_at(
                &mcphop,
                major,
                "--url",
                &url(&mcphop, &path),
                "basic",
                &["--echo-tool", "echo"],
            );
            let context = format!("{name} v{major}: {result}");
            assert_eq!(result["server"], server, "{context}");
            assert_eq!(
                result["echo"],
                echo.replace("{}", &major.to_string()),
                "{context}"
            );
        }
    }
    // The default server is also at /mcp, and at /sse for legacy clients.
    let result = run_client_at(&mcphop, 1, "--url", &mcphop.url(), "basic", &[]);
    assert_eq!(result["server"], "mcphop-example", "{result}");
    let legacy = run_client_at(
        &mcphop,
        1,
        "--sse-url",
        &url(&mcphop, "/servers/everything/sse"),
        "basic",
        &["--echo-tool", "echo"],
    );
    assert_eq!(legacy["server"], "mcp-servers/everything", "{legacy}");
}

#[test]
fn the_inspector_reaches_each_server_by_name() {
    let (mcphop, _python, _file) = start();
    for (name, echoed) in [
        ("example", "hi"),
        ("everything", "Echo: hi"),
        ("python", "hi"),
    ] {
        let result = inspector_at(
            &mcphop,
            "http",
            &format!("/servers/{name}/mcp"),
            &CALL_ECHO_HI,
        )
        .json();
        assert_eq!(result["content"][0]["text"], echoed, "{name}: {result}");
    }
}

#[test]
fn hidden_tools_are_not_listed_and_cannot_be_called() {
    let (mcphop, _python, _file) = start();
    let listed = inspector_at(
        &mcphop,
        "http",
        "/servers/everything/mcp",
        &["--method", "tools/list"],
    )
    .json();
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {listed}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert!(names.contains(&"echo"), "{names:?}");
    assert!(names.contains(&"get-sum"), "{names:?}");
    for hidden in [
        "get-env",
        "toggle-simulated-logging",
        "toggle-subscriber-updates",
    ] {
        assert!(!names.contains(&hidden), "{hidden} is listed: {names:?}");
    }
    let refused = inspector_at(
        &mcphop,
        "http",
        "/servers/everything/mcp",
        &["--method", "tools/call", "--tool-name", "get-env"],
    );
    let text = format!("{}\n{}", refused.stdout, refused.stderr);
    assert_ne!(refused.exit, Some(0), "a hidden tool was called: {text}");
    assert!(text.contains("Unknown tool: get-env"), "{text}");
    // The example server hides `flood` from a raw client too.
    let session = raw_session(&mcphop);
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "flood", "arguments": {}}})
    .to_string();
    let response = post(mcphop.port, &session_header(&session), &call);
    let error = answer(&response, 5).unwrap_or_else(|| panic!("{response:?}"));
    assert_eq!(error["error"]["code"], -32602, "{error}");
}

#[test]
fn a_session_is_reached_only_on_its_own_servers_routes() {
    let (mcphop, _python, _file) = start();
    let port = mcphop.port;
    let request = |path: &str, extra: &str, body: &str| {
        common::raw_exchange(
            port,
            format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let init = request("/servers/python/mcp", "", &initialize_body(1));
    assert_eq!(init.status, 200, "{init:?}");
    let session = init.header("mcp-session-id").expect("session").to_string();
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let elsewhere = request("/servers/example/mcp", &session_header(&session), ping);
    assert_eq!(elsewhere.status, 404, "{elsewhere:?}");
    let default = request("/mcp", &session_header(&session), ping);
    assert_eq!(default.status, 404, "{default:?}");
    let home = request("/servers/python/mcp", &session_header(&session), ping);
    assert_eq!(home.status, 200, "{home:?}");
    let unknown = request("/servers/nope/mcp", "", &initialize_body(1));
    assert_eq!(unknown.status, 404, "{unknown:?}");
}

/// Runs `mcphop --check-config FILE`: exit code and stderr.
fn check(file: &ConfigFile, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mcphop"))
        .args(["--check-config", &file.path()])
        .env_remove("PY_PORT")
        .envs(env.iter().copied())
        .output()
        .expect("run mcphop --check-config");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_good_file_and_lists_every_error_of_a_bad_one() {
    let good = ConfigFile::write(&three_servers());
    let (code, out, _) = check(&good, &[("PY_PORT", "3999")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 server"), "{out}");
    // The same file without PY_PORT names the variable and where it is.
    let (code, _, err) = check(&good, &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("mcpServers.python.url: the environment variable PY_PORT is not set"),
        "{err}"
    );
    let bad = ConfigFile::write(&json!({
        "mcpServers": {
            "both": {"command": "x", "url": "http://127.0.0.1:1/mcp"},
            "bad name": {"command": "x"},
            "sse": {"url": "http://127.0.0.1:1/sse", "transport": "websocket"}
        },
        "mcphop": {"max_sesions": 3}
    }));
    let (code, _, err) = check(&bad, &[]);
    assert_eq!(code, Some(1));
    for expected in [
        "mcpServers.both: give either command or url",
        "mcpServers.bad name: a server name",
        "mcpServers.sse.transport",
        "mcphop.max_sesions: unknown option",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // Starting with a broken file fails at once, naming the errors.
    let output = Command::new(env!("CARGO_BIN_EXE_mcphop"))
        .args(["--config", &bad.path()])
        .output()
        .expect("run mcphop");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("give either command or url"));
}
