//! mcphop's keep-alive pool in front of the Python SDK server
//! (`tests/peers/py_http_server.py`): 500 concurrent sessions over a capped
//! pool, counting the upstream's accepted connections through a relay; and
//! the upstream killed and restarted on the same port, with and without
//! stale pooled connections.
//!
//! Everything listens on, and talks to, 127.0.0.1 only. Every process started
//! here is killed by a guard when the test ends, pass or fail. A missing peer
//! fails the test with a clear message.

mod common;
#[path = "common/upstream/mod.rs"]
mod upstream;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{post_request, read_buffered_response, Mcphop, RawResponse};
use upstream::raw::{
    call_echo, echo_body, echo_text, figure, initialize_body, post, raw_session, session_header,
    shutdown_summary, INITIALIZED,
};
use upstream::relay::Relay;
use upstream::{Server, RAW_PROTOCOL};

// ===== 500 concurrent sessions over a capped pool =============================

/// One raw client: its own keep-alive connection, initialize, initialized,
/// tools/call echo (the answer checked), DELETE.
fn one_raw_session(port: u16, n: usize, start: &Barrier) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(40))))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    start.wait();
    let mut exchange = |request: Vec<u8>| -> Result<RawResponse, String> {
        writer
            .write_all(&request)
            .map_err(|e| format!("write: {e}"))?;
        // read_buffered_response panics on a broken response; keep it a
        // failure of this session rather than of the thread.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_buffered_response(&mut reader)
        }))
        .map_err(|_| "broken or missing response".to_string())
    };
    let init = exchange(post_request(port, "", &initialize_body(1)))?;
    if init.status != 200 {
        return Err(format!("initialize: {} {}", init.status, init.body));
    }
    let session = init
        .header("mcp-session-id")
        .ok_or("no Mcp-Session-Id")?
        .to_string();
    let headers = format!(
        "{}MCP-Protocol-Version: {RAW_PROTOCOL}\r\n",
        session_header(&session)
    );
    let initialized = exchange(post_request(port, &headers, INITIALIZED))?;
    if initialized.status != 202 {
        return Err(format!("initialized: {}", initialized.status));
    }
    let message = format!("hello {n}");
    let call = exchange(post_request(port, &headers, &echo_body(2, &message)))?;
    if echo_text(&call, 2).as_deref() != Some(message.as_str()) {
        return Err(format!("echo {n}: {} {}", call.status, call.body));
    }
    let delete = exchange(
        format!(
            "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: 0\r\n\r\n"
        )
        .into_bytes(),
    )?;
    if delete.status != 200 {
        return Err(format!("delete: {}", delete.status));
    }
    Ok(())
}

/// 500 raw clients at once through mcphop, whose pool is capped at 64
/// connections, to the Python SDK server behind a counting relay: every call
/// completes, and the upstream accepts no more connections than the cap
/// (raw clients open no GET streams; without the pool it would be 2000, one
/// per request). Idle connections are kept (`--pool-max-idle-per-host 64`),
/// so a lull does not close and reopen them.
#[test]
fn five_hundred_sessions_share_a_capped_pool() {
    const SESSIONS: usize = 500;
    const CAP: usize = 64;
    let server = Server::python();
    let relay = Relay::start(server.port);
    let mut mcphop = Mcphop::start_http(
        &[
            "--pool-max-per-host",
            "64",
            "--pool-max-idle-per-host",
            "64",
            "--pool-idle-timeout",
            "30s",
            "--pool-queue-timeout",
            "40s",
            // Health probes are connections of their own, outside the
            // pool: off, so the relay counts the pool's alone.
            "--health-interval",
            "0",
        ],
        &relay.url(),
    );
    let port = mcphop.port;
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let (tx, results) = mpsc::channel();
    for n in 0..SESSIONS {
        let barrier = Arc::clone(&barrier);
        let tx = tx.clone();
        thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = tx.send(one_raw_session(port, n, &barrier));
            })
            .expect("spawn a client thread");
    }
    drop(tx);
    let deadline = started + Duration::from_secs(90);
    let mut done = 0;
    let mut failures = Vec::new();
    while done < SESSIONS {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(outcome) => {
                done += 1;
                if let Err(why) = outcome {
                    failures.push(why);
                }
            }
            Err(_) => break,
        }
    }
    let elapsed = started.elapsed();
    let accepted = relay.accepted();
    eprintln!(
        "{SESSIONS} sessions: {done} finished, {} failed in {elapsed:.1?}; \
         the upstream accepted {accepted} connections (at most {} open at once, cap {CAP})",
        failures.len(),
        relay.max_open()
    );
    assert_eq!(
        done,
        SESSIONS,
        "sessions still running after {elapsed:?}\nmcphop log:\n{}",
        mcphop.log_text()
    );
    assert!(
        failures.is_empty(),
        "{} sessions failed, first: {:?}\nmcphop log:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        mcphop.log_text()
    );
    assert!(
        relay.max_open() <= CAP,
        "{} upstream connections open at once, over the cap {CAP}",
        relay.max_open()
    );
    assert!(
        accepted <= CAP,
        "the upstream accepted {accepted} connections, over the pool cap {CAP}"
    );
    // 500 sessions did not run on a handful of connections either: the pool
    // grew under load (at least a few), and every request was counted.
    assert!(accepted >= 2, "accepted {accepted}");
    let requests = relay.requests().len();
    assert!(
        requests >= 4 * SESSIONS,
        "the upstream saw {requests} requests for {SESSIONS} sessions"
    );
    let (code, summary) = shutdown_summary(&mut mcphop);
    eprintln!("{summary}");
    assert_eq!(code, Some(0), "{}", mcphop.log_text());
    assert_eq!(figure(&summary, "waiter_timeouts"), 0, "{summary}");
    assert!(figure(&summary, "reuses") > 0, "{summary}");
}

