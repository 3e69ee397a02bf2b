//! Fault injection with real stdio children (issue 11): a child that
//! crashes mid-response, never answers `initialize`, floods stdout, writes a
//! 100 MiB line, closes stdout but keeps running, or forks grandchildren.
//! The child is `examples/fault_child.rs`; each session picks its fault in
//! `initialize` (`clientInfo.name` = `fault:<mode>`), so one mcphop serves a
//! faulty session beside a well-behaved one. Each test asserts the exact
//! answer of the faulty session's pending request, and that the other
//! session, opened before the fault, is still served by the same child.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `target/<profile>/examples/fault_child`, built by `cargo test`.
fn fault_child() -> Vec<String> {
    let path: PathBuf = example_server()
        .parent()
        .map(|dir| dir.join("fault_child"))
        .expect("examples directory");
    assert!(path.exists(), "{} is missing", path.display());
    vec![path.display().to_string()]
}

fn session_header(session: &str) -> String {
    format!("Mcp-Session-Id: {session}\r\n")
}

/// Opens a session whose child runs `mode`; returns the initialize
/// response (not checked) and the session id if any.
fn initialize_fault(port: u16, mode: &str) -> RawResponse {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"fault:{mode}","version":"0"}}}}}}"#
    );
    raw_exchange(port, &post_request(port, "", &body))
}

/// Opens a session whose child runs `mode` and completes the handshake.
fn open_fault_session(port: u16, mode: &str) -> String {
    let response = initialize_fault(port, mode);
    assert_eq!(response.status, 200, "{response:?}");
    let session = response.header("mcp-session-id").unwrap().to_string();
    assert_eq!(response.sse_messages().last().unwrap()["id"], 1);
    let initialized = raw_exchange(
        port,
        &post_request(
            port,
            &session_header(&session),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
    );
    assert_eq!(initialized.status, 202);
    session
}

fn call(port: u16, session: &str, id: u64, tool: &str, message: &str) -> RawResponse {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"message":"{message}"}}}}}}"#
    );
    raw_exchange(port, &post_request(port, &session_header(session), &body))
}

/// The one message of a call's answer that has an id; asserts there is
/// exactly one, and that it carries `id`.
fn the_answer(response: &RawResponse, id: u64) -> Value {
    assert_eq!(response.status, 200, "{response:?}");
    let answers: Vec<Value> = response
        .sse_messages()
        .into_iter()
        .filter(|message| message.get("id").is_some())
        .collect();
    assert_eq!(answers.len(), 1, "exactly one answer: {answers:?}");
    assert_eq!(answers[0]["id"], id, "{answers:?}");
    answers[0].clone()
}

fn text_of(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text result: {answer}"))
        .to_string()
}

/// The pid of a session's child (its `pid` tool).
fn child_pid(port: u16, session: &str) -> u32 {
    text_of(&the_answer(&call(port, session, 90, "pid", ""), 90))
        .parse()
        .unwrap()
}

/// The well-behaved session still answers, from the same child.
fn assert_still_served(port: u16, session: &str, pid: u32, id: u64) {
    let answer = the_answer(&call(port, session, id, "echo", "still here"), id);
    assert_eq!(text_of(&answer), "still here");
    assert_eq!(child_pid(port, session), pid);
}

