//! The order in which a session's child is ended: stdin closed first, then
//! SIGTERM one `--child-grace` later, then SIGKILL one more grace later only
//! for a child that outlives SIGTERM. The children are small python3 MCP
//! servers written by the test into a temporary directory: they answer
//! `initialize`, and record in a file, with wall-clock times, stdin's EOF and
//! every SIGTERM they get.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const GRACE_SECS: f64 = 1.0;

const CHILD: &str = r#"
import json, os, signal, sys, time
record, mode = sys.argv[1], sys.argv[2]
def note(what):
    with open(record, "a") as f:
        f.write("%s %.3f\n" % (what, time.time()))
def on_term(signum, frame):
    note("term")
    if mode == "exit":
        os._exit(7)
signal.signal(signal.SIGTERM, on_term)
note("start")
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("method") == "initialize":
        out = {"jsonrpc": "2.0", "id": msg["id"], "result": {
            "protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {}, "serverInfo": {"name": "recorder", "version": "0"}}}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
note("eof")
deadline = time.time() + 30
while time.time() < deadline:
    time.sleep(0.02)
note("timeout")
"#;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A fresh temporary directory holding the child script, and where the
/// child records.
fn setup(tag: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(&format!("child-signals-{tag}"));
    dir.write("child.py", CHILD);
    let record = dir.0.join("record");
    (dir, record)
}

/// The recorded (event, time) pairs.
fn record(path: &Path) -> Vec<(String, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(what, at)| (what.to_string(), at.parse().unwrap()))
        .collect()
}

fn delete(port: u16, session: &str) -> u16 {
    let request = format!(
        "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nMcp-Session-Id: {session}\r\n\r\n"
    );
    raw_exchange(port, request.as_bytes()).status
}

/// Starts mcphop in front of the recorder in `mode`, opens a session and
/// ends it with DELETE; the recorder's pid, the DELETE's time and mcphop.
fn end_session(mode: &str, record_path: &Path, dir: &Path) -> (Mcphop, u32, f64) {
    let upstream = vec![
        "python3".to_string(),
        dir.join("child.py").display().to_string(),
        record_path.display().to_string(),
        mode.to_string(),
    ];
    let proxy = Mcphop::start(&["--child-grace", "1s"], &upstream);
    let session = open_session(proxy.port);
    let children = children_of(proxy.pid());
    assert_eq!(children.len(), 1, "{children:?}");
    let pid = children[0].pid;
    assert_eq!(record(record_path).len(), 1, "{:?}", record(record_path));
    let deleted = now();
    assert_eq!(delete(proxy.port, &session), 200);
    (proxy, pid, deleted)
}

#[test]
fn a_child_sees_stdin_close_then_sigterm_one_grace_later_and_never_sigkill() {
    let (dir, path) = setup("exit");
    let (proxy, pid, deleted) = end_session("exit", &path, &dir.0);
    assert!(
        eventually(Duration::from_secs(10), || !is_alive(pid)),
        "the child outlived SIGTERM"
    );
    assert!(eventually(Duration::from_secs(5), || proxy
        .log_text()
        .contains("exited with status 7")));
    let events = record(&path);
    let names: Vec<&str> = events.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(names, ["start", "eof", "term"], "{events:?}");
    let eof = events[1].1 - deleted;
    let term = events[2].1 - events[1].1;
    assert!(eof < 0.5, "stdin closed {eof:.3}s after DELETE");
    assert!(
        (GRACE_SECS - 0.1..GRACE_SECS + 0.6).contains(&term),
        "SIGTERM {term:.3}s after EOF, grace {GRACE_SECS}s"
    );
    // It exited on TERM (status 7, its own exit): no SIGKILL was sent.
    let log = proxy.log_text();
    assert!(!log.contains("killed by signal"), "{log}");
    assert!(children_of(proxy.pid()).is_empty());
}

#[test]
fn a_child_that_ignores_sigterm_is_sigkilled_two_graces_after_stdin_closes() {
    let (dir, path) = setup("ignore");
    let (proxy, pid, deleted) = end_session("ignore", &path, &dir.0);
    assert!(
        eventually(Duration::from_secs(10), || !is_alive(pid)),
        "the child was never killed"
    );
    let died = now() - deleted;
    assert!(eventually(Duration::from_secs(5), || proxy
        .log_text()
        .contains("killed by signal 9")));
    let events = record(&path);
    let names: Vec<&str> = events.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(names, ["start", "eof", "term"], "{events:?}");
    let term = events[2].1 - events[1].1;
    assert!(
        (GRACE_SECS - 0.1..GRACE_SECS + 0.6).contains(&term),
        "SIGTERM {term:.3}s after EOF"
    );
    assert!(
        (2.0 * GRACE_SECS - 0.1..2.0 * GRACE_SECS + 1.0).contains(&died),
        "killed {died:.3}s after DELETE, expected two graces"
    );
    assert!(children_of(proxy.pid()).is_empty());
}
