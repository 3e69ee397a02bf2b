//! A request half-sent when SIGTERM arrives (issue 11). The defined answer,
//! as nginx gives it on a graceful shutdown: idle keep-alive connections are
//! closed at once, but a request being read may finish arriving within
//! `--shutdown-grace` (its head and body timeouts still apply); once
//! complete it is answered `503` with `Connection: close` and JSON-RPC error
//! -32010, never processed, and mcphop waits for it before exiting. A
//! request still incomplete when the grace ends gets that same 503 then.
//!
//! "mcphop has read the partial request" is observed, not waited for:
//! the server side of the connection has nothing left in its receive
//! queue (`/proc/net/tcp`).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;

/// The receive queue of mcphop's side of the connection from `client`
/// (local port `server`), from /proc/net/tcp; None if not listed.
fn server_rx_queue(server: u16, client: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |field: &str| {
            field
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
        };
        if fields.len() > 4 && port(fields[1]) == Some(server) && port(fields[2]) == Some(client) {
            let rx = fields[4].split(':').nth(1)?;
            return u64::from_str_radix(rx, 16).ok();
        }
    }
    None
}

/// Connects and sends `part`; returns once mcphop has read all of it.
fn send_part(port: u16, part: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(part).unwrap();
    let client = stream.local_addr().unwrap().port();
    assert!(
        eventually(Duration::from_secs(10), || server_rx_queue(port, client)
            == Some(0)),
        "mcphop did not read the partial request"
    );
    stream
}

fn ping_request(port: u16) -> Vec<u8> {
    post_request(port, "", r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#)
}

/// Asserts the shutdown answer, then the close.
fn assert_shutdown_answer(stream: TcpStream, context: &str) {
    let mut reader = BufReader::new(stream);
    let response = read_buffered_response(&mut reader);
    assert_eq!(response.status, 503, "{context}: {response:?}");
    assert_eq!(response.header("connection"), Some("close"), "{context}");
    assert_eq!(response.json()["error"]["code"], -32010, "{context}");
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "{context}: more after the answer: {rest:?}"
    );
}

/// SIGTERM with `stream`'s request half-sent; once the shutdown began (the
/// listener closed) and while the request is still being read, `rest` goes
/// out, and the answer is the shutdown's 503 and a close.
fn finish_after_sigterm(proxy: &Mcphop, mut stream: TcpStream, rest: &[u8], context: &str) {
    proxy.signal(libc::SIGTERM);
    let closed = || TcpStream::connect(("127.0.0.1", proxy.port)).is_err();
    assert!(eventually(Duration::from_secs(5), closed), "{context}");
    thread::sleep(Duration::from_millis(300));
    stream.write_all(rest).unwrap();
    assert_shutdown_answer(stream, context);
}

#[test]
fn a_head_half_sent_at_sigterm_may_finish_and_is_answered_503_close() {
    let mut proxy = Mcphop::start(
        &["--shutdown-grace", "10s"],
        &[example_server().display().to_string()],
    );
    let request = ping_request(proxy.port);
    let split = 30; // inside the head
    let stream = send_part(proxy.port, &request[..split]);
    finish_after_sigterm(&proxy, stream, &request[split..], "head half-sent");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(proxy.log_shows("shutdown complete"), "{}", proxy.log_text());
}

#[test]
fn a_body_half_sent_at_sigterm_may_finish_and_is_answered_503_close() {
    let mut proxy = Mcphop::start(
        &["--shutdown-grace", "10s"],
        &[example_server().display().to_string()],
    );
    // An open session: it ends at once on SIGTERM (nothing in flight).
    let _session = open_session(proxy.port);
    let request = ping_request(proxy.port);
    let split = request.len() - 10; // inside the body
    let stream = send_part(proxy.port, &request[..split]);
    finish_after_sigterm(&proxy, stream, &request[split..], "body half-sent");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(children_of(proxy.pid()).is_empty());
}

#[test]
fn a_request_still_incomplete_when_the_grace_ends_gets_503_and_mcphop_exits() {
    let mut proxy = Mcphop::start(
        &["--shutdown-grace", "500ms", "--head-timeout", "30s"],
        &[example_server().display().to_string()],
    );
    let request = ping_request(proxy.port);
    let stream = send_part(proxy.port, &request[..30]);
    // And an idle keep-alive connection, which is closed at once.
    let mut idle = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    idle.write_all(&post_request(proxy.port, "", INITIALIZE))
        .unwrap();
    let mut idle = BufReader::new(idle);
    assert_eq!(read_buffered_response(&mut idle).status, 200);
    proxy.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut rest).unwrap(),
        0,
        "idle: closed, no answer"
    );
    assert_shutdown_answer(stream, "incomplete at the end of the grace");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(proxy.log_shows("still arriving answered 503"));
}
