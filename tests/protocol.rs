//! Protocol fidelity on the front door, with raw HTTP against the real binary
//! in front of the bundled example server: event ids and resumption,
//! heartbeats, cancellation both ways, timeouts, protocol versions, batches
//! and GET stream replacement.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn example() -> Vec<String> {
    vec![example_server().display().to_string()]
}

fn session_header(session: &str) -> String {
    format!("Mcp-Session-Id: {session}\r\n")
}

fn tool_call(id: u64, tool: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"progressToken":"p{id}"}}}}}}"#
    )
}

fn open_call(port: u16, session: &str, id: u64, tool: &str, arguments: &str) -> SseStream {
    SseStream::open(
        port,
        &post_request(
            port,
            &session_header(session),
            &tool_call(id, tool, arguments),
        ),
    )
}

fn get_request(port: u16, extra: &str) -> Vec<u8> {
    format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn notify(port: u16, session: &str, body: &str) -> RawResponse {
    raw_exchange(port, &post_request(port, &session_header(session), body))
}

/// Opens a session at a given protocol version; returns its id.
fn open_session_at(port: u16, version: &str) -> String {
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{{}},"clientInfo":{{"name":"raw","version":"0"}}}}}}"#
    );
    let response = raw_exchange(port, &post_request(port, "", &init));
    assert_eq!(response.status, 200);
    let session = response.header("mcp-session-id").unwrap().to_string();
    assert_eq!(
        response.sse_messages().last().unwrap()["result"]["protocolVersion"],
        version
    );
    notify(
        port,
        &session,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    session
}

fn wait_for_log(proxy: &Mcphop, needle: &str, limit: Duration) -> bool {
    eventually(limit, || proxy.log_text().contains(needle))
}

