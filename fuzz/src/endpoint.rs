//! The `endpoint` target: the front-door rules.

use mcphop::http::request::{Decoded, Limits, Request, RequestDecoder};
use mcphop::jsonrpc::{self, Carried, IdKey, Kind, Message};
use mcphop::mcp::endpoint::{interpret, AccessPolicy, Intent, Reply};
use serde_json::Value;

use super::http_syntax::METHODS;
use super::support::Input;

const PORT: u16 = 8080;
const PATH: &str = "/mcp";

fn policy() -> AccessPolicy {
    AccessPolicy::new(
        PORT,
        &["proxy.example".to_string()],
        &["https://app.example".to_string()],
    )
}

fn allowed_host(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let names = ["localhost", "127.0.0.1", "[::1]"];
    host == "proxy.example"
        || names
            .iter()
            .any(|n| host == *n || host == format!("{n}:{PORT}"))
}

fn allowed_origin(origin: &str) -> bool {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let names = ["localhost", "127.0.0.1", "[::1]"];
    origin == "https://app.example"
        || ["http", "https"].iter().any(|scheme| {
            names.iter().any(|n| {
                origin == format!("{scheme}://{n}") || origin == format!("{scheme}://{n}:{PORT}")
            })
        })
}

fn check_reply(reply: &Reply) {
    assert!(
        matches!(reply.status, 400 | 403 | 404 | 405 | 406 | 415),
        "status {}",
        reply.status
    );
    if reply.status == 405 {
        assert!(reply.headers.iter().any(|(n, _)| *n == "Allow"));
    }
    if !reply.body.is_empty() {
        let body: Value = serde_json::from_slice(&reply.body).expect("a reply body is JSON");
        assert_eq!(jsonrpc::classify(&body), Ok(Kind::Response));
        let code = body["error"]["code"].as_i64();
        assert!(
            matches!(
                code,
                Some(jsonrpc::INVALID_REQUEST | jsonrpc::PARSE_ERROR | jsonrpc::UPSTREAM_GONE)
            ),
            "code {code:?}"
        );
        // Only an id that is one is echoed; anything else answers null.
        let id = &body["id"];
        assert!(
            id.is_null() || IdKey::of_id(id).is_some(),
            "a reply echoed the id {id}"
        );
    }
}

/// A message an intent carries agrees with `classify` on the full value of
/// its bytes (where serde_json builds one: nesting past 128 levels and
/// numbers beyond f64 in a payload travel without being understood).
fn check_carried(message: &Message) {
    if let Ok(value) = serde_json::from_slice::<Value>(message.bytes()) {
        assert_eq!(jsonrpc::classify(&value), Ok(message.kind()));
        assert_eq!(message.id_key(), value.get("id").and_then(IdKey::of_id));
    }
}

fn check_intent(request: &Request) {
    let policy = policy();
    let intent = interpret(&mut request.clone(), PATH, &policy);
    assert_eq!(
        interpret(&mut request.clone(), PATH, &policy),
        intent,
        "not deterministic"
    );
    if let Intent::Reply(reply) = &intent {
        check_reply(reply);
        return;
    }
    // Anything but a Reply passed the front door.
    let hosts: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n == "host")
        .map(|(_, v)| v.as_str())
        .collect();
    match hosts.as_slice() {
        [] => assert_eq!(request.minor_version, 0, "HTTP/1.1 without Host passed"),
        [host] => assert!(allowed_host(host), "Host {host:?} passed"),
        _ => panic!("two Host fields passed"),
    }
    if let Some(origin) = request.header("origin") {
        assert!(allowed_origin(origin), "Origin {origin:?} passed");
    }
    assert_eq!(request.path(), PATH);
    let session_header = request.header("mcp-session-id");
    // Two session fields with different values never pass: which session
    // a request goes to must not depend on which of them is read.
    assert!(
        request
            .headers
            .iter()
            .filter(|(n, _)| n == "mcp-session-id")
            .all(|(_, v)| Some(v.as_str()) == session_header),
        "two different Mcp-Session-Id fields passed"
    );
    match intent {
        Intent::Reply(_) => {}
        Intent::Initialize { message } => {
            assert_eq!(request.method, "POST");
            assert_eq!(message.method(), Some("initialize"));
            assert_eq!(message.kind(), Kind::Request);
            // The message owns the request's body, as received.
            assert_eq!(message.bytes(), request.body.as_slice());
            check_carried(&message);
            assert!(session_header.is_none());
        }
        Intent::Post { session, message } => {
            assert_eq!(request.method, "POST");
            assert!(!session.is_empty());
            assert_eq!(Some(session.as_str()), session_header);
            assert_eq!(message.bytes(), request.body.as_slice());
            check_carried(&message);
        }
        Intent::Batch { session, messages } => {
            assert_eq!(request.method, "POST");
            assert_eq!(Some(session.as_str()), session_header);
            assert!(!messages.is_empty());
            let Ok(Carried::Batch(elements)) = jsonrpc::carried(&request.body) else {
                panic!("a batch from a body that is no JSON array");
            };
            assert_eq!(messages.len(), elements.len());
            for (message, element) in messages.iter().zip(elements) {
                assert_eq!(message.bytes(), element);
                assert_ne!(message.method(), Some("initialize"));
                check_carried(message);
            }
        }
        Intent::OpenStream {
            session,
            last_event_id,
        } => {
            assert_eq!(request.method, "GET");
            assert_eq!(Some(session.as_str()), session_header);
            assert!(last_event_id.is_none_or(|id| !id.is_empty()));
        }
        Intent::Delete { session } => {
            assert_eq!(request.method, "DELETE");
            assert_eq!(Some(session.as_str()), session_header);
        }
        Intent::Stateless { refusal } => {
            assert_eq!(request.method, "POST");
            assert_eq!(refusal.status, 400);
            check_reply(&refusal);
        }
    }
}

