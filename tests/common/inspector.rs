//! The MCP Inspector CLI (`@modelcontextprotocol/inspector-cli`, its
//! `mcp-inspector-cli --cli` entry point) as a test client, shared by the
//! tests that drive mcphop with it (`#[path = "common/inspector.rs"] mod
//! inspector;`). It reads its own version from `../package.json` relative
//! to its *working directory*, so it runs from inside its `build/` folder,
//! with absolute paths for everything else. A missing peer fails the test.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{peers_dir, run_bounded, Mcphop};
use serde_json::Value;

/// The Inspector CLI arguments that call the `echo` tool with `message=hi`.
pub const CALL_ECHO_HI: [&str; 6] = [
    "--method",
    "tools/call",
    "--tool-name",
    "echo",
    "--tool-arg",
    "message=hi",
];

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
pub struct Run {
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Its stdout as JSON, after checking it succeeded.
    pub fn json(&self) -> Value {
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
pub fn inspector(mcphop: &Mcphop, args: &[&str]) -> Run {
    inspector_over(mcphop, "http", args)
}

/// As `inspector`, over `transport` (`http`: `/mcp`; `sse`: `/sse`).
pub fn inspector_over(mcphop: &Mcphop, transport: &str, args: &[&str]) -> Run {
    let path = if transport == "sse" { "/sse" } else { "/mcp" };
    inspector_at(mcphop, transport, path, args)
}

/// As `inspector_over`, at `path` on mcphop's port.
pub fn inspector_at(mcphop: &Mcphop, transport: &str, path: &str, args: &[&str]) -> Run {
    let url = format!("http://127.0.0.1:{}{path}", mcphop.port);
    let mut all = vec![url.as_str(), "--transport", transport];
    all.extend_from_slice(args);
    run(&all, &|| mcphop.log_text())
}

/// `node cli.js --cli ARGS...`, as the Inspector's own command line takes
/// them (a config file of its own, a server it spawns).
pub fn inspector_raw(args: &[&str]) -> Run {
    run(args, &String::new)
}

/// Runs `node cli.js --cli ARGS...` from the Inspector CLI's build folder,
/// in its own process group (cli.js spawns a second node), killing the
/// group after `RUN_TIMEOUT`; `log` says what to show if it hangs.
fn run(args: &[&str], log: &dyn Fn() -> String) -> Run {
    let dir = inspector_build_dir();
    let mut command = Command::new("node");
    command
        .arg(dir.join("cli.js"))
        .arg("--cli")
        .args(args)
        .current_dir(&dir);
    let output = run_bounded(command, RUN_TIMEOUT);
    assert!(
        !output.timed_out,
        "the Inspector CLI did not finish within {RUN_TIMEOUT:?}\nmcphop log:\n{}",
        log()
    );
    Run {
        exit: output.exit,
        stdout: output.stdout,
        stderr: output.stderr,
    }
}