#[test]
fn streams_open_with_a_priming_event_and_every_event_has_an_id() {
    let proxy = Mcphop::start(&["--sse-retry", "250ms"], &example());
    let session = open_session(proxy.port);
    let mut stream = open_call(
        proxy.port,
        &session,
        3,
        "progress",
        r#"{"steps":2,"delay_ms":10}"#,
    );
    assert_eq!(stream.header("cache-control"), Some("no-store"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    let priming = stream.next_item();
    let SseItem::Event { id, data, retry } = &priming else {
        panic!("expected a priming event, got {priming:?}")
    };
    assert!(data.is_empty());
    assert_eq!(*retry, Some(250));
    let stream_name = id
        .as_deref()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_string();
    let mut ids = vec![id.clone().unwrap()];
    let items = stream.rest();
    for item in &items[..items.len() - 1] {
        let id = item.id().expect("every event has an id").to_string();
        assert!(id.starts_with(&format!("{stream_name}-")), "{id}");
        assert!(!ids.contains(&id));
        ids.push(id);
    }
    assert_eq!(items.len(), 4, "two progress events, the result, the end");
    // Ids are unique across the session's streams.
    let mut other = open_call(proxy.port, &session, 4, "echo", r#"{"message":"x"}"#);
    let other_id = other.next_item().id().unwrap().to_string();
    assert!(!ids.contains(&other_id));
}

#[test]
fn a_dropped_post_stream_resumes_with_exactly_the_missed_events() {
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let mut stream = open_call(
        proxy.port,
        &session,
        7,
        "progress",
        r#"{"steps":6,"delay_ms":150}"#,
    );
    let _priming = stream.next_item();
    let first = stream.next_item();
    let second = stream.next_item();
    assert_eq!(first.json().unwrap()["params"]["progress"], 1);
    assert_eq!(second.json().unwrap()["params"]["progress"], 2);
    let last_seen = second.id().unwrap().to_string();
    drop(stream);
    // Miss a few events, then resume.
    std::thread::sleep(Duration::from_millis(400));
    let mut resumed = SseStream::open(
        proxy.port,
        &get_request(
            proxy.port,
            &format!("{}Last-Event-ID: {last_seen}\r\n", session_header(&session)),
        ),
    );
    assert_eq!(resumed.status, 200);
    let items = resumed.rest();
    let messages: Vec<Value> = items.iter().filter_map(SseItem::json).collect();
    let progress: Vec<i64> = messages
        .iter()
        .filter_map(|m| m["params"]["progress"].as_i64())
        .collect();
    assert_eq!(progress, vec![3, 4, 5, 6], "{items:?}");
    let result = messages.last().unwrap();
    assert_eq!(result["id"], 7);
    assert_eq!(result["result"]["content"][0]["text"], "done after 6 steps");
    assert_eq!(items.last(), Some(&SseItem::End));
    // The stream is done: resuming it again is refused cleanly.
    let again = raw_exchange(
        proxy.port,
        &get_request(
            proxy.port,
            &format!("{}Last-Event-ID: {last_seen}\r\n", session_header(&session)),
        ),
    );
    assert_eq!(again.status, 400);
}

#[test]
fn unknown_and_evicted_resume_points_get_400() {
    let proxy = Mcphop::start(&["--replay-events", "3"], &example());
    let session = open_session(proxy.port);
    for bad in ["999-1", "garbage", "1-999999"] {
        let response = raw_exchange(
            proxy.port,
            &get_request(
                proxy.port,
                &format!("{}Last-Event-ID: {bad}\r\n", session_header(&session)),
            ),
        );
        assert_eq!(response.status, 400, "{bad}");
        assert_eq!(response.json()["error"]["code"], -32600);
    }
    // A stream whose client left right after the priming event: 11 events
    // follow while it is away, and only 3 are kept.
    let mut stream = open_call(
        proxy.port,
        &session,
        8,
        "progress",
        r#"{"steps":10,"delay_ms":30}"#,
    );
    let priming = stream.next_item().id().unwrap().to_string();
    drop(stream);
    std::thread::sleep(Duration::from_millis(600));
    let evicted = raw_exchange(
        proxy.port,
        &get_request(
            proxy.port,
            &format!("{}Last-Event-ID: {priming}\r\n", session_header(&session)),
        ),
    );
    assert!(
        evicted.status == 400 && evicted.body.contains("no longer kept"),
        "{evicted:?}"
    );
}

#[test]
fn a_dropped_get_stream_keeps_what_it_missed_for_a_resume() {
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let mut get = SseStream::open(
        proxy.port,
        &get_request(proxy.port, &session_header(&session)),
    );
    let priming = get.next_item().id().unwrap().to_string();
    drop(get);
    std::thread::sleep(Duration::from_millis(200));
    // The sampling request belongs to no request's stream: it goes to the
    // GET stream, whose client is away.
    let mut call = open_call(proxy.port, &session, 41, "sample", r#"{"prompt":"later"}"#);
    let _ = call.next_item();
    std::thread::sleep(Duration::from_millis(200));
    let mut resumed = SseStream::open(
        proxy.port,
        &get_request(
            proxy.port,
            &format!("{}Last-Event-ID: {priming}\r\n", session_header(&session)),
        ),
    );
    assert_eq!(resumed.status, 200);
    let sampling = resumed.next_item().json().unwrap();
    assert_eq!(sampling["method"], "sampling/createMessage");
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"role":"assistant","content":{{"type":"text","text":"resumed"}},"model":"m","stopReason":"endTurn"}}}}"#,
        sampling["id"]
    );
    assert_eq!(notify(proxy.port, &session, &answer).status, 202);
    let result = call.rest().iter().rev().find_map(SseItem::json).unwrap();
    assert_eq!(result["result"]["content"][0]["text"], "sampled: resumed");
}