// ===== the upstream restarts on the same port ==================================

/// Kills the upstream and starts it again on the same port: while it is down
/// calls fail fast (no hang), the stale pooled connections are evicted, and
/// once it is back new sessions work at once; the old session, unknown to the
/// new process, gets 404.
#[test]
fn upstream_restart_on_the_same_port() {
    let mut server = Server::python();
    let upstream_port = server.port;
    let mut mcphop = Mcphop::start_http(
        &[
            "--pool-connect-timeout",
            "1s",
            "--pool-queue-timeout",
            "2s",
            "--pool-idle-timeout",
            "30s",
        ],
        &server.url(),
    );
    let port = mcphop.port;
    let old = raw_session(&mcphop);
    // Several calls at once, so the pool holds several idle connections.
    let calls: Vec<_> = (0..4)
        .map(|n| {
            let old = old.clone();
            thread::spawn(move || call_echo(port, &old, 10 + n, &format!("before {n}")))
        })
        .collect();
    for (n, call) in calls.into_iter().enumerate() {
        let response = call.join().expect("call thread");
        assert_eq!(
            echo_text(&response, 10 + n as u64).as_deref(),
            Some(format!("before {n}").as_str()),
            "{response:?}"
        );
    }

    server.kill();

    // Down: a call on the old session and a new initialize both fail fast.
    let started = Instant::now();
    let down_call = call_echo(port, &old, 20, "while down");
    let took = started.elapsed();
    assert!(
        matches!(down_call.status, 502..=504),
        "a call while the upstream is down: {down_call:?}\n{}",
        mcphop.log_text()
    );
    assert!(
        took < Duration::from_secs(5),
        "a call while down took {took:?}"
    );
    let started = Instant::now();
    let down_init = post(port, "", &initialize_body(1));
    let took = started.elapsed();
    assert!(
        matches!(down_init.status, 502..=504),
        "initialize while the upstream is down: {down_init:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "initialize while down took {took:?}"
    );

    // Back, on the same port.
    let deadline = Instant::now() + Duration::from_secs(20);
    let _restarted = loop {
        match Server::python_on(upstream_port) {
            Ok(server) => break server,
            Err(why) => {
                assert!(Instant::now() < deadline, "restart failed: {why}");
                thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let started = Instant::now();
    let fresh = raw_session(&mcphop);
    let call = call_echo(port, &fresh, 2, "after");
    assert_eq!(
        echo_text(&call, 2).as_deref(),
        Some("after"),
        "{call:?}\n{}",
        mcphop.log_text()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The new process never heard of the old session: 404, then 404.
    let stale = call_echo(port, &old, 21, "old session");
    assert_eq!(stale.status, 404, "{stale:?}\n{}", mcphop.log_text());
    let again = call_echo(port, &old, 22, "old session again");
    assert_eq!(again.status, 404, "{again:?}");

    let (code, summary) = shutdown_summary(&mut mcphop);
    assert_eq!(code, Some(0), "{}", mcphop.log_text());
    let evicted = figure(&summary, "peer_closed") + figure(&summary, "error");
    assert!(
        evicted >= 1,
        "no stale connection was evicted: {summary}\n{}",
        mcphop.log_text()
    );
}

/// Kills the upstream and restarts it at once, while mcphop's pool still
/// holds connections to the dead process: the next calls must not fail on
/// them, hang, or be retried into errors; they succeed.
#[test]
fn upstream_restart_with_stale_pooled_connections() {
    let mut server = Server::python();
    let upstream_port = server.port;
    let mut mcphop = Mcphop::start_http(&["--pool-idle-timeout", "30s"], &server.url());
    let port = mcphop.port;
    let old = raw_session(&mcphop);
    let calls: Vec<_> = (0..4)
        .map(|n| {
            let old = old.clone();
            thread::spawn(move || call_echo(port, &old, 10 + n, "warm"))
        })
        .collect();
    for call in calls {
        assert_eq!(call.join().expect("call").status, 200);
    }
    server.kill();
    let restarted = Server::python_on(upstream_port);
    let _restarted = restarted.unwrap_or_else(|why| panic!("restart failed: {why}"));

    for attempt in 0..3 {
        let started = Instant::now();
        let fresh = raw_session(&mcphop);
        let call = call_echo(port, &fresh, 2, "after");
        assert_eq!(
            echo_text(&call, 2).as_deref(),
            Some("after"),
            "attempt {attempt}: {call:?}\n{}",
            mcphop.log_text()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let stale = call_echo(port, &old, 21, "old session");
    assert_eq!(stale.status, 404, "{stale:?}\n{}", mcphop.log_text());

    let (code, summary) = shutdown_summary(&mut mcphop);
    assert_eq!(code, Some(0), "{}", mcphop.log_text());
    let evicted = figure(&summary, "peer_closed") + figure(&summary, "error");
    assert!(evicted >= 1, "no stale connection was evicted: {summary}");
}
