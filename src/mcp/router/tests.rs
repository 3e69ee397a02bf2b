//! The router's unit tests.

use super::*;

use serde_json::Value;

fn parse(text: &str) -> Message {
    Message::parse(text.as_bytes().to_vec()).unwrap()
}

/// The key of an id given as JSON text.
fn key(text: &str) -> IdKey {
    IdKey::parse(text).unwrap()
}

fn limits() -> RouterLimits {
    RouterLimits {
        max_held_bytes: 1024,
        replay_max_events: 100,
        replay_max_bytes: 1 << 20,
        request_timeout: Duration::from_secs(10),
        request_timeout_max: Duration::from_secs(60),
        initialize_timeout: Duration::from_secs(5),
    }
}

fn route(router: &mut Router, text: &str, now: Instant) -> Destination {
    let message = Message::parse(text.as_bytes().to_vec()).unwrap();
    router.route(message, now).0
}

fn request(id: &str, extra: &str) -> Message {
    parse(&format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call"{extra}}}"#
    ))
}

fn stream_of(destination: Destination) -> (StreamId, bool) {
    match destination {
        Destination::Stream {
            stream, then_close, ..
        } => (stream, then_close),
        other => panic!("expected a stream, got {other:?}"),
    }
}

#[test]
fn a_response_returns_to_its_post_stream_and_closes_it() {
    let now = Instant::now();
    let mut router = Router::new(limits());
    let first = router.open_post_stream();
    let second = router.open_post_stream();
    router
        .register_request(first, &request("1", ""), now)
        .unwrap();
    router
        .register_request(second, &request(r#""1""#, ""), now)
        .unwrap();
    // "1" and 1 are different ids: each answer finds its own stream.
    let answer = route(
        &mut router,
        r#"{"jsonrpc":"2.0","id":"1","result":{}}"#,
        now,
    );
    assert_eq!(stream_of(answer), (second, true));
    let answer = route(&mut router, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#, now);
    assert_eq!(stream_of(answer), (first, true));
    router.stream_ended(first);
    router.stream_ended(second);
    assert_eq!(router.pending_count(), 0);
    assert_eq!(router.open_streams(), 0);
}

#[test]
fn duplicate_ids_are_refused() {
    let now = Instant::now();
    let mut router = Router::new(limits());
    let stream = router.open_post_stream();
    router
        .register_request(stream, &request("5", ""), now)
        .unwrap();
    assert_eq!(
        router.register_request(stream, &request("5", ""), now),
        Err(RegisterError::DuplicateId)
    );
}

#[test]
fn progress_follows_its_token_and_other_messages_prefer_the_get_stream() {
    let now = Instant::now();
    let mut router = Router::new(limits());
    let post = router.open_post_stream();
    router
        .register_request(
            post,
            &request("1", r#","params":{"_meta":{"progressToken":"t"}}"#),
            now,
        )
        .unwrap();
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#;
    let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
    // No GET stream yet: unrelated messages ride the open POST stream.
    assert_eq!(stream_of(route(&mut router, log, now)).0, post);
    let (get, replaced) = router.open_get_stream();
    assert_eq!(replaced, None);
    assert_eq!(stream_of(route(&mut router, progress, now)).0, post);
    assert_eq!(stream_of(route(&mut router, log, now)).0, get);
    let sampling = r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#;
    assert_eq!(stream_of(route(&mut router, sampling, now)).0, get);
    // The child's cancel of a server request follows that request, even
    // when a GET stream opened meanwhile.
    let (_, replaced) = router.open_get_stream();
    assert_eq!(replaced, Some(get));
    let mut router = Router::new(limits());
    let post = router.open_post_stream();
    router
        .register_request(post, &request("1", ""), now)
        .unwrap();
    let elicit = r#"{"jsonrpc":"2.0","id":7,"method":"elicitation/create","params":{}}"#;
    assert_eq!(stream_of(route(&mut router, elicit, now)).0, post);
    let (get, _) = router.open_get_stream();
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#;
    assert_eq!(stream_of(route(&mut router, cancel, now)).0, post);
    // Once answered, a server request is forgotten.
    router.client_answered(&parse(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#));
    assert_eq!(stream_of(route(&mut router, cancel, now)).0, get);
}

#[test]
fn events_are_numbered_per_stream_and_ids_round_trip() {
    let now = Instant::now();
    let mut router = Router::new(limits());
    let (get, _) = router.open_get_stream();
    let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
    for expected in 1..=3 {
        match route(&mut router, log, now) {
            Destination::Stream { stream, seq, .. } => {
                assert_eq!((stream, seq), (get, expected));
                assert_eq!(
                    parse_event_id(&event_id(stream, seq)),
                    Some((get, expected))
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(parse_event_id("garbage"), None);
    assert_eq!(parse_event_id("1-x"), None);
}

#[test]
fn messages_without_a_stream_are_held_within_the_bound() {
    let now = Instant::now();
    let mut router = Router::new(RouterLimits {
        max_held_bytes: 100,
        ..limits()
    });
    let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"n":1}}"#;
    for _ in 0..5 {
        assert_eq!(route(&mut router, log, now), Destination::Held);
    }
    assert!(router.take_dropped_count() > 0);
    let (get, _) = router.open_get_stream();
    let released = router.release_held(get);
    assert!(!released.is_empty());
    assert!(released.iter().map(|(_, raw)| raw.len()).sum::<usize>() <= 100);
    assert_eq!(released[0].0, 1);
    assert!(router.release_held(get).is_empty());
}

#[test]
fn a_second_get_stream_replaces_the_first() {
    let mut router = Router::new(limits());
    let (first, _) = router.open_get_stream();
    let (second, replaced) = router.open_get_stream();
    assert_eq!(replaced, Some(first));
    assert!(!router.is_open(first));
    assert_eq!(router.get_stream(), Some(second));
}

#[test]
fn a_detached_post_stream_records_and_resumes_without_loss() {
    let now = Instant::now();
    let mut router = Router::new(limits());
    let post = router.open_post_stream();
    router
        .register_request(
            post,
            &request("1", r#","params":{"_meta":{"progressToken":"t"}}"#),
            now,
        )
        .unwrap();
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#;
    route(&mut router, progress, now);
    // The client saw event 1, then its connection dropped.
    assert_eq!(router.detach(post, now), Detached::Kept { since: now });
    route(&mut router, progress, now);
    let answer = route(&mut router, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#, now);
    assert_eq!(stream_of(answer), (post, true));
    let (stream, resumed) = router.resume(&event_id(post, 1)).unwrap();
    assert_eq!(stream, post);
    assert!(resumed.finished);
    let seqs: Vec<u64> = resumed.events.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, vec![2, 3]);
    router.stream_ended(post);
    assert!(!router.is_open(post));
    assert_eq!(
        router.resume(&event_id(post, 1)),
        Err(ResumeError::UnknownStream)
    );
}

#[test]
fn an_abandoned_stream_expires_and_gives_back_its_requests() {
    let now = Instant::now();
    let mut router = Router::new(limits());
    let post = router.open_post_stream();
    router
        .register_request(post, &request("9", ""), now)
        .unwrap();
    let Detached::Kept { since } = router.detach(post, now) else {
        panic!("a stream with a request in flight is kept")
    };
    let abandoned = router.expire_detached(post, since);
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].id, key("9"));
    assert_eq!(router.pending_count(), 0);
    assert!(!router.is_open(post));
    // A late answer is orphaned, not misrouted.
    let late = route(&mut router, r#"{"jsonrpc":"2.0","id":9,"result":{}}"#, now);
    assert_eq!(late, Destination::Orphaned);
}

#[test]
fn a_resumed_then_detached_stream_is_not_expired_by_an_old_timer() {
    let now = Instant::now();
    let later = now + Duration::from_secs(1);
    let mut router = Router::new(limits());
    let post = router.open_post_stream();
    router
        .register_request(post, &request("1", ""), now)
        .unwrap();
    let Detached::Kept { since: first } = router.detach(post, now) else {
        panic!()
    };
    router.resume(&event_id(post, 0)).unwrap();
    router.detach(post, later);
    assert!(router.expire_detached(post, first).is_empty());
    assert!(router.is_open(post));
}

#[test]
fn evicted_and_unknown_resume_points_are_refused() {
    let now = Instant::now();
    let mut router = Router::new(RouterLimits {
        replay_max_events: 2,
        ..limits()
    });
    let (get, _) = router.open_get_stream();
    let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
    for _ in 0..5 {
        route(&mut router, log, now);
    }
    assert_eq!(router.resume(&event_id(get, 1)), Err(ResumeError::Evicted));
    assert_eq!(router.resume(&event_id(get, 3)).unwrap().1.events.len(), 2);
    assert_eq!(
        router.resume(&event_id(99, 1)),
        Err(ResumeError::UnknownStream)
    );
    assert_eq!(router.resume("nonsense"), Err(ResumeError::Malformed));
    assert_eq!(
        router.resume(&event_id(get, 50)),
        Err(ResumeError::Malformed)
    );
}

#[test]
fn cancel_frees_the_request_but_never_initialize() {
    let now = Instant::now();
    let mut router = Router::new(limits());
    let init_stream = router.open_post_stream();
    let init = parse(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#);
    router.register_request(init_stream, &init, now).unwrap();
    assert_eq!(router.cancel(&IdKey::Number("0".into())), None);
    let post = router.open_post_stream();
    router
        .register_request(post, &request("4", ""), now)
        .unwrap();
    let (pending, then_close) = router.cancel(&IdKey::Number("4".into())).unwrap();
    assert_eq!(pending.id, key("4"));
    assert!(then_close);
    assert!(!router.is_open(post));
    assert_eq!(router.pending_count(), 1);
}

#[test]
fn timeouts_on_a_virtual_clock_with_progress_and_a_hard_cap() {
    let start = Instant::now();
    let mut router = Router::new(limits());
    let post = router.open_post_stream();
    router
        .register_request(
            post,
            &request("1", r#","params":{"_meta":{"progressToken":"t"}}"#),
            start,
        )
        .unwrap();
    let quiet = router.open_post_stream();
    router
        .register_request(quiet, &request("2", ""), start)
        .unwrap();
    assert_eq!(
        router.next_deadline(),
        Some(start + Duration::from_secs(10))
    );
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}"#;
    // Progress every 8 s keeps request 1 alive; request 2 times out at 10 s.
    let mut now = start;
    for _ in 0..7 {
        now += Duration::from_secs(8);
        route(&mut router, progress, now);
        let expired = router.take_expired(now);
        if now >= start + Duration::from_secs(10) && now < start + Duration::from_secs(17) {
            assert_eq!(expired.len(), 1);
            assert_eq!(expired[0].0.id, key("2"));
            assert_eq!(stream_of(expired[0].1), (quiet, true));
            let error: Value = serde_json::from_slice(&expired[0].2).unwrap();
            assert_eq!(error["error"]["code"], jsonrpc::REQUEST_TIMEOUT);
        } else {
            assert!(expired.is_empty(), "at {:?}", now - start);
        }
    }
    // At 56 s, progress no longer extends past the 60 s cap.
    assert_eq!(
        router.next_deadline(),
        Some(start + Duration::from_secs(60))
    );
    let expired = router.take_expired(start + Duration::from_secs(60));
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0.id, key("1"));
    assert_eq!(router.next_deadline(), None);
}
