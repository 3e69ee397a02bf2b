//! HTTP upstream faults (issue 11), against a fake upstream controlled byte
//! by byte (`common/scripted_upstream.rs`): an upstream that resets the
//! connection mid-body, one that stalls mid-stream, and a client that
//! disconnects mid-stream, and answers that are not HTTP (a bad status
//! line, conflicting lengths, a head cut short). Each asserts the exact answer, that the request
//! reached the upstream once, and that mcphop goes on serving.
//!
//! An upstream closing an idle keep-alive socket just as it is reused is
//! `tests/retry_rule.rs` (a replayable request retried once, a written
//! `tools/call` never).

mod common;
#[path = "common/scripted_upstream.rs"]
mod scripted;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{eventually, post_request, Mcphop, RawResponse};
use scripted::{Action, Scripted};
use serde_json::Value;
use upstream::fake::FAKE_PROTOCOL;
use upstream::raw::{echo_body, echo_text, raw_session, session_header};

/// tools/call bodies holding `marker` get `on_marker`; the rest the
/// default answers.
fn script(marker: &'static str, on_marker: fn() -> Action) -> Scripted {
    Scripted::start(move |request, _| {
        if request.body.contains(marker) {
            on_marker()
        } else {
            Action::Default
        }
    })
}

fn headers(session: &str) -> String {
    format!(
        "{}MCP-Protocol-Version: {FAKE_PROTOCOL}\r\n",
        session_header(session)
    )
}

fn call(port: u16, session: &str, id: u64, message: &str) -> RawResponse {
    common::raw_exchange(
        port,
        &post_request(port, &headers(session), &echo_body(id, message)),
    )
}

/// How many requests the fake saw whose body holds `marker`.
fn seen_with(fake: &Scripted, marker: &str) -> usize {
    fake.seen()
        .iter()
        .filter(|seen| seen.request.body.contains(marker))
        .count()
}

/// The messages with an id in a response; asserts there is exactly one.
fn one_answer(response: &RawResponse, id: u64) -> Value {
    let with_id: Vec<Value> = response
        .sse_messages()
        .into_iter()
        .filter(|message| message.get("id").is_some())
        .collect();
    assert_eq!(with_id.len(), 1, "{response:?}");
    assert_eq!(with_id[0]["id"], id);
    with_id[0].clone()
}

/// A new session on the same mcphop is served, and so is an old one.
fn assert_goes_on(mcphop: &Mcphop, fake: &Scripted, old: &str, id: u64) {
    let fresh = raw_session(mcphop);
    let response = call(mcphop.port, &fresh, id, "fresh");
    assert_eq!(
        echo_text(&response, id).as_deref(),
        Some("fresh"),
        "{response:?}\n{}",
        fake.describe()
    );
    let response = call(mcphop.port, old, id + 1, "old");
    assert_eq!(
        echo_text(&response, id + 1).as_deref(),
        Some("old"),
        "{response:?}"
    );
}

#[test]
fn an_upstream_reset_mid_body_gives_one_error_and_the_call_is_not_retried() {
    let fake = script("reset-me", || Action::ResetMidBody { events: 2 });
    let mcphop = Mcphop::start_http(&[], &fake.url());
    let session = raw_session(&mcphop);
    let response = call(mcphop.port, &session, 5, "reset-me");
    // The stream had begun (two notifications relayed), so the error
    // arrives on it: HTTP 200, the events, then one JSON-RPC error.
    assert_eq!(response.status, 200, "{response:?}");
    let messages = response.sse_messages();
    let partial = messages
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .count();
    assert_eq!(partial, 2, "{messages:?}");
    let error = one_answer(&response, 5);
    assert_eq!(error["error"]["code"], -32000, "{error}");
    assert!(error.get("result").is_none());
    assert_eq!(seen_with(&fake, "reset-me"), 1, "{}", fake.describe());
    assert_goes_on(&mcphop, &fake, &session, 6);
    // Never sent again, even later.
    assert_eq!(seen_with(&fake, "reset-me"), 1, "{}", fake.describe());
}

#[test]
fn a_malformed_upstream_answer_is_named_as_such_and_not_retried() {
    // Each answer is broken its own way; the 502's text says which, and
    // never that the upstream closed the connection (it answered).
    for (marker, bytes, why) in [
        (
            "bad-status",
            &b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}"[..],
            "malformed upstream response: invalid status code",
        ),
        (
            "bad-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            "malformed upstream response: conflicting Content-Length values",
        ),
        (
            "cut-head",
            b"HTTP/1.1 200 OK\r\nContent-Ty",
            "the upstream closed the connection: upstream response truncated",
        ),
    ] {
        let fake = Scripted::start(move |request, _| {
            if request.body.contains(marker) {
                Action::Raw(bytes)
            } else {
                Action::Default
            }
        });
        let mcphop = Mcphop::start_http(&[], &fake.url());
        let session = raw_session(&mcphop);
        let response = call(mcphop.port, &session, 5, marker);
        assert_eq!(response.status, 502, "{marker}: {response:?}");
        let error: Value = serde_json::from_str(&response.body).expect("JSON");
        assert_eq!(error["id"], 5, "{marker}: {error}");
        assert_eq!(
            error["error"]["message"],
            format!("Bad Gateway: {why}"),
            "{marker}"
        );
        assert_eq!(seen_with(&fake, marker), 1, "{}", fake.describe());
        assert_goes_on(&mcphop, &fake, &session, 6);
    }
}