const ENDPOINT_HEADERS: [(&str, &[&str]); 7] = [
    (
        "host",
        &[
            "127.0.0.1:8080",
            "localhost",
            "evil.example",
            "PROXY.example",
            "",
        ],
    ),
    (
        "origin",
        &[
            "http://localhost:8080",
            "https://evil.example",
            "https://app.example/",
            "null",
        ],
    ),
    (
        "accept",
        &[
            "application/json, text/event-stream",
            "text/event-stream",
            "*/*",
            "application/*;q=1, text/*",
        ],
    ),
    (
        "content-type",
        &[
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "",
        ],
    ),
    (
        "mcp-session-id",
        &["0123456789abcdef0123456789abcdef", "", "x"],
    ),
    (
        "mcp-protocol-version",
        &["2025-06-18", "2026-07-28", "1999-01-01", "2025-03-26"],
    ),
    ("last-event-id", &["3-0", " ", "x"]),
];

const BODIES: [&str; 6] = [
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    r#"[{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","method":"n"}]"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"server/discover"}"#,
    r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
];

/// A request built field by field, so the fuzzer reaches the rules past
/// the Host, Accept and Content-Type checks quickly.
fn structured_request(input: &mut Input<'_>) -> Request {
    let pick = usize::from(input.byte());
    let method = match METHODS.get(pick % 8) {
        Some(method) => (*method).to_string(),
        None => input.string(8),
    };
    let target = match input.byte() % 4 {
        0 => "/mcp".to_string(),
        1 => "http://127.0.0.1:8080/mcp?x=1".to_string(),
        2 => "/mcp#frag".to_string(),
        _ => input.string(16),
    };
    let minor_version = input.byte() & 1;
    let mut headers = Vec::new();
    let mask = input.byte();
    for (i, (name, values)) in ENDPOINT_HEADERS.iter().enumerate() {
        if i == 0 || (mask >> i) & 1 == 1 {
            let pick = usize::from(input.byte());
            let value = match values.get(pick % (values.len() + 1)) {
                Some(value) => (*value).to_string(),
                None => input.string(40),
            };
            headers.push((name.to_string(), value));
        }
    }
    if mask & 0x80 != 0 {
        headers.push(("host".to_string(), "localhost".to_string()));
    }
    let body = match BODIES.get(usize::from(input.byte() % 8)) {
        Some(body) => body.as_bytes().to_vec(),
        None => input.rest().to_vec(),
    };
    Request {
        method,
        target,
        minor_version,
        headers,
        body,
        keep_alive: true,
    }
}

/// Fuzz target `endpoint`: `interpret` on whole requests, decoded from
/// raw bytes or built from the pool of fields that matter.
pub fn endpoint(data: &[u8]) {
    let mut input = Input::new(data);
    if input.bool() {
        check_intent(&structured_request(&mut input));
        return;
    }
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buffer = input.rest().to_vec();
    while let Ok(Decoded::Request(request)) = decoder.decode(&mut buffer) {
        check_intent(&request);
    }
}
