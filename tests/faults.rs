//! Faults and lifecycle with raw HTTP: a child killed mid-request, a child
//! that will not exit, junk on stdout, an upstream that cannot start, idle
//! expiry, and graceful and forced shutdown.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn example() -> Vec<String> {
    vec![example_server().display().to_string()]
}

fn session_header(session: &str) -> String {
    format!("Mcp-Session-Id: {session}\r\n")
}

fn call(port: u16, session: &str, id: u64, tool: &str, arguments: &str) -> RawResponse {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"progressToken":"p{id}"}}}}}}"#
    );
    raw_exchange(port, &post_request(port, &session_header(session), &body))
}

fn child_pid(port: u16, session: &str) -> u32 {
    let response = call(port, session, 90, "pid", "{}");
    let messages = response.sse_messages();
    messages.last().unwrap()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Starts a request whose answer streams in; returns the connection after
/// its response head, and a reader over it.
fn start_streaming_call(
    port: u16,
    session: &str,
    id: u64,
    tool: &str,
    arguments: &str,
) -> BufReader<TcpStream> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"progressToken":"p{id}"}}}}}}"#
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(&post_request(port, &session_header(session), &body))
        .unwrap();
    BufReader::new(stream)
}

/// The field 5 (process group) of every process, with its pid.
fn processes_in_group(pgid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
        {
            found.push(pid);
        }
    }
    found
}

/// Reads a streaming call until its first progress event: the request is
/// in flight. Returns the line buffer for further reads.
fn wait_for_progress(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    while !line.contains("notifications/progress") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
    }
    line
}

#[test]
fn a_child_killed_mid_request_answers_with_an_error_within_a_second() {
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let pid = child_pid(proxy.port, &session);
    let mut reader = start_streaming_call(
        proxy.port,
        &session,
        5,
        "progress",
        r#"{"steps":200,"delay_ms":100}"#,
    );
    // Wait for the first progress event: the request is in flight.
    let mut line = wait_for_progress(&mut reader);
    let killed = Instant::now();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let mut error: Option<Value> = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            let message: Value = serde_json::from_str(data).unwrap();
            if message.get("error").is_some() {
                error = Some(message);
                break;
            }
        }
    }
    let elapsed = killed.elapsed();
    let error = error.expect("a JSON-RPC error for the pending request");
    assert_eq!(error["id"], 5);
    assert_eq!(error["error"]["code"], -32000);
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");

    // The session is gone; others are served as before.
    let after = call(proxy.port, &session, 6, "echo", r#"{"message":"x"}"#);
    assert_eq!(after.status, 404);
    let other = open_session(proxy.port);
    let response = call(proxy.port, &other, 7, "echo", r#"{"message":"still here"}"#);
    assert_eq!(
        response.sse_messages().last().unwrap()["result"]["content"][0]["text"],
        "still here"
    );
    assert!(eventually(Duration::from_secs(5), || proxy
        .log_text()
        .contains("killed by signal 9")));
}

#[test]
fn non_json_lines_on_stdout_are_skipped_and_logged() {
    let upstream = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "echo 'this is not json'; echo '[1,2]'; exec {}",
            example_server().display()
        ),
    ];
    let proxy = Mcphop::start(&[], &upstream);
    let session = open_session(proxy.port);
    let response = call(proxy.port, &session, 3, "echo", r#"{"message":"ok"}"#);
    let messages = response.sse_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["result"]["content"][0]["text"], "ok");
    let log = proxy.log_text();
    assert!(log.contains("this is not json"), "{log}");
    assert!(log.contains("not JSON-RPC"), "{log}");
}

#[test]
fn an_upstream_that_cannot_start_gets_502_and_mcphop_carries_on() {
    let proxy = Mcphop::start(&[], &["/nonexistent/mcp-server".to_string()]);
    let response = raw_exchange(proxy.port, &post_request(proxy.port, "", INITIALIZE));
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["id"], 1);
    assert!(response.header("mcp-session-id").is_none());
    let again = raw_exchange(proxy.port, &post_request(proxy.port, "", INITIALIZE));
    assert_eq!(again.status, 502);
}

#[test]
fn a_child_that_ignores_eof_and_sigterm_is_killed_with_its_group() {
    // The shell ignores SIGTERM and, once the server exits on EOF, lingers in
    // a `sleep` that ignores it too: only SIGKILL to the group ends both.
    let upstream = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("trap '' TERM; {}; sleep 600", example_server().display()),
    ];
    let proxy = Mcphop::start(&["--child-grace", "200ms"], &upstream);
    let session = open_session(proxy.port);
    let server_pid = child_pid(proxy.port, &session);
    let shell = children_of(proxy.pid());
    assert_eq!(shell.len(), 1);
    let group = shell[0].pid;
    assert!(processes_in_group(group).contains(&server_pid));
    let delete = format!(
        "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}\r\n",
        proxy.port,
        session_header(&session)
    );
    assert_eq!(raw_exchange(proxy.port, delete.as_bytes()).status, 200);
    assert!(
        eventually(Duration::from_secs(5), || processes_in_group(group)
            .is_empty()),
        "group {group} still has {:?}",
        processes_in_group(group)
    );
    assert!(eventually(Duration::from_secs(5), || children_of(
        proxy.pid()
    )
    .is_empty()));
    assert!(eventually(Duration::from_secs(5), || proxy
        .log_text()
        .contains("killed by signal 9")));
}

