//! The hostile-input battery of issue 11, slow and stalled peers: raw
//! sockets against the real binary, each case asserting the exact answer
//! a careful proxy gives: slowloris heads (408 after the head timeout, and
//! none for idle connections), a child line of exactly `--max-line` whose
//! CRLF arrives in two reads, upstream statuses that cannot be relayed
//! (502), and a client that never reads its stream (only its own child
//! stalls, memory stays bounded, other sessions are served).
//!
//! Framing, bodies, ids, sessions and pipelining are in
//! `tests/hostile_input.rs`; the shared helpers in `tests/common/hostile.rs`.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::{BufReader, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hostile::*;
use serde_json::Value;

#[test]
fn slowloris_heads_get_408_after_the_head_timeout() {
    let proxy = start(&["--head-timeout", "1s"]);
    let port = proxy.port;
    // A head trickled a field at a time: the timeout counts from its first
    // byte, so trickling does not extend it.
    let mut stream = connect(port);
    let started = Instant::now();
    stream.write_all(b"POST /mcp HTTP/1.1\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(5) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                // Still open: one more field.
                if stream.write_all(b"X-Slow: 1\r\n").is_err() {
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(text.contains(r#""code":-32600"#), "{text}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "408 after {elapsed:?}"
    );

    // Empty lines before a request line count as head bytes too.
    let mut stream = connect(port);
    let started = Instant::now();
    stream.write_all(b"\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_buffered_response(&mut reader);
    assert_error(&response, 408, -32600, &Value::Null, "empty lines only");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_closed(&mut reader, "empty lines only");

    // A connection that sent nothing, and one idle between requests, are
    // not heads in progress; they get no 408.
    let session = open_session(port);
    let mut idle = connect(port);
    idle.write_all(&post_request(
        port,
        &session_header(&session),
        &tools_call(1, "a"),
    ))
    .unwrap();
    let mut reader = BufReader::new(idle);
    assert_eq!(echoed(&read_buffered_response(&mut reader)), "a");
    thread::sleep(Duration::from_millis(1500));
    reader
        .get_mut()
        .write_all(&post_request(
            port,
            &session_header(&session),
            &tools_call(2, "b"),
        ))
        .unwrap();
    assert_eq!(echoed(&read_buffered_response(&mut reader)), "b");
}

/// A child whose answer to `initialize` is one line of exactly `max` bytes
/// (padded with JSON whitespace), written as the line and its CR, then,
/// after a pause, the LF: mcphop reads the CR and the LF in two reads.
fn split_crlf_child(max: usize) -> Vec<String> {
    let head = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"crlf","version":"0"}}"#;
    let answer = format!("{head}{}}}", " ".repeat(max - head.len() - 1));
    assert_eq!(answer.len(), max);
    let script = format!(
        "IFS= read -r line; printf '%s\\r' '{answer}'; sleep 0.3; printf '\\n'; exec cat >/dev/null"
    );
    vec!["sh".to_string(), "-c".to_string(), script]
}

#[test]
fn a_child_line_of_exactly_max_line_passes_when_its_crlf_is_split() {
    const MAX: usize = 512;
    let proxy = Mcphop::start(
        &["--max-line", &MAX.to_string(), "--spawn-timeout", "3s"],
        &split_crlf_child(MAX),
    );
    let response = raw_exchange(proxy.port, &post_request(proxy.port, "", INITIALIZE));
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.header("mcp-session-id").is_some(), "{response:?}");
    let messages = response.sse_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["id"], 1);
    assert_eq!(messages[0]["result"]["serverInfo"]["name"], "crlf");
    let log = proxy.log_text();
    assert!(!log.contains("over --max-line"), "{log}");
}

/// An HTTP upstream that answers every request on 127.0.0.1 with the
/// same raw bytes, then closes; it serves `count` connections.
fn canned_upstream(answer: &'static [u8], count: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            // Reads the head and its Content-Length body, then answers.
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = stream.write_all(answer);
        }
    });
    port
}

