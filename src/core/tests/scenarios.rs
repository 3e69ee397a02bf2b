//! Session behaviour scenarios, each on a virtual clock with a scripted
//! client and upstream. Each says in its name what it proves.

use std::time::Duration;

use serde_json::json;

use super::*;

const LATEST: &str = "2025-06-18";
const BATCH_ERA: &str = "2025-03-26";

#[test]
fn resume_after_a_dropped_stream_replays_exactly_the_missed_events() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    pair.client_posts(request_with_progress(7, "p7"));
    let stream = pair.last_forward_stream();
    pair.upstream_sends(progress("p7", 1));
    assert_eq!(pair.events(stream).len(), 1);
    let seen = pair.events(stream)[0].0.expect("a numbered event");

    pair.client_drops(stream);
    pair.upstream_sends(progress("p7", 2));
    pair.upstream_sends(progress("p7", 3));
    pair.upstream_sends(answer(7));
    assert_eq!(
        pair.events(stream).len(),
        1,
        "nothing written while detached"
    );

    pair.client_resumes(stream, seen);
    let replayed: Vec<_> = pair.events(stream)[1..].to_vec();
    let steps: Vec<_> = replayed
        .iter()
        .map(|(_, message)| message.pointer("/params/progress").cloned())
        .collect();
    assert_eq!(steps, vec![Some(json!(2)), Some(json!(3)), None]);
    assert_eq!(replayed[2].1["id"], json!(7), "the answer comes last");
    let seqs: Vec<_> = replayed.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, vec![Some(seen + 1), Some(seen + 2), Some(seen + 3)]);
    assert!(
        pair.streams[&stream].ended,
        "a finished stream ends after its replay"
    );
    assert_eq!(pair.streams[&stream].starts, 2);
}

#[test]
fn a_resume_after_the_window_is_refused_and_the_request_cancelled_upstream() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    pair.client_posts(request(8, "tools/call"));
    let stream = pair.last_forward_stream();
    pair.client_drops(stream);
    pair.advance(RESUME_WINDOW + Duration::from_millis(1));
    let last = pair
        .sent_upstream()
        .last()
        .copied()
        .cloned()
        .expect("a cancel");
    assert_eq!(method_of(&last), Some("notifications/cancelled"));
    assert_eq!(last.pointer("/params/requestId"), Some(&json!(8)));
    pair.client_resumes(stream, 0);
    assert_eq!(pair.replies.last().map(|reply| reply.status), Some(400));
}

#[test]
fn a_client_cancel_ends_the_stream_travels_upstream_and_orphans_the_late_answer() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    pair.client_posts(request(3, "tools/call"));
    let stream = pair.last_forward_stream();
    pair.client_posts(cancel(3));
    assert!(
        pair.streams[&stream].ended,
        "mcphop ends the cancelled request's stream"
    );
    let last = pair
        .sent_upstream()
        .last()
        .copied()
        .cloned()
        .expect("the cancel");
    assert_eq!(
        last,
        cancel(3),
        "the client's cancel travels upstream as sent"
    );
    assert!(pair
        .upstream
        .last()
        .is_some_and(|forward| forward.client_waits));
    pair.upstream_sends(answer(3));
    assert!(
        pair.events(stream).is_empty(),
        "the late answer reaches nobody"
    );
    assert_eq!(pair.core.pending_count(), 0);
}

#[test]
fn a_server_cancel_of_its_own_request_reaches_the_client_on_that_requests_stream() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({"sampling": {}}));
    pair.core.client_open_get();
    pair.run();
    let get = *pair.started.last().expect("the GET stream");
    pair.upstream_sends(
        json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage",
                               "params": {}}),
    );
    pair.upstream_sends(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                               "params": {"requestId": "s1"}}),
    );
    let methods: Vec<_> = pair
        .events(get)
        .iter()
        .map(|(_, message)| method_of(message).map(str::to_string))
        .collect();
    assert_eq!(
        methods,
        vec![
            Some("sampling/createMessage".to_string()),
            Some("notifications/cancelled".to_string())
        ]
    );
}

#[test]
fn a_cancel_of_initialize_is_never_forwarded() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    let before = pair.upstream.len();
    pair.client_posts(cancel(0));
    assert_eq!(pair.upstream.len(), before);
    assert_eq!(pair.replies.last().map(|reply| reply.status), Some(202));
}

