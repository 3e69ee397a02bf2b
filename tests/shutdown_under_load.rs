//! Graceful shutdown under load: SIGTERM while 100 requests are in flight
//! (100 sessions, each in the example server's `progress` tool) lets every
//! one finish with its normal answer within `--shutdown-grace`, refuses new
//! connections meanwhile (the listener is closed), ends every child, and
//! exits 0.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const IN_FLIGHT: usize = 100;
const STEPS: u64 = 10;
const DELAY_MS: u64 = 200;

/// Sends a progress call on `session` and reads its SSE answer: reports
/// on `started` at the first progress event, returns the final message.
fn progress_call(
    port: u16,
    session: &str,
    id: usize,
    started: mpsc::Sender<()>,
) -> Result<Value, String> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"progress","arguments":{{"steps":{STEPS},"delay_ms":{DELAY_MS}}},"_meta":{{"progressToken":"p{id}"}}}}}}"#
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(&post_request(
            port,
            &format!("Mcp-Session-Id: {session}\r\n"),
            &body,
        ))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut started = Some(started);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(format!("call {id}: stream ended without an answer")),
            Ok(_) => {}
            Err(e) => return Err(format!("call {id}: {e}")),
        }
        let Some(data) = line.trim_end().strip_prefix("data: ") else {
            continue;
        };
        let message: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        if message["method"] == "notifications/progress" {
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
        }
        if message.get("id").is_some() {
            return Ok(message);
        }
    }
}

#[test]
fn sigterm_with_100_requests_in_flight_finishes_them_all_and_exits_zero() {
    let mut proxy = Mcphop::start(
        &["--shutdown-grace", "20s", "--max-sessions", "200"],
        &[example_server().display().to_string()],
    );
    let port = proxy.port;
    let sessions: Vec<String> = (0..IN_FLIGHT).map(|_| open_session(port)).collect();
    assert_eq!(children_of(proxy.pid()).len(), IN_FLIGHT);
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    for (n, session) in sessions.into_iter().enumerate() {
        let started = started_tx.clone();
        let done = done_tx.clone();
        thread::spawn(move || {
            let _ = done.send((n + 1000, progress_call(port, &session, n + 1000, started)));
        });
    }
    drop(done_tx);
    for _ in 0..IN_FLIGHT {
        started_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every call in flight");
    }
    let signalled = Instant::now();
    proxy.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(200));

    // The listener is closed at once: a new connection is refused.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    let mut answered = 0;
    let mut failures = Vec::new();
    while answered + failures.len() < IN_FLIGHT {
        let (id, outcome) = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every call ends");
        match outcome {
            Ok(message) => {
                let text = &message["result"]["content"][0]["text"];
                if message["id"] == id && text == &format!("done after {STEPS} steps") {
                    answered += 1;
                } else {
                    failures.push(format!("{id}: {message}"));
                }
            }
            Err(why) => failures.push(why),
        }
    }
    assert!(failures.is_empty(), "{failures:?}\n{}", proxy.log_text());
    assert_eq!(answered, IN_FLIGHT);
    let code = proxy.wait_exit(Duration::from_secs(25));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{}", proxy.log_text());
    assert!(took < Duration::from_secs(20), "exit took {took:?}");
    assert!(children_of(proxy.pid()).is_empty());
    assert!(proxy.log_shows("shutdown complete"), "{}", proxy.log_text());
}