#[test]
fn upstream_statuses_that_cannot_be_relayed_are_502() {
    // A stateless-era request passes straight through to an HTTP upstream,
    // its answer relayed as it comes: the path that writes the upstream's
    // own status. A status under 100 is no status, and a 204 or 304 carries
    // no answer (nor may it start a chunked stream): each is 502 with a
    // JSON-RPC error, and mcphop goes on serving.
    let discover = r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#;
    let cases: [(&str, &'static [u8]); 5] = [
        ("status 000", b"HTTP/1.1 000 X\r\nContent-Length: 0\r\n\r\n"),
        (
            "status 099",
            b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\n{}",
        ),
        ("204", b"HTTP/1.1 204 No Content\r\n\r\n"),
        (
            "304",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            "100 then 204",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ),
    ];
    for (case, canned) in cases {
        let upstream = canned_upstream(canned, 4);
        let proxy = Mcphop::start_http(&[], &format!("http://127.0.0.1:{upstream}/mcp"));
        let port = proxy.port;
        for _ in 0..2 {
            let response = raw_exchange(
                port,
                &post_request(port, "MCP-Protocol-Version: 2026-07-28\r\n", discover),
            );
            assert_eq!(response.status, 502, "{case}: {response:?}");
            let body = response.json();
            assert_eq!(body["error"]["code"], -32000, "{case}: {body}");
            assert_eq!(body["id"], Value::Null, "{case}: {body}");
            assert_eq!(body["jsonrpc"], "2.0", "{case}: {body}");
        }
    }
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

/// Bytes a process has written, from /proc/PID/io.
fn written(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// The syscall a process is blocked in, and its first argument, from
/// /proc/PID/syscall (x86-64 numbering: 1 is write).
fn blocked_in(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let mut fields = text.split_whitespace();
    let number = fields.next()?.parse().ok()?;
    let first = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    Some((number, first))
}

#[test]
fn a_client_that_never_reads_its_stream_stalls_only_its_own_child() {
    const COUNT: usize = 3200;
    const SIZE: usize = 64 * 1024; // 200 MiB in all
                                   // A short grace, so the flood the child is still writing does not
                                   // hold up mcphop's exit at the end of the test.
    let proxy = start(&["--shutdown-grace", "1s"]);
    let port = proxy.port;
    let session = open_session(port);
    let s = session_header(&session);
    let pid_answer = raw_exchange(
        port,
        &post_request(
            port,
            &s,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pid"}}"#,
        ),
    );
    let child: u32 = echoed(&pid_answer).parse().expect("the child's pid");

    // Asks for a 200 MiB flood and never reads a byte of the answer.
    let flood = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"flood","arguments":{{"count":{COUNT},"size":{SIZE}}},"_meta":{{"progressToken":"f"}}}}}}"#
    );
    let mut stalled = connect(port);
    stalled.write_all(&post_request(port, &s, &flood)).unwrap();

    // The flood stops advancing once the socket and pipe buffers are full
    // (the kernel grows socket buffers for a while, so wait until it holds
    // still), with the child blocked writing its stdout: mcphop stopped
    // reading it.
    let mut last = written(child);
    let steady = eventually(Duration::from_secs(15), || {
        thread::sleep(Duration::from_millis(500));
        let now = written(child);
        let still = now == last;
        last = now;
        still && blocked_in(child) == Some((1, 1))
    });
    assert!(
        steady,
        "the flood did not stop: {last} bytes written, blocked in {:?}",
        blocked_in(child)
    );
    const BOUND: u64 = 16 * 1024 * 1024;
    assert!(
        last < BOUND,
        "the child wrote {last} bytes of a 200 MiB flood"
    );
    // mcphop holds a bounded amount, far below the flood.
    let rss = rss_kib(proxy.pid());
    assert!(
        rss < 32 * 1024,
        "mcphop holds {rss} KiB for a client that never reads"
    );

    // Every other session is served, promptly.
    let other = open_session(port);
    let started = Instant::now();
    let response = raw_exchange(
        port,
        &post_request(port, &session_header(&other), &tools_call(3, "unaffected")),
    );
    assert_eq!(echoed(&response), "unaffected");
    assert!(started.elapsed() < Duration::from_secs(2));
    // And that did not set the flood going again.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(blocked_in(child), Some((1, 1)));
    let after = written(child);
    assert!(
        after < BOUND,
        "the child wrote {after} bytes of a 200 MiB flood"
    );
    drop(stalled);
}