#[test]
fn progress_resets_the_request_timeout_but_not_past_the_hard_cap() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    pair.client_posts(request_with_progress(4, "p4"));
    let stream = pair.last_forward_stream();
    // Progress every 8 s keeps a 10 s timeout from firing...
    for step in 1..=3 {
        pair.advance(Duration::from_secs(8));
        assert!(pair
            .events(stream)
            .iter()
            .all(|(_, m)| error_code(m).is_none()));
        pair.upstream_sends(progress("p4", step));
    }
    // ...until the 25 s cap: at 24 s the progress moved the deadline to 25 s.
    pair.advance(Duration::from_millis(999));
    assert!(!pair.streams[&stream].ended, "alive just before the cap");
    pair.advance(Duration::from_millis(2));
    let (_, last) = pair.events(stream).last().cloned().expect("an error");
    assert_eq!(error_code(&last), Some(jsonrpc::REQUEST_TIMEOUT));
    assert!(pair.streams[&stream].ended);
    let cancel = pair
        .sent_upstream()
        .last()
        .copied()
        .cloned()
        .expect("a cancel");
    assert_eq!(method_of(&cancel), Some("notifications/cancelled"));
    assert!(
        pair.ended.is_none(),
        "a timed-out request does not end the session"
    );
}

#[test]
fn an_unanswered_initialize_times_out_and_ends_the_session() {
    let mut pair = Pair::new(UpstreamModel::Pipe);
    let now = pair.now;
    pair.core
        .client_initialize(message(&request(0, "initialize")), now);
    pair.run();
    let stream = pair.last_forward_stream();
    assert!(
        pair.streams[&stream].session_header,
        "the stream names the session"
    );
    pair.advance(INITIALIZE_TIMEOUT - Duration::from_millis(1));
    assert!(pair.ended.is_none());
    pair.advance(Duration::from_millis(2));
    let (_, error) = pair.events(stream).last().cloned().expect("an error");
    assert_eq!(error_code(&error), Some(jsonrpc::REQUEST_TIMEOUT));
    assert!(pair
        .ended
        .as_deref()
        .is_some_and(|why| why.contains("--spawn-timeout")));
    assert_eq!(
        pair.sent_upstream().len(),
        1,
        "initialize is never cancelled"
    );
    assert_eq!(
        pair.core.poll_timeout(),
        None,
        "an ended session wants no timer"
    );
}

#[test]
fn a_2025_03_26_batch_sends_its_notifications_alone_and_answers_on_one_stream() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, BATCH_ERA, json!({}));
    let batch = vec![
        request(1, "tools/list"),
        json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
        request(2, "resources/list"),
    ];
    let messages = batch.into_iter().map(|m| message(&m)).collect();
    let now = pair.now;
    pair.core.client_batch(messages, now);
    pair.run();
    let forwards = &pair.upstream[pair.upstream.len() - 2..];
    assert_eq!(forwards[0].messages.len(), 1, "the notification goes alone");
    assert!(!forwards[0].client_waits);
    assert_eq!(forwards[1].messages.len(), 2, "both requests on one stream");
    let stream = forwards[1].stream.expect("a stream");
    pair.upstream_sends(answer(2));
    assert!(!pair.streams[&stream].ended, "one answer still to come");
    pair.upstream_sends(answer(1));
    let ids: Vec<_> = pair
        .events(stream)
        .iter()
        .map(|(_, m)| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(2), json!(1)]);
    assert!(pair.streams[&stream].ended);
}

#[test]
fn a_batch_outside_2025_03_26_is_refused_whole() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    let before = pair.upstream.len();
    let now = pair.now;
    pair.core
        .client_batch(vec![message(&request(1, "tools/list"))], now);
    pair.run();
    assert_eq!(pair.replies.last().map(|reply| reply.status), Some(400));
    assert_eq!(pair.upstream.len(), before);
}

#[test]
fn upstream_death_answers_every_pending_request_and_ends_every_stream() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    pair.client_posts(request(1, "tools/call"));
    let first = pair.last_forward_stream();
    pair.client_posts(request(2, "tools/call"));
    let second = pair.last_forward_stream();
    pair.core.end("the child exited with status 1", false);
    pair.run();
    for (stream, id) in [(first, 1), (second, 2)] {
        let (seq, error) = pair.events(stream).last().cloned().expect("an error");
        assert_eq!(seq, None, "session-end errors carry no event id");
        assert_eq!(error["id"], json!(id));
        assert_eq!(error_code(&error), Some(jsonrpc::UPSTREAM_GONE));
        assert!(pair.streams[&stream].ended);
    }
    assert!(pair
        .ended
        .as_deref()
        .is_some_and(|why| why.contains("exited")));
    assert!(!pair.core.is_live());
}

#[test]
fn an_upstream_404_refuses_the_post_and_ends_the_session_for_the_others() {
    let mut pair = Pair::initialized(UpstreamModel::Http, LATEST, json!({}));
    pair.client_posts(request(1, "tools/call"));
    let streaming = pair.last_forward_stream();
    pair.upstream_head(streaming);
    pair.client_posts(request(2, "tools/call"));
    let refused = pair.last_forward_stream();
    // What the HTTP upstream adapter does with a 404 head.
    pair.core.stream_refused(refused, &[key(2)]);
    pair.core
        .end("the upstream no longer knows the session (404)", false);
    pair.run();
    assert!(
        !pair.streams.contains_key(&refused),
        "the refused POST never streamed"
    );
    let (_, error) = pair.events(streaming).last().cloned().expect("an error");
    assert_eq!(error["id"], json!(1));
    assert!(pair.streams[&streaming].ended);
    assert!(pair.ended.as_deref().is_some_and(|why| why.contains("404")));
}