#[test]
fn idle_sessions_expire() {
    let proxy = Mcphop::start(&["--session-idle-timeout", "500ms"], &example());
    let session = open_session(proxy.port);
    let pid = child_pid(proxy.port, &session);
    assert!(eventually(Duration::from_secs(5), || !is_alive(pid)));
    let after = call(proxy.port, &session, 4, "echo", r#"{"message":"x"}"#);
    assert_eq!(after.status, 404);
    assert!(proxy.log_text().contains("idle timeout"));
}

#[test]
fn shutdown_lets_in_flight_requests_finish_then_exits_zero() {
    let mut proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let pid = child_pid(proxy.port, &session);
    let mut reader = start_streaming_call(
        proxy.port,
        &session,
        8,
        "progress",
        r#"{"steps":6,"delay_ms":100}"#,
    );
    let mut line = wait_for_progress(&mut reader);
    proxy.signal(libc::SIGTERM);
    let mut last: Option<Value> = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "0\r\n" {
            break;
        }
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            last = Some(serde_json::from_str(data).unwrap());
        }
        if last.as_ref().is_some_and(|m| m.get("id").is_some()) {
            break;
        }
    }
    let last = last.expect("the in-flight request was answered");
    assert_eq!(last["id"], 8);
    assert_eq!(
        last["result"]["content"][0]["text"], "done after 6 steps",
        "{last}"
    );
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!is_alive(pid));
    assert!(proxy.log_shows("shutdown complete"), "{}", proxy.log_text());
    // Nothing listens any more.
    assert!(TcpStream::connect(("127.0.0.1", proxy.port)).is_err());
}

#[test]
fn shutdown_grace_ends_requests_that_take_too_long() {
    let mut proxy = Mcphop::start(&["--shutdown-grace", "300ms"], &example());
    let session = open_session(proxy.port);
    let pid = child_pid(proxy.port, &session);
    let mut reader = start_streaming_call(
        proxy.port,
        &session,
        9,
        "progress",
        r#"{"steps":300,"delay_ms":100}"#,
    );
    let mut line = wait_for_progress(&mut reader);
    let signalled = Instant::now();
    proxy.signal(libc::SIGTERM);
    let mut error: Option<Value> = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            let message: Value = serde_json::from_str(data).unwrap();
            if message.get("error").is_some() {
                error = Some(message);
                break;
            }
        }
    }
    let error = error.expect("an error for the request cut off by shutdown");
    assert_eq!(error["id"], 9);
    assert_eq!(error["error"]["code"], -32010);
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(10));
    assert!(!is_alive(pid));
}

#[test]
fn a_second_signal_exits_at_once_and_leaves_no_child() {
    let mut proxy = Mcphop::start(&["--shutdown-grace", "30s"], &example());
    let session = open_session(proxy.port);
    let pid = child_pid(proxy.port, &session);
    let _reader = start_streaming_call(
        proxy.port,
        &session,
        11,
        "progress",
        r#"{"steps":300,"delay_ms":100}"#,
    );
    thread::sleep(Duration::from_millis(300));
    proxy.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    proxy.signal(libc::SIGINT);
    let code = proxy.wait_exit(Duration::from_secs(5));
    assert!(code.is_some(), "mcphop did not exit after a second signal");
    assert!(second.elapsed() < Duration::from_secs(2));
    assert!(eventually(Duration::from_secs(2), || !is_alive(pid)));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

#[test]
fn a_client_that_stops_reading_stalls_only_its_own_child() {
    const COUNT: usize = 400;
    const SIZE: usize = 64 * 1024;
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    // 25 MiB of notifications for a client that reads only the response head.
    let mut reader = start_streaming_call(
        proxy.port,
        &session,
        21,
        "flood",
        &format!(r#"{{"count":{COUNT},"size":{SIZE}}}"#),
    );
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    thread::sleep(Duration::from_millis(1500));

    // The loop still serves everyone else, promptly.
    let other = open_session(proxy.port);
    let started = Instant::now();
    let response = call(
        proxy.port,
        &other,
        22,
        "echo",
        r#"{"message":"unaffected"}"#,
    );
    assert_eq!(
        response.sse_messages().last().unwrap()["result"]["content"][0]["text"],
        "unaffected"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // And memory stays bounded: the flood waits in the child, not in mcphop.
    let rss = rss_kib(proxy.pid());
    assert!(
        rss < 16 * 1024,
        "mcphop holds {rss} KiB while a client stalls"
    );

    // Once the client reads, every message arrives, the result last.
    let mut progress = 0;
    let mut result: Option<Value> = None;
    while result.is_none() {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            let message: Value = serde_json::from_str(data).unwrap();
            if message.get("id").is_some() {
                result = Some(message);
            } else {
                progress += 1;
            }
        }
    }
    assert_eq!(progress, COUNT);
    assert_eq!(
        result.unwrap()["result"]["content"][0]["text"],
        format!("flooded {COUNT}")
    );
}
