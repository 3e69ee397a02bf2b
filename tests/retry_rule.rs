//! The upstream retry rule end to end, against a fake upstream controlled
//! byte by byte (`common/scripted_upstream.rs`): a request on a REUSED pooled
//! connection that breaks before any response byte is sent again once, on a
//! fresh connection, when nothing of it was written or its method is
//! replayable; a `tools/call` whose bytes were written is never sent again.
//!
//! "Reused" is made real: the session's earlier requests ride one pooled
//! keep-alive connection (idle timeout 30 s), and each test checks that the
//! request under test went out on that connection's third or later request.
//! Everything is on 127.0.0.1; mcphop is stopped (SIGSTOP) for at most a few
//! hundred milliseconds and always continued.

mod common;
#[path = "common/scripted_upstream.rs"]
mod scripted;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{post_request, read_buffered_response, Mcphop, RawResponse};
use scripted::{Action, Scripted};
use serde_json::{json, Value};
use upstream::fake::{FakeReply, FAKE_PROTOCOL};
use upstream::raw::{answer, echo_body, figure, raw_session, session_header, shutdown_summary};

fn tools() -> Value {
    json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]})
}

/// The script: tools/list gets `tools()`; a message whose body contains
/// `marker` gets `on_marker`; everything else the default answer.
fn script(marker: &'static str, on_marker: fn() -> Action) -> Scripted {
    Scripted::start(move |request, _| {
        let message = request.json();
        if !marker.is_empty() && request.body.contains(marker) {
            return on_marker();
        }
        if message["method"] == "tools/list" {
            return Action::Reply(FakeReply::json(
                200,
                json!({"jsonrpc": "2.0", "id": message["id"], "result": tools()}),
            ));
        }
        Action::Default
    })
}

fn start(fake: &Scripted) -> Mcphop {
    Mcphop::start_http(
        &[
            "--pool-idle-timeout",
            "30s",
            "--pool-max-idle-per-host",
            "4",
            "--log-level",
            "debug",
            // The fake's connections are counted: no health probe among them.
            "--health-interval",
            "0",
        ],
        &fake.url(),
    )
}

/// A keep-alive client connection to mcphop for one session.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    port: u16,
    headers: String,
}

impl Client {
    fn connect(port: u16, session: &str) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            port,
            headers: format!(
                "{}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n",
                session_header(session)
            ),
        }
    }

    fn send(&mut self, body: &str) {
        self.writer
            .write_all(&post_request(self.port, &self.headers, body))
            .expect("write");
    }

    fn read(&mut self) -> RawResponse {
        read_buffered_response(&mut self.reader)
    }

    /// Nothing more arrives within `wait` (the connection may close).
    fn assert_silent(&mut self, wait: Duration) {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut extra = Vec::new();
        let _ = self.reader.read_to_end(&mut extra);
        assert!(
            extra.is_empty(),
            "more after the one answer: {:?}",
            String::from_utf8_lossy(&extra)
        );
    }
}

fn list_body(id: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}).to_string()
}

/// Opens a session and answers one tools/list on a keep-alive client
/// connection; checks that everything so far rode one upstream connection.
fn warm_up(mcphop: &Mcphop, fake: &Scripted) -> Client {
    let session = raw_session(mcphop);
    let mut client = Client::connect(mcphop.port, &session);
    client.send(&list_body(2));
    let first = client.read();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(answer(&first, 2).expect("answer 2")["result"], tools());
    assert_eq!(
        fake.accepted(),
        1,
        "the warm-up did not ride one pooled connection:\n{}",
        fake.describe()
    );
    assert!(fake.seen().len() >= 3, "{}", fake.describe());
    client
}

/// The retry counter of mcphop's pool summary at shutdown.
fn retries_and_reuses(mcphop: &mut Mcphop) -> (u64, u64) {
    let (code, summary) = shutdown_summary(mcphop);
    assert_eq!(code, Some(0), "{}", mcphop.log_text());
    (figure(&summary, "retries"), figure(&summary, "reuses"))
}