#[test]
fn events_recorded_before_a_post_streams_head_are_written_when_it_starts() {
    let mut pair = Pair::initialized(UpstreamModel::Http, LATEST, json!({"elicitation": {}}));
    assert_eq!(
        pair.upstream_gets, 1,
        "a client taking server requests opens the upstream GET"
    );
    pair.client_posts(request(5, "tools/call"));
    let stream = pair.last_forward_stream();
    assert!(!pair.streams.contains_key(&stream), "no head yet");
    // The server asks the client something while the POST's head is not in.
    pair.upstream_sends(
        json!({"jsonrpc": "2.0", "id": "e1", "method": "elicitation/create",
                               "params": {}}),
    );
    pair.upstream_head(stream);
    let events = pair.events(stream);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, Some(1));
    assert_eq!(method_of(&events[0].1), Some("elicitation/create"));
    assert!(pair.core.is_attached(stream));
}

#[test]
fn messages_with_no_stream_are_held_until_the_client_opens_its_get_stream() {
    let mut pair = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    assert_eq!(
        pair.upstream_gets, 0,
        "no upstream GET before the client's own"
    );
    pair.upstream_sends(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
    pair.core.client_open_get();
    pair.run();
    let get = *pair.started.last().expect("the GET stream");
    assert_eq!(
        pair.events(get).len(),
        1,
        "the held notification is released"
    );
    assert_eq!(
        pair.upstream_gets, 1,
        "the client's GET opens the upstream's"
    );
}

#[test]
fn a_lost_client_answer_fails_the_session_with_every_request_answered() {
    let mut pair = Pair::initialized(UpstreamModel::Http, LATEST, json!({"sampling": {}}));
    pair.client_posts(request(9, "tools/call"));
    let stream = pair.last_forward_stream();
    pair.upstream_head(stream);
    pair.upstream_sends(
        json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage",
                               "params": {}}),
    );
    pair.client_posts(json!({"jsonrpc": "2.0", "id": "s1", "result": {}}));
    let forward = pair.upstream.last().cloned().expect("the answer");
    assert!(forward.client_waits && forward.whole_body && forward.stream.is_none());
    // What the HTTP upstream adapter does when that POST is not accepted.
    pair.core
        .end("a message for the upstream was lost: 500", false);
    pair.run();
    let (_, error) = pair.events(stream).last().cloned().expect("an error");
    assert_eq!(error["id"], json!(9));
    assert!(pair.streams[&stream].ended);
}

#[test]
fn an_idle_session_ends_but_a_busy_one_does_not() {
    let mut idle = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    idle.advance(IDLE_TIMEOUT + Duration::from_secs(1));
    assert_eq!(idle.ended.as_deref(), Some("idle timeout"));

    let mut busy = Pair::initialized(UpstreamModel::Pipe, LATEST, json!({}));
    busy.core.client_open_get();
    busy.run();
    busy.advance(IDLE_TIMEOUT * 3);
    assert!(busy.ended.is_none(), "an open stream keeps a session");
}

#[test]
fn hidden_tools_are_left_out_of_tools_list_and_refused_by_tools_call() {
    let filter = ToolFilter {
        allow: Vec::new(),
        deny: vec!["secret-*".into()],
    };
    let pair = Pair::hiding(UpstreamModel::Pipe, filter);
    let mut pair = Pair::initialized_with(pair, LATEST, json!({}));
    pair.client_posts(request(3, "tools/list"));
    let stream = pair.last_forward_stream();
    pair.upstream_sends(json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [
        {"name": "echo"}, {"name": "secret-key"}, {"name": "secret-door"}
    ]}}));
    let listed = &pair.events(stream)[0].1;
    let names: Vec<_> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|tool| tool["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("echo")]);

    let sent_before = pair.sent_upstream().len();
    pair.client_posts(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "secret-key", "arguments": {}}}));
    assert_eq!(
        pair.sent_upstream().len(),
        sent_before,
        "never sent upstream"
    );
    let refused = pair.replies.last().expect("a reply");
    let body: Value = serde_json::from_slice(&refused.body).expect("JSON");
    assert_eq!(body["id"], json!(4));
    assert_eq!(error_code(&body), Some(jsonrpc::INVALID_PARAMS));
    assert!(!pair.core.router.is_pending(&key(4)));

    pair.client_posts(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "echo", "arguments": {}}}));
    assert_eq!(
        pair.sent_upstream().len(),
        sent_before + 1,
        "a visible tool goes"
    );
}