#[test]
fn heartbeats_arrive_on_an_idle_stream() {
    let proxy = Mcphop::start(&["--sse-keepalive", "200ms"], &example());
    let session = open_session(proxy.port);
    let mut stream = SseStream::open(
        proxy.port,
        &get_request(proxy.port, &session_header(&session)),
    );
    assert_eq!(stream.status, 200);
    let _priming = stream.next_item();
    let started = Instant::now();
    let mut heartbeats = 0;
    while heartbeats < 3 {
        match stream.next_item() {
            SseItem::Comment(text) => {
                assert_eq!(text, "keepalive");
                heartbeats += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
}

#[test]
fn a_cancel_reaches_the_child_and_ends_the_stream() {
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let mut stream = open_call(proxy.port, &session, 11, "wait", "{}");
    let _priming = stream.next_item();
    assert!(wait_for_log(
        &proxy,
        "waiting for request 11",
        Duration::from_secs(5)
    ));
    let accepted = notify(
        proxy.port,
        &session,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":11,"reason":"user hit stop"}}"#,
    );
    assert_eq!(accepted.status, 202);
    let started = Instant::now();
    assert_eq!(stream.next_item(), SseItem::End, "no answer after a cancel");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(wait_for_log(
        &proxy,
        "cancelled request 11: user hit stop",
        Duration::from_secs(5)
    ));
    // The session carries on.
    let echo = raw_exchange(
        proxy.port,
        &post_request(
            proxy.port,
            &session_header(&session),
            &tool_call(12, "echo", r#"{"message":"after"}"#),
        ),
    );
    assert_eq!(
        echo.sse_messages().last().unwrap()["result"]["content"][0]["text"],
        "after"
    );
}

#[test]
fn a_long_call_gets_its_head_and_priming_event_before_its_answer() {
    // A fresh stream's head is held for its first event only briefly
    // (HEAD_HOLD, 2 ms): a call that runs longer gets it meanwhile.
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let started = Instant::now();
    let mut stream = open_call(proxy.port, &session, 21, "wait", "{}");
    let priming = stream.next_item();
    assert!(
        matches!(&priming, SseItem::Event { data, .. } if data.is_empty()),
        "expected the priming event, got {priming:?}"
    );
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
}

#[test]
fn initialize_is_never_cancelled() {
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let accepted = notify(
        proxy.port,
        &session,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
    );
    assert_eq!(accepted.status, 202);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!proxy.log_text().contains("cancelled request 1"));
}

#[test]
fn a_client_disconnect_reaches_the_child_as_a_cancel() {
    let proxy = Mcphop::start(&["--resume-window", "300ms"], &example());
    let session = open_session(proxy.port);
    let mut stream = open_call(proxy.port, &session, 13, "wait", "{}");
    let _priming = stream.next_item();
    assert!(wait_for_log(
        &proxy,
        "waiting for request 13",
        Duration::from_secs(5)
    ));
    drop(stream);
    assert!(wait_for_log(
        &proxy,
        "cancelled request 13: the client disconnected",
        Duration::from_secs(5)
    ));
}

#[test]
fn a_request_timeout_answers_with_an_error_and_cancels_upstream() {
    let proxy = Mcphop::start(&["--request-timeout", "500ms"], &example());
    let session = open_session(proxy.port);
    let started = Instant::now();
    let mut stream = open_call(proxy.port, &session, 14, "wait", "{}");
    let items = stream.rest();
    let elapsed = started.elapsed();
    let error = items
        .iter()
        .rev()
        .find_map(SseItem::json)
        .expect("an answer");
    assert_eq!(error["id"], 14);
    assert_eq!(error["error"]["code"], -32001);
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(wait_for_log(
        &proxy,
        "cancelled request 14: request timed out",
        Duration::from_secs(5)
    ));
}

#[test]
fn progress_resets_the_request_clock_up_to_the_hard_maximum() {
    let proxy = Mcphop::start(
        &["--request-timeout", "400ms", "--request-timeout-max", "2s"],
        &example(),
    );
    let session = open_session(proxy.port);
    // 8 steps 200 ms apart: 1.4 s in all, never 400 ms without progress.
    let mut stream = open_call(
        proxy.port,
        &session,
        15,
        "progress",
        r#"{"steps":8,"delay_ms":200}"#,
    );
    let last = stream.rest().iter().rev().find_map(SseItem::json).unwrap();
    assert_eq!(last["result"]["content"][0]["text"], "done after 8 steps");

    // 20 steps 200 ms apart: progress all along, but over the 2 s cap.
    let started = Instant::now();
    let mut stream = open_call(
        proxy.port,
        &session,
        16,
        "progress",
        r#"{"steps":20,"delay_ms":200}"#,
    );
    let last = stream.rest().iter().rev().find_map(SseItem::json).unwrap();
    assert_eq!(last["error"]["code"], -32001, "{last}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
}

#[test]
fn a_child_that_never_answers_initialize_is_killed_after_the_spawn_timeout() {
    let proxy = Mcphop::start(
        &["--spawn-timeout", "500ms", "--child-grace", "100ms"],
        &["sleep".to_string(), "600".to_string()],
    );
    let started = Instant::now();
    let response = raw_exchange(proxy.port, &post_request(proxy.port, "", INITIALIZE));
    assert_eq!(response.status, 200);
    let session = response.header("mcp-session-id").unwrap().to_string();
    let answer = response.sse_messages().last().cloned().unwrap();
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["error"]["code"], -32001);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(eventually(Duration::from_secs(5), || children_of(
        proxy.pid()
    )
    .is_empty()));
    let after = notify(
        proxy.port,
        &session,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(after.status, 404);
    assert!(proxy.log_text().contains("did not answer initialize"));
}

#[test]
fn every_protocol_version_works_and_the_header_must_match_the_session() {
    let proxy = Mcphop::start(&[], &example());
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let session = open_session_at(proxy.port, version);
        let headers = format!(
            "{}MCP-Protocol-Version: {version}\r\n",
            session_header(&session)
        );
        let echo = raw_exchange(
            proxy.port,
            &post_request(
                proxy.port,
                &headers,
                &tool_call(2, "echo", &format!(r#"{{"message":"{version}"}}"#)),
            ),
        );
        assert_eq!(echo.status, 200, "{version}");
        assert_eq!(
            echo.sse_messages().last().unwrap()["result"]["content"][0]["text"],
            version
        );
    }
    let session = open_session_at(proxy.port, "2025-06-18");
    // An earlier revision than the negotiated one is understood; a later one is not.
    let earlier = format!(
        "{}MCP-Protocol-Version: 2025-03-26\r\n",
        session_header(&session)
    );
    let response = raw_exchange(
        proxy.port,
        &post_request(
            proxy.port,
            &earlier,
            &tool_call(4, "echo", r#"{"message":"x"}"#),
        ),
    );
    assert_eq!(response.status, 200);
    let mismatched = format!(
        "{}MCP-Protocol-Version: 2025-11-25\r\n",
        session_header(&session)
    );
    let response = raw_exchange(
        proxy.port,
        &post_request(
            proxy.port,
            &mismatched,
            &tool_call(3, "echo", r#"{"message":"x"}"#),
        ),
    );
    assert_eq!(response.status, 400);
    assert!(response.body.contains("negotiated"));
}

#[test]
fn a_batch_works_in_2025_03_26_and_only_there() {
    let proxy = Mcphop::start(&[], &example());
    let session = open_session_at(proxy.port, "2025-03-26");
    let batch = format!(
        "[{},{},{}]",
        tool_call(21, "echo", r#"{"message":"one"}"#),
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x","progress":1}}"#,
        tool_call(22, "echo", r#"{"message":"two"}"#)
    );
    let response = raw_exchange(
        proxy.port,
        &post_request(proxy.port, &session_header(&session), &batch),
    );
    assert_eq!(response.status, 200);
    let mut answers: Vec<(i64, String)> = response
        .sse_messages()
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    answers.sort();
    assert_eq!(answers, vec![(21, "one".into()), (22, "two".into())]);

    let notifications_only = r#"[{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x","progress":1}}]"#;
    let accepted = raw_exchange(
        proxy.port,
        &post_request(proxy.port, &session_header(&session), notifications_only),
    );
    assert_eq!(accepted.status, 202);

    let newer = open_session_at(proxy.port, "2025-06-18");
    let refused = raw_exchange(
        proxy.port,
        &post_request(proxy.port, &session_header(&newer), &batch),
    );
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["code"], -32600);
}

#[test]
fn a_second_initialize_on_a_live_session_is_400() {
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let response = raw_exchange(
        proxy.port,
        &post_request(proxy.port, &session_header(&session), INITIALIZE),
    );
    assert_eq!(response.status, 400);
    assert_eq!(children_of(proxy.pid()).len(), 1);
}

#[test]
fn a_second_get_stream_replaces_the_first_cleanly() {
    let proxy = Mcphop::start(&[], &example());
    let session = open_session(proxy.port);
    let mut first = SseStream::open(
        proxy.port,
        &get_request(proxy.port, &session_header(&session)),
    );
    let _ = first.next_item();
    let mut second = SseStream::open(
        proxy.port,
        &get_request(proxy.port, &session_header(&session)),
    );
    let _ = second.next_item();
    assert_eq!(first.next_item(), SseItem::End, "the older stream ends");
    // Messages tied to no request now reach the newer stream: the example
    // server's sampling request is one.
    let mut call = open_call(proxy.port, &session, 31, "sample", r#"{"prompt":"hi"}"#);
    let _ = call.next_item();
    let sampling = second.next_item().json().unwrap();
    assert_eq!(sampling["method"], "sampling/createMessage");
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"role":"assistant","content":{{"type":"text","text":"fine"}},"model":"m","stopReason":"endTurn"}}}}"#,
        sampling["id"]
    );
    assert_eq!(notify(proxy.port, &session, &answer).status, 202);
    let result = call.rest().iter().rev().find_map(SseItem::json).unwrap();
    assert_eq!(result["result"]["content"][0]["text"], "sampled: fine");
    assert_eq!(children_of(proxy.pid()).len(), 1);
}