fn delete(port: u16, session: &str) -> u16 {
    let request = format!(
        "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}\r\n",
        session_header(session)
    );
    raw_exchange(port, request.as_bytes()).status
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

fn wait_for_log(proxy: &Mcphop, text: &str) -> bool {
    eventually(Duration::from_secs(10), || proxy.log_text().contains(text))
}

fn start() -> Mcphop {
    Mcphop::start(&["--child-grace", "500ms"], &fault_child())
}

#[test]
fn a_child_that_crashes_mid_response_answers_one_error() {
    let proxy = start();
    let good = open_session(proxy.port);
    let good_pid = child_pid(proxy.port, &good);
    let bad = open_fault_session(proxy.port, "crash-mid-response");
    let response = call(proxy.port, &bad, 5, "anything", "x");
    let answer = the_answer(&response, 5);
    assert_eq!(answer["error"]["code"], -32000, "{answer}");
    // The half line was never passed on as a message.
    assert_eq!(response.sse_messages().len(), 1, "{response:?}");
    assert!(wait_for_log(&proxy, "exited with status 3"));
    assert_eq!(call(proxy.port, &bad, 6, "echo", "x").status, 404);
    assert_still_served(proxy.port, &good, good_pid, 7);
}

#[test]
fn a_child_that_never_answers_initialize_gets_an_error_at_the_spawn_timeout() {
    let proxy = Mcphop::start(
        &["--spawn-timeout", "700ms", "--child-grace", "200ms"],
        &fault_child(),
    );
    let good = open_session(proxy.port);
    let good_pid = child_pid(proxy.port, &good);
    let started = Instant::now();
    let response = initialize_fault(proxy.port, "silent-init");
    let elapsed = started.elapsed();
    let answer = the_answer(&response, 1);
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(wait_for_log(&proxy, "did not answer initialize"));
    // Its child is ended (it exits on stdin EOF); only the good one is left.
    assert!(eventually(Duration::from_secs(10), || {
        let children = children_of(proxy.pid());
        children.len() == 1 && children[0].pid == good_pid
    }));
    assert_still_served(proxy.port, &good, good_pid, 2);
}

#[test]
fn a_child_that_floods_stdout_costs_bounded_memory_and_still_answers() {
    let proxy = start();
    let good = open_session(proxy.port);
    let good_pid = child_pid(proxy.port, &good);
    let bad = open_fault_session(proxy.port, "flood");
    // Let the flood run: 128 MiB of unrelated notifications and garbage.
    assert!(
        eventually(Duration::from_secs(15), || proxy
            .log_text()
            .contains("flooded 128 MiB")),
        "the flood did not get going:\n{}",
        proxy.log_text()
    );
    let rss = status_kib(proxy.pid(), "VmRSS");
    assert!(rss < 32 * 1024, "mcphop holds {rss} KiB during a flood");
    // The flooding session's own requests are answered in the flood.
    let answer = the_answer(&call(proxy.port, &bad, 3, "echo", "in the flood"), 3);
    assert_eq!(text_of(&answer), "in the flood");
    assert_still_served(proxy.port, &good, good_pid, 4);
    assert_eq!(delete(proxy.port, &bad), 200);
    assert!(eventually(Duration::from_secs(10), || children_of(
        proxy.pid()
    )
    .len()
        == 1));
    let peak = status_kib(proxy.pid(), "VmHWM");
    eprintln!("RSS during the flood {rss} KiB, peak {peak} KiB");
    assert!(peak < 32 * 1024, "mcphop peaked at {peak} KiB");
}

#[test]
fn a_100_mib_line_is_skipped_without_buffering_it_and_the_request_times_out() {
    let proxy = Mcphop::start(
        &["--request-timeout", "4s", "--child-grace", "500ms"],
        &fault_child(),
    );
    let good = open_session(proxy.port);
    let good_pid = child_pid(proxy.port, &good);
    let bad = open_fault_session(proxy.port, "huge-line");
    let bad_pid = child_pid(proxy.port, &bad);
    let response = call(proxy.port, &bad, 5, "huge", "x");
    let answer = the_answer(&response, 5);
    // The line over --max-line (16 MiB by default) is dropped, so the
    // request is answered by its timeout.
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    assert!(wait_for_log(&proxy, "skipped a 1048576"));
    let peak = status_kib(proxy.pid(), "VmHWM");
    let rss = status_kib(proxy.pid(), "VmRSS");
    eprintln!("reading a 100 MiB line: peak RSS {peak} KiB, after {rss} KiB");
    // The framer gave back what it gathered before skipping.
    assert!(rss < 12 * 1024, "mcphop holds {rss} KiB after the line");
    assert!(
        peak < 48 * 1024,
        "mcphop peaked at {peak} KiB reading a 100 MiB line"
    );
    // The framing resumed after the line: the same child answers again.
    let answer = the_answer(&call(proxy.port, &bad, 6, "echo", "after"), 6);
    assert_eq!(text_of(&answer), "after");
    assert_eq!(child_pid(proxy.port, &bad), bad_pid);
    assert_still_served(proxy.port, &good, good_pid, 7);
}

#[test]
fn a_child_that_closes_stdout_but_runs_on_is_answered_and_killed() {
    let proxy = start();
    let good = open_session(proxy.port);
    let good_pid = child_pid(proxy.port, &good);
    let bad = open_fault_session(proxy.port, "close-stdout");
    let bad_pid = child_pid(proxy.port, &bad);
    let answer = the_answer(&call(proxy.port, &bad, 5, "close", "x"), 5);
    assert_eq!(answer["error"]["code"], -32000, "{answer}");
    // Its stdin was closed, then (still running) SIGTERM to its group one
    // --child-grace later ended it: reaped, no zombie.
    assert!(wait_for_log(&proxy, "killed by signal 15"));
    let log = proxy.log_text();
    let eof = log.find("stdin eof").expect("the child saw stdin close");
    assert!(eof < log.find("killed by signal 15").unwrap(), "{log}");
    assert!(!log.contains("killed by signal 9"), "{log}");
    assert!(eventually(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{bad_pid}"
    ))
    .exists()));
    assert_eq!(call(proxy.port, &bad, 6, "echo", "x").status, 404);
    assert_still_served(proxy.port, &good, good_pid, 7);
}

#[test]
fn grandchildren_die_with_their_session() {
    let proxy = start();
    let good = open_session(proxy.port);
    let good_pid = child_pid(proxy.port, &good);
    let bad = open_fault_session(proxy.port, "grandchildren");
    assert!(wait_for_log(&proxy, "grandchildren "));
    let log = proxy.log_text();
    let line = log
        .lines()
        .find_map(|line| line.split("grandchildren ").nth(1))
        .unwrap();
    let grandchildren: Vec<u32> = line
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert_eq!(grandchildren.len(), 2, "{line}");
    assert!(grandchildren.iter().all(|&pid| is_alive(pid)));
    assert_eq!(delete(proxy.port, &bad), 200);
    assert!(
        eventually(Duration::from_secs(10), || grandchildren
            .iter()
            .all(|&pid| !is_alive(pid))),
        "grandchildren {grandchildren:?} outlived their session"
    );
    assert!(eventually(Duration::from_secs(5), || children_of(
        proxy.pid()
    )
    .len()
        == 1));
    assert_still_served(proxy.port, &good, good_pid, 3);
}