#[test]
fn an_upstream_stalled_mid_stream_is_answered_by_the_request_timeout() {
    let fake = script("stall-me", || Action::StallMidBody { events: 1 });
    let mut mcphop = Mcphop::start_http(&["--request-timeout", "1s"], &fake.url());
    let session = raw_session(&mcphop);
    let started = Instant::now();
    let response = call(mcphop.port, &session, 5, "stall-me");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 200, "{response:?}");
    let error = one_answer(&response, 5);
    assert_eq!(error["error"]["code"], -32001, "{error}");
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    // The upstream is told the request is cancelled.
    assert!(
        eventually(Duration::from_secs(5), || fake
            .seen()
            .iter()
            .any(|seen| seen.request.body.contains("notifications/cancelled")
                && seen.request.body.contains("\"requestId\":5"))),
        "{}",
        fake.describe()
    );
    assert_eq!(seen_with(&fake, "stall-me"), 1, "{}", fake.describe());
    let stalled = fake
        .seen()
        .iter()
        .find(|seen| seen.request.body.contains("stall-me"))
        .map(|seen| seen.request.conn)
        .unwrap();
    assert_goes_on(&mcphop, &fake, &session, 6);
    // No later request rode the stalled connection.
    let later: Vec<usize> = fake
        .seen()
        .iter()
        .skip_while(|seen| !seen.request.body.contains("stall-me"))
        .skip(1)
        .map(|seen| seen.request.conn)
        .collect();
    assert!(!later.contains(&stalled), "{}", fake.describe());
    // No request waits on the stalled stream any more: mcphop abandons it
    // and closes its connection (within two `ANSWER_LINGER`s of 2 s after
    // it fell silent), rather than keep it forever.
    let closed = std::sync::Arc::clone(&fake.state.closed.lock().unwrap()[stalled]);
    assert!(
        eventually(Duration::from_secs(20), || closed.load(Ordering::SeqCst)),
        "the stalled upstream connection is still open\n{}",
        mcphop.log_text()
    );
    // So a shutdown has nothing upstream to wait for: it exits 0, well
    // before the 10 s shutdown grace (it used to wait for the stalled
    // exchange until the final exit).
    mcphop.signal(libc::SIGTERM);
    assert_eq!(
        mcphop.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        mcphop.log_text()
    );
    assert!(
        !mcphop.log_text().contains("unfinished"),
        "{}",
        mcphop.log_text()
    );
}

#[test]
fn a_client_gone_mid_stream_leaves_mcphop_serving() {
    const EVENTS: usize = 4000;
    const SIZE: usize = 1000;
    let fake = script("big", || Action::Stream {
        events: EVENTS,
        size: SIZE,
    });
    let mcphop = Mcphop::start_http(&["--log-level", "debug"], &fake.url());
    let session = raw_session(&mcphop);
    let mut stream = TcpStream::connect(("127.0.0.1", mcphop.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(&post_request(
            mcphop.port,
            &headers(&session),
            &echo_body(5, "big"),
        ))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !line.contains("notifications/message") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
    }
    drop(reader);
    // mcphop reads the upstream response to its end (kept for a client
    // that resumes the stream), however fast: every byte was taken.
    let total = fake.state.streamed.load(Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(15), || !fake
            .state
            .streaming
            .load(Ordering::SeqCst)),
        "the upstream response was left half-read: {total} bytes"
    );
    assert!(
        fake.state.streamed.load(Ordering::SeqCst) > EVENTS * SIZE,
        "{}",
        fake.state.streamed.load(Ordering::SeqCst)
    );
    assert!(
        eventually(Duration::from_secs(5), || mcphop
            .log_text()
            .contains("lost its client; kept")),
        "{}",
        mcphop.log_text()
    );
    assert_eq!(seen_with(&fake, "big"), 1, "{}", fake.describe());
    assert_goes_on(&mcphop, &fake, &session, 6);
}

/// An upstream that closes its connection right after an answer, without
/// `Connection: close`: the answer and the FIN reach mcphop in one edge
/// (mcphop is stopped while both arrive). That connection is not pooled, so
/// the next `tools/call`, sent at once, rides a fresh connection and is
/// answered (before the fix it was written to the closed socket and, as a
/// written `tools/call` is never retried, answered 502).
#[test]
fn an_upstream_that_closes_after_its_answer_is_not_reused() {
    let fake = script("then-close", || Action::ReplyThenClose {
        delay: Duration::from_millis(300),
    });
    let mcphop = Mcphop::start_http(&["--pool-idle-timeout", "30s"], &fake.url());
    let session = raw_session(&mcphop);
    let port = mcphop.port;
    let request = post_request(port, &headers(&session), &echo_body(5, "then-close"));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(&request).unwrap();
    assert!(eventually(Duration::from_secs(5), || seen_with(
        &fake,
        "then-close"
    ) == 1));
    let conn = fake.seen().last().unwrap().request.conn;
    mcphop.signal(libc::SIGSTOP);
    let closed = std::sync::Arc::clone(&fake.state.closed.lock().unwrap()[conn]);
    let both_sent = eventually(Duration::from_secs(5), || closed.load(Ordering::SeqCst));
    mcphop.signal(libc::SIGCONT);
    assert!(both_sent, "the fake did not answer and close");
    let response = common::read_response(&mut stream);
    assert_eq!(echo_text(&response, 5).as_deref(), Some("then-close"));
    let response = call(port, &session, 6, "next");
    assert_eq!(
        echo_text(&response, 6).as_deref(),
        Some("next"),
        "{response:?}\n{}",
        fake.describe()
    );
    let next = fake
        .seen()
        .into_iter()
        .find(|seen| seen.request.body.contains("\"next\""))
        .unwrap();
    assert_ne!(next.request.conn, conn, "{}", fake.describe());
    assert_eq!(seen_with(&fake, "\"next\""), 1, "{}", fake.describe());
}