/// (a) The reused connection is reset by the upstream just as mcphop takes
/// it for a request, before a byte of the request is written. To place the
/// reset in that window deterministically, mcphop is stopped (SIGSTOP)
/// while, in this order, the request arrives, 1100 other client connections
/// each send one byte, and the upstream resets the pooled connection; then
/// it continues (SIGCONT). Its event loop takes at most 1024 events per poll,
/// in readiness order, so it handles the request and takes the idle pooled
/// connection before it polls the reset. mcphop checks a reused connection
/// with a peek at checkout, sees the reset there and sends the request on a
/// fresh connection instead (no write to the dead one, so the pool's retry
/// counter stays 0). The client gets the normal answer, and the upstream saw
/// the request exactly once, on the new connection.
#[test]
fn a_replayable_request_on_a_reused_connection_reset_before_writing_is_retried_once() {
    const FILLERS: usize = 1100;
    let fake = script("", || Action::Default);
    let mut mcphop = start(&fake);
    let mut client = warm_up(&mcphop, &fake);
    let before = fake.seen().len();
    let mut fillers: Vec<TcpStream> = (0..FILLERS)
        .map(|_| TcpStream::connect(("127.0.0.1", mcphop.port)).expect("filler"))
        .collect();
    // Every filler accepted and registered, every earlier event consumed;
    // and the pooled connection idle for over a second by the time the
    // request takes it, as the pool peeks only at a connection idle longer
    // than that (`DEFAULT_PEEK_AFTER_IDLE`): on a fast machine 500 ms here
    // left it idle some 750 ms, with no peek.
    thread::sleep(Duration::from_millis(1100));

    mcphop.signal(libc::SIGSTOP);
    client.send(&list_body(3));
    thread::sleep(Duration::from_millis(50));
    for filler in &mut fillers {
        filler.write_all(b"P").expect("filler byte");
    }
    thread::sleep(Duration::from_millis(50));
    fake.reset(0);
    thread::sleep(Duration::from_millis(50));
    mcphop.signal(libc::SIGCONT);

    let response = client.read();
    assert_eq!(response.status, 200, "{response:?}\n{}", mcphop.log_text());
    let message = answer(&response, 3).expect("answer 3");
    assert_eq!(
        message,
        json!({"jsonrpc": "2.0", "id": 3, "result": tools()})
    );
    let seen = fake.seen();
    let list3: Vec<_> = seen
        .iter()
        .filter(|s| s.request.json()["id"] == 3)
        .collect();
    assert_eq!(list3.len(), 1, "{}", fake.describe());
    assert_eq!(list3[0].request.conn, 1, "{}", fake.describe());
    assert_eq!(list3[0].on_conn, 0, "{}", fake.describe());
    assert_eq!(seen.len(), before + 1, "{}", fake.describe());
    assert_eq!(fake.accepted(), 2);
    client.assert_silent(Duration::from_millis(300));
    drop(fillers);
    let log = mcphop.log_text();
    assert!(
        log.contains("upstream connection 0 failed its peek"),
        "the reset was not caught at checkout:\n{log}"
    );
    assert!(!log.contains("retrying an upstream request"), "{log}");
    let (retries, reuses) = retries_and_reuses(&mut mcphop);
    assert_eq!(retries, 0);
    assert!(reuses >= 2, "reuses={reuses}");
}

/// (b) A tools/call written on a reused connection that the upstream closes
/// without a byte of answer is never sent again: the upstream saw it once,
/// and the client gets exactly one answer, 502 with JSON-RPC error -32000.
#[test]
fn a_written_tools_call_on_a_reused_connection_is_never_retried() {
    let fake = script("only-once", || Action::CloseSilently);
    let mut mcphop = start(&fake);
    let mut client = warm_up(&mcphop, &fake);
    let before = fake.seen().len();

    client.send(&echo_body(4, "only-once"));
    let response = client.read();
    assert_eq!(response.status, 502, "{response:?}\n{}", mcphop.log_text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{response:?}"
    );
    let message = response.json();
    assert_eq!(message["jsonrpc"], "2.0", "{message}");
    assert_eq!(message["id"], 4, "{message}");
    assert_eq!(message["error"]["code"], -32000, "{message}");
    assert!(message.get("result").is_none(), "{message}");
    // Time for a (wrong) second try to reach the upstream.
    thread::sleep(Duration::from_millis(500));
    client.assert_silent(Duration::from_millis(300));
    let seen = fake.seen();
    let calls: Vec<_> = seen
        .iter()
        .filter(|s| s.request.body.contains("only-once"))
        .collect();
    assert_eq!(calls.len(), 1, "{}", fake.describe());
    assert_eq!(calls[0].request.conn, 0, "{}", fake.describe());
    assert!(calls[0].on_conn >= 2, "not a reused connection");
    assert_eq!(seen.len(), before + 1, "{}", fake.describe());
    let (retries, reuses) = retries_and_reuses(&mut mcphop);
    assert_eq!(retries, 0);
    assert!(reuses >= 2, "reuses={reuses}");
}

/// The other written case: a tools/list written on a reused connection that
/// the upstream closes without answering IS sent again, once, on a fresh
/// connection (a listing is safe to repeat). The upstream closes that try
/// too, and a fresh connection's failure is not retried: the upstream saw the
/// request exactly twice, and the client gets one 502 JSON-RPC error.
#[test]
fn a_written_tools_list_on_a_reused_connection_is_retried_once() {
    let fake = script("\"id\":5", || Action::CloseSilently);
    let mut mcphop = start(&fake);
    let mut client = warm_up(&mcphop, &fake);
    let before = fake.seen().len();

    client.send(&list_body(5));
    let response = client.read();
    let seen = fake.seen();
    let tries: Vec<_> = seen
        .iter()
        .filter(|s| s.request.json()["id"] == 5)
        .collect();
    assert_eq!(tries.len(), 2, "{}", fake.describe());
    assert_eq!(tries[0].request.conn, 0);
    assert!(tries[0].on_conn >= 2, "not a reused connection");
    assert_eq!(tries[1].request.conn, 1);
    assert_eq!(seen.len(), before + 2, "{}", fake.describe());
    assert_eq!(response.status, 502, "{response:?}");
    let message = response.json();
    assert_eq!(message["id"], 5, "{message}");
    assert_eq!(message["error"]["code"], -32000, "{message}");
    client.assert_silent(Duration::from_millis(300));
    let (retries, _) = retries_and_reuses(&mut mcphop);
    assert_eq!(retries, 1);
}
